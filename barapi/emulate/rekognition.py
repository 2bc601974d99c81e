"""The AWS Rekognition emulator: ``DetectModerationLabels`` over AWS's JSON protocol on
127.0.0.1, with SigV4 signatures verified, answering from a local box.

Wire (as `barapi.adapters.rekognition` documents, with its sources): ``POST /`` with
``X-Amz-Target: RekognitionService.DetectModerationLabels``, a JSON body
``{"Image": {"Bytes": base64}, "MinConfidence": …, "ProjectVersion": …}``; answers
``application/x-amz-json-1.1``. Errors carry ``{"__type", "Message"}`` as the service's own do
(``{"__type":"InvalidS3ObjectException","Code":…,"Logref":…,"Message":…}``, HTTP 400, in
https://docs.aws.amazon.com/rekognition/latest/dg/error-handling.html, read 2026-12-06) and
``{"__type", "message"}`` for the front end's signature refusals; botocore reads both.
ThrottlingException and InternalServerError come with HTTP 500 (that page's 5xx group, as
remembered: its table was not readable here), the other refusals with 400. The service is not
known to bill failed calls (https://repost.aws/questions/QUC3Mnx3QoQ32eHoGTitjAsw): only answered
images count as billed here.

Concepts → labels (`CONCEPT_LABELS`): each flagged concept of the box answers a level-1
category with its score and one level-2 child (ParentName the category) with `CHILD_SHARE` of
it: explicit and nsfw → Explicit / Explicit Nudity; suggestive → Non-Explicit Nudity of
Intimate parts and Kissing / Non-Explicit Nudity; drug → Drugs & Tobacco / Products; gore →
Violence / Graphic Violence. "safe" and "sfw" answer no label: the service has none for safe
content (an ordinary image gets an empty list). Labels under the request's MinConfidence
(default 50) are left out, as the service does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import calendar
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from barapi.adapters.base import Adapter
from barapi.emulate.common import (
    DROP,
    Answer,
    Counters,
    Faults,
    LoopbackHTTPServer,
    TokenBucket,
    box_version,
    concept_scores,
)
from barapi.errors import ConfigError
from barapi.wire import decode_png

TARGET = "RekognitionService.DetectModerationLabels"
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
DEFAULT_MIN_CONFIDENCE = 50.0
"""What the service uses when a request names no MinConfidence (API_ModerationLabel)."""
MAX_CLOCK_SKEW = 15 * 60
"""Seconds a request's X-Amz-Date may be off from the server's clock: SigV4 signatures expire
after 15 minutes (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html)."""
CHILD_SHARE = 0.8
"""A level-2 label's confidence as a share of its category's (an assumption of this emulator:
the service's own relation between the levels is not documented)."""
CONCEPT_LABELS: dict[str, tuple[str, str] | None] = {
    "explicit": ("Explicit", "Explicit Nudity"),
    "nsfw": ("Explicit", "Explicit Nudity"),
    "suggestive": ("Non-Explicit Nudity of Intimate parts and Kissing", "Non-Explicit Nudity"),
    "drug": ("Drugs & Tobacco", "Products"),
    "gore": ("Violence", "Graphic Violence"),
    "safe": None,
    "sfw": None,
}
"""Each box concept's (level-1, level-2) labels; None: no label (see the module's text)."""
AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
                           r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)")


def error(status: int, code: str, message: str, *, front_end: bool = False) -> Answer:
    """An error as the service (``Code``, ``Message``) or its front end (``message``) sends it."""
    body: dict[str, str] = ({"__type": code, "message": message} if front_end
                            else {"__type": code, "Code": code, "Logref": str(uuid.uuid4()),
                                  "Message": message})
    return status, body, {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4())}


class Refused(Exception):
    """A request the service refuses (not billed); `answer` is what it answers."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[1])
        self.answer = answer


def verify_sigv4(headers: Any, path: str, body: bytes, secrets: Mapping[str, str],
                 token: str | None = None, now: float | None = None) -> Answer | None:
    """None when the request carries a valid SigV4 signature of one of `secrets` {access key
    id: secret key} (and `token`, the session token, when one is expected); else the error AWS
    answers. The signature is recomputed with botocore's own `SigV4Auth` over the headers the
    request says it signed, its X-Amz-Date, path and body."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    found = AUTHORIZATION.fullmatch((headers.get("Authorization") or "").strip())
    if found is None:
        return error(400, "MissingAuthenticationTokenException", "Missing Authentication Token",
                     front_end=True)
    key_id, _, scope = found["credential"].partition("/")
    if key_id not in secrets or headers.get("X-Amz-Security-Token") != token:
        return error(400, "UnrecognizedClientException",
                     "The security token included in the request is invalid.", front_end=True)
    date, region, service, terminator = [*scope.split("/"), "", "", "", ""][:4]
    stamp = headers.get("X-Amz-Date") or ""
    signed = found["signed"].split(";")
    if service != "rekognition" or terminator != "aws4_request" or not stamp.startswith(date) \
            or "host" not in signed or "x-amz-date" not in signed:
        return error(400, "InvalidSignatureException", "Credential should be scoped to correct "
                     "service: 'rekognition'.", front_end=True)
    try:
        sent = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return error(400, "InvalidSignatureException", f"Date must be in ISO-8601 'basic format'. "
                     f"Got '{stamp}'.", front_end=True)
    if abs((time.time() if now is None else now) - sent) > MAX_CLOCK_SKEW:
        return error(400, "InvalidSignatureException", f"Signature expired: {stamp} is now earlier "
                     f"than the allowed time (15 min.)", front_end=True)
    request = AWSRequest(method="POST", url=f"http://{headers.get('Host', '')}{path}", data=body,
                         headers={name: headers.get(name, "") for name in signed})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id, secrets[key_id]), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)),
                                request)
    if not hmac.compare_digest(expected, found["signature"]):
        return error(400, "InvalidSignatureException", "The request signature we calculated does "
                     "not match the signature you provided. Check your AWS Secret Access Key and "
                     "signing method. Consult the service documentation for details.",
                     front_end=True)
    return None


def moderation_labels(scores: Sequence[float], concepts: Sequence[str],
                      min_confidence: float) -> list[dict[str, Any]]:
    """The ModerationLabels of one image's concept `scores` (in [0, 1]): its level-1 and
    level-2 labels (`CONCEPT_LABELS`), Confidence in percent, those under `min_confidence`
    left out, the most confident first."""
    labels: list[dict[str, Any]] = []
    for concept, score in zip(concepts, scores, strict=True):
        names = CONCEPT_LABELS[concept]
        if names is None:
            continue
        top, child = names
        for name, parent, level, share in ((top, "", 1, 1.0), (child, top, 2, CHILD_SHARE)):
            confidence = float(np.float32(100.0 * score * share))
            if confidence >= min_confidence:
                labels.append({"Confidence": confidence, "Name": name, "ParentName": parent,
                               "TaxonomyLevel": level})
    return sorted(labels, key=lambda label: -label["Confidence"])


class RekognitionEmulator:
    """DetectModerationLabels on http://127.0.0.1:PORT, for boto3 with ``endpoint_url``.

    `model`: a box whose labels are `concepts` (a view of `barapi.adapters.boxes`: 5 moderation
    concepts or 2 nsfw ones), or an adapter of many classes folded i mod K (`fold`); `concepts`
    default to the model's labels. `secrets`: {access key id: secret access key} it accepts;
    `token`: the session token it expects (None: none). Answers name `version` (default
    `box_version` of the box) as ModerationModelVersion; `publish` changes both. Faults:
    max_rps → `throttle_code` (ThrottlingException, HTTP 500, or
    ProvisionedThroughputExceededException, HTTP 400), unavailable_every → 500
    InternalServerError, quota_images → LimitExceededException, drop_every, delay,
    bad_answer_every (a Confidence of 150). `adapters`: custom adapter ARNs it serves (from the
    same box); another → ResourceNotFoundException. Runs in a background thread; use as a
    context manager."""

    def __init__(self, model: Adapter, secrets: Mapping[str, str], *,
                 concepts: Sequence[str] | None = None, faults: Faults | None = None,
                 token: str | None = None, adapters: Sequence[str] = (), port: int = 0) -> None:
        self.concepts = list(concepts or model.labels)
        unknown = [c for c in self.concepts if c not in CONCEPT_LABELS]
        if unknown:
            raise ConfigError(f"Rekognition emulator: concepts {unknown} have no moderation label; "
                              f"use a box view ({', '.join(CONCEPT_LABELS)})")
        self.model, self.version = model, box_version(model)
        self.secrets, self.token, self.adapters = dict(secrets), token, set(adapters)
        self.faults = faults or Faults()
        self.throttle_code = "ThrottlingException"
        self.counters = Counters()
        self._lock = threading.Lock()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._http = LoopbackHTTPServer(self.answer, port)
        self.port = self._http.port

    def publish(self, model: Adapter, version: str | None = None) -> None:
        """Serve `model` as another moderation model version (`version`, default its
        `box_version`): what AWS does when it moves an account to a new model."""
        self.model, self.version = model, version or box_version(model)

    def _throttled(self) -> Answer:
        if self.throttle_code == "ProvisionedThroughputExceededException":
            return error(400, self.throttle_code, "The number of requests exceeded your "
                         "throughput limit. If you want to increase this limit, contact Amazon "
                         "Rekognition.")
        return error(500, "ThrottlingException", "Slow down; rate exceeded.")

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        """Status, JSON body and headers for one request (`headers` case-insensitive)."""
        c, f = self.counters, self.faults
        if path != "/":
            return error(404, "UnknownOperationException", f"no route {path}", front_end=True)
        with self._lock:
            c.requests += 1
            number = c.requests  # this request's: others may arrive while the model runs
            refused = verify_sigv4(headers, path, body, self.secrets, self.token)
            if refused is not None:
                c.rejected_auth += 1
                return refused
            if headers.get("X-Amz-Target") != TARGET:
                return error(400, "UnknownOperationException", f"operation "
                             f"{headers.get('X-Amz-Target')!r} is not emulated", front_end=True)
            if f.unavailable_every and number % f.unavailable_every == 0:
                c.unavailable += 1
                return error(500, "InternalServerError", "Internal server error")
            now = time.monotonic()
            if f.max_rps and not self._bucket.admit(now):
                c.throttled += 1
                c.throttled_times.append(now)
                return self._throttled()
            c.accepted_times.append(now)
            if f.quota_images is not None and c.billed_images + 1 > f.quota_images:
                return error(400, "LimitExceededException", "An Amazon Rekognition service limit "
                             "was exceeded.")
            c.billed_images += 1  # counted now, so that concurrent requests respect the quota
        try:
            image, min_confidence, project_version = self._parse(body)
        except Refused as exc:
            with self._lock:
                c.billed_images -= 1  # a refused request is not billed
            return exc.answer
        if f.delay:
            time.sleep(f.delay)
        model, version = self.model, self.version
        k = len(self.concepts)
        scores = [float(v) for v in asyncio.run(concept_scores(model, image[None], k))[0]]
        with self._lock:
            answered = c.billed_images
            c.billed_by_version[version] = c.billed_by_version.get(version, 0) + 1
            if f.drop_every and number % f.drop_every == 0:
                c.dropped += 1
                return DROP, None, {}
        labels = moderation_labels(scores, self.concepts, min_confidence)
        if f.bad_answer_every and answered % f.bad_answer_every == 0:
            labels.insert(0, {"Confidence": 150.0, "Name": "Explicit", "ParentName": "",
                              "TaxonomyLevel": 1})
        payload: dict[str, Any] = {"ModerationLabels": labels, "ModerationModelVersion": version,
                                   "ContentTypes": []}
        if project_version:
            payload["ProjectVersion"] = project_version
        return 200, payload, {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4())}

    def _parse(self, body: bytes) -> tuple[np.ndarray, float, str | None]:
        """(image, MinConfidence, ProjectVersion) of a request body; `Refused` with the error
        the service answers otherwise."""
        invalid = Refused(error(400, "InvalidParameterException", "Request has invalid parameters"))
        try:
            request = json.loads(body)
            data = base64.b64decode(request["Image"]["Bytes"], validate=True)
            min_confidence = float(request.get("MinConfidence", DEFAULT_MIN_CONFIDENCE))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid from None
        if not 0 <= min_confidence <= 100:
            raise invalid
        if len(data) > MAX_IMAGE_BYTES:
            raise Refused(error(400, "ImageTooLargeException", "Image size is too large."))
        project_version = request.get("ProjectVersion")
        if project_version is not None and project_version not in self.adapters:
            raise Refused(error(400, "ResourceNotFoundException", "The resource specified in the "
                                "request cannot be found."))
        try:
            image = decode_png(data)
        except Exception:
            raise Refused(error(400, "InvalidImageFormatException", "Request has invalid image "
                                "format")) from None
        return image, min_confidence, project_version

    def __enter__(self) -> RekognitionEmulator:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()
