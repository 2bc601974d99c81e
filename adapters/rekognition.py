"""AWS Rekognition content moderation (``DetectModerationLabels``) through the official SDK.

Wire facts (each read on 2026-12-06):

- JSON protocol 1.1: ``POST /`` with ``X-Amz-Target: RekognitionService.DetectModerationLabels``
  and ``Content-Type: application/x-amz-json-1.1``, SigV4-signed for service "rekognition"
  (botocore 1.44's service model, ``botocore/data/rekognition/2016-06-27/service-2.json``).
  boto3 signs and serialises; barapi passes the PNG bytes in ``Image.Bytes``, one image per
  call (the operation takes one image).
- ``Image.Bytes`` holds at most 5 MB (5,242,880 bytes: the service model's blob maximum; "the
  maximum image size as raw bytes passed in as parameter to an API is 5 MB",
  https://docs.aws.amazon.com/rekognition/latest/dg/limits.html); larger images are refused
  here before sending. The same page: images of at least 80 px a side (on the card).
- ``MinConfidence`` is a float in [0, 100]; labels under it are left out of the answer, and
  without it the service answers only labels of confidence ≥ 50
  (https://docs.aws.amazon.com/rekognition/latest/APIReference/API_ModerationLabel.html).
  barapi asks for `MIN_CONFIDENCE` and reads a label left out as that threshold, not as 0
  (`AnswerForm`).
- Each ``ModerationLabel`` has ``Name``, ``ParentName`` ("" at the top), ``TaxonomyLevel``
  (1–3) and ``Confidence`` (a float percentage); the answer names the
  ``ModerationModelVersion`` that made it and, when a custom adapter answered, its
  ``ProjectVersion`` ("If during inference the adapter was EXPIRED, then the parameter will
  not be returned": the base model answered instead). Source: the service model above.
- Errors (body ``{"__type": ..., "message"/"Message": ...}``, read by botocore): the
  operation's documented ones are AccessDenied, ImageTooLarge, InternalServerError,
  InvalidImageFormat, InvalidParameter, InvalidS3Object, ProvisionedThroughputExceeded,
  Throttling, HumanLoopQuotaExceeded, ResourceNotFound, ResourceNotReady (service model);
  SigV4 failures come as UnrecognizedClientException / InvalidSignatureException /
  ExpiredTokenException (AWS common errors). Mapping: see `classify`.

botocore's own retries are off (barapi retries in one layer, QueryService), its calls block,
so each runs in a worker thread on one thread-safe client per adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import threading
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import (
    Adapter,
    AnswerForm,
    is_loopback,
    needs,
    wait_until_reachable,
)
from barapi.errors import (
    BarapiError,
    ConfigError,
    FatalProviderError,
    InvalidAnswer,
    TransientError,
)
from barapi.wire import encode_png

SERVICE = "rekognition"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""5 MB: the most ``Image.Bytes`` may hold (limits page and service model, see above)."""
MIN_CONFIDENCE = 1.0
"""The ``MinConfidence`` barapi asks for, in percent. The API allows 0–100; 0 would make an
omitted label indistinguishable from a zero score (and an ordinary image, which the service
answers with no label at all, an all-zero row that barapi rejects), so barapi asks for the
lowest whole percentage above it: every label of confidence ≥ 1% is answered, and a label
left out reads as 0.01."""
CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection (botocore's ``connect_timeout``); its default is 60."""

TAXONOMY: dict[str, dict[str, tuple[str, ...]]] = {
    "Explicit": {
        "Explicit Nudity": ("Exposed Male Genitalia", "Exposed Female Genitalia",
                            "Exposed Buttocks or Anus", "Exposed Female Nipple"),
        "Explicit Sexual Activity": (),
        "Sex Toys": (),
    },
    "Non-Explicit Nudity of Intimate parts and Kissing": {
        "Non-Explicit Nudity": ("Bare Back", "Exposed Male Nipple", "Partially Exposed Buttocks",
                                "Partially Exposed Female Breast", "Implied Nudity"),
        "Obstructed Intimate Parts": ("Obstructed Female Nipple", "Obstructed Male Genitalia"),
        "Kissing on the Lips": (),
    },
    "Swimwear or Underwear": {"Female Swimwear or Underwear": (), "Male Swimwear or Underwear": ()},
    "Violence": {
        "Weapons": (),
        "Graphic Violence": ("Weapon Violence", "Physical Violence", "Self-Harm", "Blood & Gore",
                             "Explosions and Blasts"),
    },
    "Visually Disturbing": {"Death and Emaciation": ("Emaciated Bodies", "Corpses"),
                            "Crashes": ("Air Crash",)},
    "Drugs & Tobacco": {"Products": ("Pills",), "Drugs & Tobacco Paraphernalia & Use": ("Smoking",)},
    "Alcohol": {"Alcohol Use": ("Drinking",), "Alcoholic Beverages": ()},
    "Rude Gestures": {"Middle Finger": ()},
    "Gambling": {"Gambling": ()},
    "Hate Symbols": {"Nazi Party": (), "White Supremacy": (), "Extremist": ()},
}
"""Content moderation model 7.0's three-level taxonomy: {L1: {L2: (L3, ...)}}, in the
documented order. Source: "Label Categories" of
https://docs.aws.amazon.com/rekognition/latest/dg/moderation-api.html (read 2026-12-06 in
excerpts, English and translated pages) and its v6.1 → v7 label mapping
(https://docs.aws.amazon.com/rekognition/latest/dg/moderation-response-transform.html). Not
checked letter by letter against the downloadable label list: names are matched without
regard to case, and an answer naming a label missing here is said once (a warning)."""
TOP_LEVEL = tuple(TAXONOMY)
"""The default columns: the ten level-1 categories."""
Key = tuple[str, str]
"""A label as the answers name it: (ParentName, Name), lower-cased ("" parent at level 1)."""


def taxonomy_levels() -> dict[Key, tuple[str, str, int]]:
    """{(parent, name) lower-cased: (ParentName, Name, TaxonomyLevel)} for every label."""
    out: dict[Key, tuple[str, str, int]] = {}
    for l1, children in TAXONOMY.items():
        out[("", l1.lower())] = ("", l1, 1)
        for l2, grandchildren in children.items():
            out[(l1.lower(), l2.lower())] = (l1, l2, 2)
            for l3 in grandchildren:
                out[(l2.lower(), l3.lower())] = (l2, l3, 3)
    return out


LEVELS = taxonomy_levels()
NAMES: dict[str, set[int]] = {n: {lv for (_, m), (_, _, lv) in LEVELS.items() if m == n}
                              for _, n in LEVELS}
"""{name lower-cased: the levels it has} ("gambling" is at levels 1 and 2)."""
ARN = re.compile(r"^arn:[a-z\d-]+:rekognition:[a-z\d-]+:\d{12}:project/[a-zA-Z0-9_.\-]{1,255}"
                 r"/version/[a-zA-Z0-9_.\-]{1,255}/[0-9]+$")
"""A custom moderation adapter's ProjectVersionArn (the service model's pattern)."""


def resolve_label(spec: str) -> Key:
    """The taxonomy key of a ``--labels`` entry: a name at any level (the highest level when a
    name is used twice, as "Gambling" is), or "Parent/Name". ConfigError when unknown."""
    parent, sep, name = spec.rpartition("/")
    wanted = name.strip().lower()
    found = sorted((LEVELS[k][2], k) for k in LEVELS
                   if k[1] == wanted and (not sep or k[0] == parent.strip().lower()))
    if not found:
        raise ConfigError(
            f"--labels: {spec!r} is not a label of Rekognition's moderation taxonomy (model "
            f"7.0); name any level's label, e.g. the top level: {', '.join(TOP_LEVEL)} (see "
            f"https://docs.aws.amazon.com/rekognition/latest/dg/moderation-api.html)")
    return found[0][1]


def classify(code: str, status: int, message: str) -> BarapiError:
    """barapi's error for the service's error `code` (HTTP `status`, provider's `message`).

    Throttling and ProvisionedThroughputExceeded: retried, not billed (the service refused
    it). InternalServerError, ServiceUnavailable, any other 5xx: retried, billed (the body
    had left; the outcome is unknown). Credentials and signature: fatal, not billed. A
    refused image or parameter, a missing or expired adapter, a limit: fatal, not billed."""
    text = f"AWS Rekognition {code or status}: {message or 'no message'}"
    if code in ("ThrottlingException", "ProvisionedThroughputExceededException",
                "TooManyRequestsException", "RequestLimitExceeded"):
        return TransientError(text, billed=False, throttled=True)
    if code in ("InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
                "InternalFailure") or status >= 500:
        return TransientError(text)
    if code in ("UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
                "ExpiredTokenException", "ExpiredToken", "InvalidClientTokenId",
                "IncompleteSignature", "MissingAuthenticationToken", "SignatureDoesNotMatch",
                "RequestExpired"):
        return FatalProviderError(f"{text} (check the AWS credentials: AWS_ACCESS_KEY_ID / "
                                  f"AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE, and "
                                  f"the rekognition:DetectModerationLabels permission)")
    return FatalProviderError(text)


class RekognitionAdapter(Adapter):
    """``DetectModerationLabels`` as a black box whose columns are moderation labels.

    `labels`: label names of any level (or "Parent/Name"), default `TOP_LEVEL`; answers are
    matched to them by (ParentName, Name). `region`: where the calls go (and are signed for).
    `endpoint`: another endpoint URL (http only to a loopback address: the emulator).
    `project_version`: a custom moderation adapter's ARN, or "" for the base model.
    `min_confidence`: the ``MinConfidence`` asked, in percent (> 0, ≤ 100).
    Answers are confidences / 100; a label the answer leaves out reads as the threshold
    (`form`). The ``ModerationModelVersion`` is pinned (`found_version`)."""

    max_batch = 1
    card = "aws-rekognition"
    answers = "scores"

    def __init__(self, *, region: str, labels: list[str] | None = None, endpoint: str | None = None,
                 project_version: str = "", min_confidence: float = MIN_CONFIDENCE,
                 timeout: float = 30.0, session: Any = None) -> None:
        if not (0 < min_confidence <= 100) or not math.isfinite(min_confidence):
            raise ConfigError(f"MinConfidence {min_confidence!r}: expected a percentage above 0 "
                              f"and at most 100")
        if project_version and not ARN.match(project_version):
            raise ConfigError(f"--model {project_version!r}: expected a custom moderation adapter's "
                              f"ARN (arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/"
                              f"NAME/NUMBER), or no --model for the base model")
        specs = labels or list(TOP_LEVEL)
        keys = [resolve_label(s) for s in specs]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise ConfigError(f"--labels: {specs[i]!r} names the same label as "
                                  f"{specs[keys.index(key)]!r}; name each label once")
        self._keys = keys
        self._index = {k: i for i, k in enumerate(keys)}
        self.labels = [LEVELS[k][1] for k in keys]
        self.endpoint = check_endpoint(endpoint) if endpoint else None
        self.region, self.project_version = region, project_version
        self.model = project_version or "DetectModerationLabels"  # what messages call it
        self.min_confidence, self.timeout = float(min_confidence), timeout
        # step None: Confidence is answered unrounded (a float percentage, e.g. 97.56189727783203)
        self.form = AnswerForm(threshold=self.min_confidence / 100)
        self.identity = (f"rekognition/{self.endpoint or 'aws'}/{region}/"
                         f"{project_version or 'base'}/min{self.min_confidence:g}")
        self._session = session
        self._client: Any = None
        self._lock = threading.Lock()
        self._invalid: dict[bytes, str] = {}  # image digest → why its last answer was invalid
        self._unknown: set[Key] = set()  # labels answered that the taxonomy lacks (said once)

    @property
    def who(self) -> str:
        return f"AWS Rekognition ({self.region})"

    def keep_version_hint(self, pinned: str) -> str:
        return ("AWS moves an account's moderation model on its own schedule (6.1 → 7.0 in 2024: "
                "https://docs.aws.amazon.com/rekognition/latest/dg/moderation-response-transform"
                ".html) and the old version cannot be asked for. ")

    # ------------------------------------------------------------------ the client

    def client(self) -> Any:
        """The boto3 client (built once; thread-safe to use): botocore's retries off, timeouts
        set. ConfigError (nothing sent) when boto3 or credentials are missing."""
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise needs("--provider rekognition", "boto3", "aws") from exc
        from botocore.exceptions import BotoCoreError

        try:
            session = self._session or boto3.session.Session()
            if session.get_credentials() is None:
                raise ConfigError("AWS Rekognition: no AWS credentials found; set "
                                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                                  "AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE")
            config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                            connect_timeout=CONNECT_TIMEOUT, read_timeout=self.timeout,
                            user_agent_extra="barapi")
            return session.client(SERVICE, region_name=self.region, endpoint_url=self.endpoint,
                                  config=config)
        except BotoCoreError as exc:  # a profile that cannot be read, an SSO login that expired
            raise ConfigError(f"AWS Rekognition: the AWS credentials or configuration cannot be "
                              f"used ({exc})") from None

    async def check(self, timeout: float = 10.0) -> None:
        """Free preflight: credentials found (no request), then a TCP connection to the
        endpoint (none sent). ConfigError when either fails."""
        client = await asyncio.to_thread(self.client)
        url = urlsplit(self.endpoint or client.meta.endpoint_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        await wait_until_reachable(url.hostname or "", port, "AWS Rekognition", timeout)

    # ------------------------------------------------------------------ one call

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        rows = [self._read(await self._call(encode_png(image)), image) for image in images]
        return np.stack(rows).astype(np.float32)

    async def _call(self, body: bytes) -> dict[str, Any]:
        """One DetectModerationLabels call; the parsed answer, or barapi's error."""
        if len(body) > MAX_IMAGE_BYTES:
            raise ConfigError(f"image of {len(body):,} bytes exceeds Rekognition's 5 MB limit; "
                              f"use a smaller canvas (not sent)")
        params: dict[str, Any] = {"Image": {"Bytes": body}, "MinConfidence": self.min_confidence}
        if self.project_version:
            params["ProjectVersion"] = self.project_version
        client = await asyncio.to_thread(self.client)
        try:
            answer: dict[str, Any] = await asyncio.to_thread(client.detect_moderation_labels,
                                                             **params)
        except Exception as exc:
            raise transport_error(exc) from None
        return answer

    def _read(self, answer: Mapping[str, Any], image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(K,) row of one answer: each column's confidence / 100, the threshold where the
        answer leaves a column out. An answer that cannot be parsed is billed and asked again
        (TransientError); one whose labels break the taxonomy (ParentName, TaxonomyLevel) or
        whose Confidence is not a number in 0–100 is made invalid (NaN: not cached, asked once
        more), and raises InvalidAnswer the second time for the same image (billed)."""
        labels = answer.get("ModerationLabels")
        version = answer.get("ModerationModelVersion")
        if not isinstance(labels, list) or not all(isinstance(x, dict) for x in labels) \
                or not isinstance(version, str):
            raise TransientError("AWS Rekognition answer could not be parsed (ModerationLabels "
                                 "or ModerationModelVersion missing); billed, asked again")
        self.found_version(version, lambda message: FatalProviderError(message, billed=True))
        if self.project_version and answer.get("ProjectVersion") != self.project_version:
            raise FatalProviderError(
                f"{self.who}: the custom adapter {self.project_version} did not answer (expired "
                f"or stopped: the base model answered instead, billed); start it again or run "
                f"without --model", billed=True)
        digest = hashlib.sha256(image.tobytes()).digest()
        scores, answered, problem = self._scores(labels)
        if problem is None:
            self._invalid.pop(digest, None)
            return self.form.fill(scores, len(self.labels), answered)
        if digest in self._invalid:
            raise InvalidAnswer(f"{self.who} answered {problem} twice for the same image: billed, "
                                f"not cached")
        self._invalid[digest] = problem
        while len(self._invalid) > 4096:
            del self._invalid[next(iter(self._invalid))]
        return np.full(len(self.labels), np.nan, dtype=np.float32)

    def _scores(self, labels: list[dict[str, Any]]) -> tuple[dict[int, float], list[float], str | None]:
        """({column: score}, every score answered, None), or (…, why the answer is invalid)."""
        scores: dict[int, float] = {}
        answered: list[float] = []
        for label in labels:
            name, parent = label.get("Name"), label.get("ParentName", "")
            level, confidence = label.get("TaxonomyLevel"), label.get("Confidence")
            if not isinstance(name, str) or not isinstance(parent, str):
                return scores, answered, f"a label without a Name or ParentName ({label!r})"
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
                    or not 0 <= confidence <= 100:
                return scores, answered, f"label {name!r} with Confidence {confidence!r} (not in 0–100)"
            problem = chain_problem(name, parent, level)
            if problem is not None:
                return scores, answered, problem
            key = (parent.lower(), name.lower())
            answered.append(confidence / 100)
            column = self._index.get(key)
            if column is not None:
                scores[column] = confidence / 100
            elif key not in LEVELS and key not in self._unknown:
                self._unknown.add(key)
                warnings.warn(f"{self.who} answered label {name!r} (level {level}, parent "
                              f"{parent!r}), which barapi's moderation taxonomy lacks; it is "
                              f"ignored", UserWarning, stacklevel=2)
        return scores, answered, None


def chain_problem(name: str, parent: str, level: object) -> str | None:
    """Why a label's place in the hierarchy is inconsistent, or None: TaxonomyLevel not 1–3;
    a ParentName at level 1 or none below it; a label of the taxonomy under another parent or
    at another level; a label under a known parent not one level below it."""
    where = f"label {name!r} at TaxonomyLevel {level!r} under ParentName {parent!r}"
    if isinstance(level, bool) or level not in (1, 2, 3):
        return f"{where} (TaxonomyLevel must be 1, 2 or 3)"
    if (level == 1) != (parent == ""):
        return f"{where} (a level-1 label has ParentName \"\", the others a parent)"
    known = LEVELS.get((parent.lower(), name.lower()))
    if known is not None:
        return None if known[2] == level else f"{where} (the taxonomy has it at level {known[2]})"
    if name.lower() in NAMES and parent.lower() not in {p for p, n in LEVELS if n == name.lower()}:
        return f"{where} (the taxonomy has it under another parent)"
    parent_levels = NAMES.get(parent.lower(), set())
    if parent_levels and not any(level == p + 1 for p in parent_levels):
        return f"{where} (its parent is at level {min(parent_levels)})"
    return None


def transport_error(exc: Exception) -> BarapiError:
    """barapi's error for what boto3 raised: ClientError by its code (`classify`); no
    connection made → not billed; timed out or lost after sending → billed; bad
    parameters or credentials → ConfigError (nothing sent)."""
    from botocore import exceptions as b
    from botocore.parsers import ResponseParserError

    if isinstance(exc, b.ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return classify(str(error.get("Code") or ""), status, str(error.get("Message") or ""))
    if isinstance(exc, (b.EndpointConnectionError, b.ConnectTimeoutError)) \
            and not isinstance(exc, b.SSLError):  # no connection: the request never left
        return TransientError(f"AWS Rekognition unreachable (not sent): {exc}", billed=False)
    if isinstance(exc, (b.ReadTimeoutError, b.ConnectionClosedError, b.HTTPClientError,
                        b.ConnectionError)):
        return TransientError(f"AWS Rekognition timed out or lost the connection after sending "
                              f"({type(exc).__name__}: {exc})")
    if isinstance(exc, ResponseParserError):
        return TransientError(f"AWS Rekognition answer could not be parsed ({exc}); billed, "
                              f"asked again")
    if isinstance(exc, b.ParamValidationError):
        return ConfigError(f"AWS Rekognition request refused before sending: {exc}")
    if isinstance(exc, b.BotoCoreError):  # credentials that expired or cannot be loaded
        return ConfigError(f"AWS Rekognition: the AWS credentials or configuration cannot be used "
                           f"({exc}); nothing was sent")
    if isinstance(exc, BarapiError):
        return exc
    return TransientError(f"AWS Rekognition call failed ({type(exc).__name__}: {exc})")


def check_endpoint(endpoint: str) -> str:
    """`endpoint` as an URL boto3 takes: http(s)://HOST[:PORT]; http only to a loopback host
    (a signed request is not secret, but what it carries is: the images). ConfigError else."""
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"--endpoint {endpoint!r}: not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"--endpoint {endpoint!r}: expected https://HOST (or http://127.0.0.1:PORT "
                          f"for `barapi emulate rekognition`)")
    if url.scheme == "http" and not is_loopback(url.hostname):
        raise ConfigError(f"--endpoint {endpoint!r} would send the images and signed requests in "
                          f"plaintext: http:// (--insecure) only to a loopback address (127.0.0.1, "
                          f"::1, localhost)")
    return endpoint.rstrip("/")


def default_region(session: Any = None) -> str:
    """The region of the standard AWS chain: AWS_DEFAULT_REGION or the profile's (what boto3
    reads), else AWS_REGION (what the other AWS SDKs read). ConfigError when none is set."""
    try:
        import boto3
    except ImportError as exc:
        raise needs("--provider rekognition", "boto3", "aws") from exc
    from botocore.exceptions import BotoCoreError

    try:
        region = (session or boto3.session.Session()).region_name or os.environ.get("AWS_REGION")
    except BotoCoreError as exc:
        raise ConfigError(f"AWS Rekognition: the AWS configuration cannot be read ({exc})") from None
    if not region:
        raise ConfigError("AWS Rekognition needs a region: set AWS_REGION or AWS_DEFAULT_REGION "
                          "(e.g. us-east-1), or region in your AWS profile")
    return str(region)


def create(model: str = "", endpoint: str | None = None, insecure: bool = False,
           labels: str | None = None, key_file: str | None = None, **_: Any) -> RekognitionAdapter:
    """Entry point for ``--provider rekognition``: --labels (moderation label names, default
    the ten top-level categories), --model (a custom adapter's ARN; none: the base model),
    --endpoint (the emulator: http://127.0.0.1:PORT with --insecure). Credentials and region
    come from the standard AWS chain, not --key-file."""
    if key_file:
        raise ConfigError("--key-file: AWS Rekognition takes its credentials from the standard AWS "
                          "chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                          "~/.aws/credentials), not from a key file")
    url = None
    if endpoint:
        url = endpoint if "://" in endpoint else f"{'http' if insecure else 'https'}://{endpoint}"
    names = [t.strip() for t in (labels or "").split(",") if t.strip()]
    return RekognitionAdapter(region=default_region(), labels=names or None, endpoint=url,
                              project_version=model.strip())
