"""Google Cloud Vision ``images:annotate`` (v1): SafeSearch and label detection over plain REST.

Wire (Cloud Vision REST reference, https://cloud.google.com/vision/docs/reference/rest/v1/images/
annotate, read 2026-12-06): ``POST {endpoint}/v1/images:annotate`` with
``{"requests": [{"image": {"content": BASE64}, "features": [{"type", "maxResults", "model"}]}]}``,
answered ``{"responses": [...]}`` in request order. The API key travels in the
``X-Goog-Api-Key`` header (from GOOGLE_VISION_API_KEY or ``--key-file``), never in the URL; http://
only to a loopback address (`barapi emulate google`). No Google SDK: its clients need
google-auth and gRPC for what one httpx POST does.

- ``--model safe-search``: ``SAFE_SEARCH_DETECTION``; five columns (`SAFE_SEARCH`), each answered
  as a likelihood name (`LIKELIHOODS`), read as the centre of its fifth of [0, 1] (`LEVELS`):
  the adapter's `form` says so. UNKNOWN, or a name the API does not document, makes the answer
  invalid (billed, not cached, asked once more). The labels are fixed (free); ``--labels`` may
  pick some of them.
- ``--model labels``: ``LABEL_DETECTION`` with ``maxResults`` = `MAX_RESULTS`; the columns are
  ``--labels`` (required: the API has no list of its labels), matched case-insensitively to an
  answer's ``description`` until the first answer that carries one binds its column to the
  label's Knowledge Graph ``mid``; answers are then matched by ``mid`` (pinned in the run folder,
  like Azure's tag ids). A label left out of an answer is not a zero: `AnswerForm.fill` gives it
  the lowest score answered when the answer is full, else the service's score floor
  (`SCORE_FLOOR`).

Errors (https://cloud.google.com/apis/design/errors, read 2026-12-06): a whole request fails with
``{"error": {"code", "message", "status"}}``: 400 INVALID_ARGUMENT (a bad or expired key says
"API key not valid. Please pass a valid API key." with reason API_KEY_INVALID; seen in
dmotz/thing-translator#27), 401 UNAUTHENTICATED and 403 PERMISSION_DENIED (API not enabled,
billing disabled) are refusals: fatal, not billed. 429 RESOURCE_EXHAUSTED is throttling:
retried, not billed — unless its text names a per-day or per-month limit, which no wait within a
run lifts: fatal, not billed. 5xx after the body left: retried, billed (money invariant 3). An
image can fail inside a 200 batch (``responses[i].error``, a google.rpc.Status): the others
are kept (`PartialAnswer`). Whether Google bills a feature on an image that errored is not
documented (the pricing page bills "each feature applied to an image"): barapi counts it as
billed, the safe side.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter, AnswerForm, wait_until_reachable
from barapi.adapters.rest import LoopClient, endpoint_url, refusal, send
from barapi.errors import ConfigError, FatalProviderError, PartialAnswer, TransientError
from barapi.keys import Secret, read_key
from barapi.wire import encode_png

DEFAULT_ENDPOINT = "https://vision.googleapis.com"
PATH = "/v1/images:annotate"
KEY_ENV = "GOOGLE_VISION_API_KEY"
MAX_IMAGES_PER_REQUEST = 16
"""Images per ``images:annotate`` request (Cloud Vision quotas and limits, "Images per request:
16", https://cloud.google.com/vision/quotas, read 2026-12-06; the same on the Product Search
limits page)."""
MAX_REQUEST_BYTES = 10_000_000
"""Largest JSON request body sent: "JSON request object size: 10 MB" (Vision API Product
Search limits, https://cloud.google.com/vision/product-search/quotas, read 2026-12-06). The
current table of https://cloud.google.com/vision/quotas could not be read here; older versions of
that page said 8 MB per request. Base64 makes an image about 4/3 its size. A larger request is
refused before sending (ConfigError, nothing spent)."""
MAX_IMAGE_BYTES = 20_000_000
"""Largest image file: "Image file size: 20 MB" (Product Search limits page above, and the Vision
drag-and-drop demo's "Maximum file size is 20 MB", read 2026-12-06)."""
MODEL = "builtin/stable"
"""The feature's model, asked explicitly (Feature.model: "builtin/stable", the default, or
"builtin/latest"). The answers carry no model version, so a run cannot pin one: Google may update
builtin/stable without notice, and barapi cannot tell."""
SAFE_SEARCH = ("adult", "spoof", "medical", "violence", "racy")
"""SafeSearchAnnotation's fields (REST reference, read 2026-12-06): the columns of safe-search."""
LIKELIHOODS = ("VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")
"""The Likelihood enum's values above UNKNOWN, ascending (REST reference, read 2026-12-06)."""
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""The value a likelihood is read as: the centre of its fifth of [0, 1] (barapi's convention;
Google gives no probabilities)."""
MAX_RESULTS = 100
"""``maxResults`` asked of label detection. A unit costs the same whatever its size, and a label
that is answered needs no censoring, so barapi asks as many as an answer may usefully hold: with
the score floor below, real answers hold far fewer (commonly 5–30), so the floor, not this cap,
decides what is left out. 100 is the largest figure reported for the service (third-party
pages; Google documents no maximum)."""
SCORE_FLOOR = 0.5
"""Label detection leaves out labels scored under about 0.5. OBSERVED, not documented: answers
commonly reported hold no label scored under 0.5, and Google's reference says nothing of a
floor (searched 2026-12-06). Should a service answer a label under it, that answer's own lowest
score is used as the floor instead (`GoogleVisionAdapter._read_labels`)."""
MODELS = {"safe-search": "SAFE_SEARCH_DETECTION", "labels": "LABEL_DETECTION"}
CARDS = {"safe-search": "google-vision-safesearch", "labels": "google-vision-labels"}
QUOTA_WORDS = ("per day", "per month", "perday", "permonth")
"""A 429's text naming one of these is a quota no wait within a run lifts: fatal."""


def error_text(response: httpx.Response) -> str:
    """"STATUS: message" from Google's ``{"error": {"code", "message", "status"}}``, or the
    status line; never empty."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return f"{error.get('status') or error.get('code') or response.status_code}: " \
               f"{error['message']}"
    raw = response.text.strip()[:200] if response.content and body is None else ""
    return f"{response.status_code}: {raw or response.reason_phrase or 'no message'}"


def google_endpoint(endpoint: str | None, insecure: bool) -> str:
    """The endpoint as a URL: DEFAULT_ENDPOINT when none (`barapi.adapters.rest.endpoint_url`:
    ConfigError for a malformed one, or plaintext http:// to a host not on loopback)."""
    return str(endpoint_url(endpoint or DEFAULT_ENDPOINT, insecure, f"{DEFAULT_ENDPOINT} (the "
                            f"default) or http://127.0.0.1:PORT for `barapi emulate google`"))


class GoogleVisionAdapter(Adapter):
    """Cloud Vision SafeSearch (`model` "safe-search") or label detection ("labels") as a black
    box: up to 16 images per request, one billed unit per image. `labels`: safe-search: a
    subset of `SAFE_SEARCH` (none: all five); labels: the label descriptions to use as columns
    (required). Raises ConfigError for an unknown model or bad labels."""

    max_batch = MAX_IMAGES_PER_REQUEST
    answers = "scores"

    def __init__(self, model: str, *, key: Secret, labels: list[str], endpoint: str,
                 timeout: float = 60.0) -> None:
        if model not in MODELS:
            raise ConfigError(f"--model {model!r}: Google Cloud Vision serves "
                              f"{' or '.join(MODELS)}")
        folded = [label.casefold() for label in labels]
        twice = next((label for label, f in zip(labels, folded, strict=True)
                      if folded.count(f) > 1), None)
        if twice is not None:
            raise ConfigError(f"--labels: {twice!r} is named twice (labels are matched "
                              f"case-insensitively); name each once")
        self.model, self.feature = model, MODELS[model]
        if model == "safe-search":
            unknown = [label for label in labels if label not in SAFE_SEARCH]
            if unknown:
                raise ConfigError(f"--labels: {', '.join(map(repr, unknown))} "
                                  f"{'is' if len(unknown) == 1 else 'are'} not SafeSearch "
                                  f"categories; choose among {', '.join(SAFE_SEARCH)}")
            self.labels = list(labels or SAFE_SEARCH)
            self.form = AnswerForm(levels=LEVELS)
            if labels and len(labels) < len(SAFE_SEARCH):
                self.label_note = (f"using {len(labels)} of SafeSearch's {len(SAFE_SEARCH)} "
                                   f"categories ({', '.join(labels)})")
            settings = MODEL
        else:
            if not labels:
                raise ConfigError("--labels is required with --model labels: Google label "
                                  "detection cannot list its labels; name the ones to use, "
                                  "comma-separated (e.g. --labels Cat,Dog; matched to the "
                                  "answers' descriptions case-insensitively)")
            self.labels = list(labels)
            self.form = AnswerForm(threshold=SCORE_FLOOR, top=MAX_RESULTS)
            settings = f"{MODEL}/max{MAX_RESULTS}"
        self.card = CARDS[model]
        self._endpoint, self._key, self._timeout = endpoint.rstrip("/"), key, timeout
        self.identity = f"google/{self._endpoint}/{model}/{settings}"
        self._mids: list[str | None] = [None] * len(self.labels)  # column → mid, once bound
        self._pinned_mids: dict[str, str] = {}
        self._http = LoopClient(self._endpoint, self._timeout)

    @property
    def who(self) -> str:
        return f"Google Cloud Vision {self.model}"

    # ------------------------------------------------------------------ pins (label detection)

    def pinned(self) -> dict[str, Any]:
        """The mids the columns are bound to, {label: mid} (label detection; see
        `Adapter.pinned`)."""
        pins = super().pinned()
        bound = {label: mid for label, mid in zip(self.labels, self._mids, strict=True) if mid}
        if bound:
            pins["mids"] = bound
        return pins

    def pin(self, pins: Mapping[str, Any], accept_version: str | None = None) -> None:
        super().pin(pins, accept_version)
        mids = pins.get("mids")
        self._pinned_mids = {str(k): str(v) for k, v in mids.items()} \
            if isinstance(mids, dict) else {}
        self._mids = [self._pinned_mids.get(label) for label in self.labels]

    def _bind(self, column: int, mid: str) -> None:
        self._mids[column] = mid
        self.pins_changed()

    # ------------------------------------------------------------------ transport

    async def check(self, timeout: float = 10.0) -> None:
        """The key is there and usable, and the endpoint accepts a TCP connection within
        `timeout` seconds; nothing is sent. Raises ConfigError."""
        self._key.reveal()
        url = httpx.URL(self._endpoint)
        await wait_until_reachable(url.host, url.port or (443 if url.scheme == "https" else 80),
                                   "Google Cloud Vision", timeout)

    def _body(self, images: NDArray[np.uint8]) -> bytes:
        """The JSON request for `images`; ConfigError (not sent) when an image or the request
        is over Google's limits."""
        feature: dict[str, Any] = {"type": self.feature, "model": MODEL}
        if self.model == "labels":
            feature["maxResults"] = MAX_RESULTS
        requests = []
        for image in images:
            png = encode_png(image)
            if len(png) > MAX_IMAGE_BYTES:
                raise ConfigError(f"image of {len(png):,} bytes exceeds Cloud Vision's "
                                  f"{MAX_IMAGE_BYTES:,}-byte limit; use a smaller canvas (not sent)")
            requests.append({"image": {"content": base64.b64encode(png).decode()},
                             "features": [feature]})
        body = json.dumps({"requests": requests}).encode()
        if len(body) > MAX_REQUEST_BYTES:
            raise ConfigError(f"a request of {len(images)} images is {len(body):,} bytes of JSON, "
                              f"over Cloud Vision's {MAX_REQUEST_BYTES:,}; use a smaller canvas or "
                              f"fewer images per request (--card-set max_images_per_request=N) "
                              f"(not sent)")
        return body

    async def _post(self, body: bytes, key: str) -> list[Any]:
        """One ``images:annotate`` request: its ``responses`` (one per image), or barapi's
        error for the failure."""
        response = await send(self._http(), "POST", PATH, "Google Cloud Vision", content=body,
                              headers={"X-Goog-Api-Key": key, "Content-Type": "application/json"})
        if response.status_code != 200:
            message = f"Google Cloud Vision {response.status_code} {error_text(response)}"
            if response.status_code == 429 and any(w in message.lower() for w in QUOTA_WORDS):
                raise FatalProviderError(f"{message} (a quota no wait within this run lifts; not "
                                         f"billed)")
            raise refusal(response, message)  # 400 (incl. a bad key), 401, 403 refused
        try:
            responses = response.json()["responses"]
            if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
                raise TypeError("responses is not a list of objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"Google Cloud Vision answer could not be parsed "
                                 f"({type(exc).__name__}: {exc}); billed, asked again") from None
        return responses

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, K) scores for N ≤ 16 images, in one request. Raises PartialAnswer when some
        images failed inside the batch (every image counted as billed), and barapi's error
        kinds for a request that failed as a whole (module docstring)."""
        with self._key.guard():
            body = self._body(images)
            responses = await self._post(body, self._key.reveal())
            if len(responses) != len(images):
                raise TransientError(f"Google Cloud Vision answered {len(responses)} responses "
                                     f"for {len(images)} images; billed, asked again")
            probs = np.zeros((len(images), len(self.labels)), dtype=np.float32)
            ok = np.ones(len(images), dtype=bool)
            reasons = [""] * len(images)
            for i, answer in enumerate(responses):
                error = answer.get("error")
                if isinstance(error, dict) and (error.get("code") or error.get("message")):
                    ok[i] = False
                    reasons[i] = f"{error.get('code', '?')}: {error.get('message', 'no message')}"
                elif self.model == "safe-search":
                    probs[i] = self._read_safe_search(answer)
                else:
                    probs[i] = self._read_labels(answer)
            if not ok.all():
                failed = [f"image {i}: {r}" for i, r in enumerate(reasons) if r]
                partial = PartialAnswer(f"Google Cloud Vision failed {len(failed)} of "
                                        f"{len(images)} images in a batch: {'; '.join(failed[:5])}",
                                        probs, ok, reasons)
                partial.billed_images = len(images)  # an errored image counts as billed
                raise partial
            return probs

    # ------------------------------------------------------------------ reading answers

    def _read_safe_search(self, answer: dict[str, Any]) -> NDArray[np.float32]:
        """(K,) levels of one image's ``safeSearchAnnotation``; NaN (invalid: billed, asked
        once more, never cached) for UNKNOWN, a missing category or a name not documented."""
        found = answer.get("safeSearchAnnotation")
        found = found if isinstance(found, dict) else {}
        row = np.full(len(self.labels), np.nan, dtype=np.float32)
        for column, category in enumerate(self.labels):
            name = found.get(category)
            if name in LIKELIHOODS:
                row[column] = LEVELS[LIKELIHOODS.index(name)]
        return row

    def _read_labels(self, answer: dict[str, Any]) -> NDArray[np.float32]:
        """(K,) scores of one image's ``labelAnnotations`` (absent: no label over the floor).
        A column is matched by its bound mid, else by description (case-insensitively), which
        binds it; a column left out gets `AnswerForm.fill`'s censored value. An annotation
        that cannot be read makes the row invalid (NaN)."""
        annotations = answer.get("labelAnnotations") or []
        names = {label.casefold(): column for column, label in enumerate(self.labels)}
        by_mid = {mid: column for column, mid in enumerate(self._mids) if mid}
        scores: dict[int, float] = {}
        answered: list[float] = []
        try:
            for annotation in annotations:
                score = float(annotation["score"])
                answered.append(score)
                mid = str(annotation.get("mid") or "")
                column = by_mid.get(mid) if mid else None
                if column is None:
                    column = names.get(str(annotation.get("description", "")).casefold())
                    if column is None or (self._mids[column] and mid != self._mids[column]):
                        continue  # another label, or another entity under the same name
                    if mid and self._mids[column] is None:
                        self._bind(column, mid)
                        by_mid[mid] = column
                scores[column] = max(score, scores.get(column, score))
        except (KeyError, TypeError, ValueError, AttributeError):
            return np.full(len(self.labels), np.nan, dtype=np.float32)
        form = self.form
        if answered and form.threshold is not None and min(answered) < form.threshold:
            form = dataclasses.replace(form, threshold=min(answered))  # a lower floor than seen
        return form.fill(scores, len(self.labels), answered)

    async def aclose(self) -> None:
        await self._http.aclose()


def create(model: str = "", endpoint: str | None = None, insecure: bool = False,
           labels: str | None = None, key_file: str | None = None,
           **_: Any) -> GoogleVisionAdapter:
    """Entry point for ``--provider google``: --model safe-search|labels, --labels (required
    for labels), --endpoint (default https://vision.googleapis.com), --key-file."""
    if not model:
        raise ConfigError(f"--provider google needs --model: {' or '.join(MODELS)}")
    return GoogleVisionAdapter(model, key=read_key(KEY_ENV, key_file, lazy=True),
                               labels=[t.strip() for t in (labels or "").split(",") if t.strip()],
                               endpoint=google_endpoint(endpoint, insecure))
