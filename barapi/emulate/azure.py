"""The Azure Custom Vision emulator: v3.1 classification prediction over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

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
from barapi.wire import decode_png


class AzureEmulator:
    """Custom Vision v3.1 classification prediction on http://127.0.0.1:PORT.

    Routes ``POST /customvision/v3.1/prediction/{project}/classify/iterations/{name}/image``
    and ``.../image/nostore``; bodies as application/octet-stream or multipart `imageData`
    (what the SDK sends). `model`: a box whose labels are as many as the tags (tag i gets
    its concept i; see `barapi.adapters.boxes.view_for`), or an adapter of many classes,
    folded i mod K (`fold`), K the number of tags.
    Gateway errors use Azure's nested body ``{"error": {"code", "message"}}``; 429s carry
    Retry-After. Answers name the iteration that made them (`box_version` of the box: the
    service's iteration id); `publish` points the published name at another box. Tag i has
    id "tag-i"; `Faults.answer_names` renames tags in the answers, `Faults.omit_every` leaves
    one out. Runs in a background thread; use as a context manager.
    """

    def __init__(self, model: Adapter, key: str, tags: list[str], faults: Faults | None = None,
                 port: int = 0) -> None:
        import threading

        self.model, self.key, self.tags = model, key, list(tags)
        self.iteration = box_version(model)
        self.faults = faults or Faults()
        self.counters = Counters()
        self._lock = threading.Lock()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._http = LoopbackHTTPServer(self.answer, port)
        self.port = self._http.port

    def publish(self, model: Adapter) -> None:
        """Point the published name at `model`, another iteration (its answers name it)."""
        self.model, self.iteration = model, box_version(model)

    @staticmethod
    def _error(status: int, message: str) -> Answer:
        """The gateway's error shape (401, 403, 429, 5xx)."""
        return status, {"error": {"code": str(status), "message": message}}, {}

    @staticmethod
    def _service_error(status: int, code: str, message: str) -> Answer:
        """The Custom Vision service's own error shape (400s about the request)."""
        return status, {"code": code, "message": message}, {}

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        """Status, JSON body and extra headers for one request; `headers` are looked up
        case-insensitively (the SDK sends "Prediction-key")."""
        c, f = self.counters, self.faults
        parts = path.strip("/").split("/")
        if len(parts) < 8 or parts[:3] != ["customvision", "v3.1", "prediction"] or parts[7] != "image":
            return self._error(404, f"no route {path}")
        with self._lock:
            c.requests += 1
            number = c.requests  # this request's: others may arrive while the model runs
            if headers.get("Prediction-Key") != self.key:
                c.rejected_auth += 1
                return self._error(401, "Access denied due to invalid subscription key.")
            if f.unavailable_every and number % f.unavailable_every == 0:
                c.unavailable += 1
                return self._error(503, "emulated outage")
            now = time.monotonic()
            if f.max_rps and not self._bucket.admit(now):
                c.throttled += 1
                c.throttled_times.append(now)
                status, payload, _ = self._error(429, "Rate limit is exceeded.")
                return status, payload, {"Retry-After": f"{1.0 / f.max_rps:.3f}"}
            c.accepted_times.append(now)
            if f.quota_images is not None and c.billed_images + 1 > f.quota_images:
                return self._error(403, "Out of call volume quota.")
            c.billed_images += 1  # counted now, so that concurrent requests respect the quota
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            from email.parser import BytesParser

            message = BytesParser().parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body)
            parts_in_body: list[Any] = list(message.get_payload())
            fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                      for p in parts_in_body}
            found = fields.get("imageData")
            body = found if isinstance(found, bytes) else b""
        try:
            image = decode_png(body)
        except Exception:
            with self._lock:
                c.billed_images -= 1  # a rejected image is not billed
            return self._service_error(400, "BadRequestImageFormat", "Bad Request Image Format")
        if f.delay:
            time.sleep(f.delay)
        k = len(self.tags)
        model, iteration = self.model, self.iteration
        scores = [float(v) for v in asyncio.run(concept_scores(model, image[None], k))[0]]
        with self._lock:
            answered = c.billed_images
            c.billed_by_version[iteration] = c.billed_by_version.get(iteration, 0) + 1
            if f.drop_every and number % f.drop_every == 0:
                c.dropped += 1
                return DROP, None, {}
        if f.bad_answer_every and answered % f.bad_answer_every == 0:
            scores = [-1.0] * k
        ranked = sorted(zip(scores, range(k), self.tags, strict=True), reverse=True)
        if f.omit_every and answered % f.omit_every == 0:
            ranked = ranked[:-1]  # the lowest-scored tag left out
        predictions = [{"probability": s, "tagId": f"tag-{i}",
                        "tagName": f.answer_names.get(t, t)} for s, i, t in ranked]
        return 200, {"id": "emulated", "project": parts[3], "iteration": iteration,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "predictions": predictions}, {}

    def __enter__(self) -> AzureEmulator:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()
