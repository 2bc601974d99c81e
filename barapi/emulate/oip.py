"""An Open Inference Protocol (KServe V2) REST server on 127.0.0.1, answering from local boxes.

The tests also run barapi's OIP adapter against a real server (MLServer); this one serves the
few-output boxes as image models (UINT8 NHWC in, FP32 probabilities out) for a free rehearsal
without installing a server, and injects faults a real one does not on demand.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
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
)

INPUT, OUTPUT = "image", "probabilities"
"""The names of each served model's one input and one output tensor."""


class OIPEmulator:
    """KServe V2 REST on http://127.0.0.1:PORT serving `models` {name: box}, each taking
    ``image`` (UINT8, [-1, side, side, 3]: RGB, channels last) and answering ``probabilities``
    (FP32, [-1, K], the box's labels in order), version "1" (answers name `box_version`).

    Routes: GET ``v2/health/live``, ``v2/health/ready``, ``v2/models/NAME[/versions/1]`` and
    ``.../ready``; POST ``.../infer``. Errors are ``{"error": text}``: 404 unknown model or
    version, 400 a malformed request (wrong input name, datatype, shape or data), 503 while
    `ready` is False or on `Faults.unavailable_every`, 429 above `Faults.max_rps`. Runs in a
    background thread; a context manager.
    """

    def __init__(self, models: Mapping[str, Adapter], side: int = 112,
                 faults: Faults | None = None, port: int = 0) -> None:
        self.models, self.side = dict(models), side
        self.versions = {name: box_version(box) for name, box in self.models.items()}
        self.faults = faults or Faults()
        self.counters = Counters()
        self.ready = True
        self._lock = threading.Lock()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._http = LoopbackHTTPServer(self.answer, port, get=self.get)
        self.port = self._http.port

    def _route(self, path: str) -> tuple[str | None, str, Answer | None]:
        """(model name, what follows it, an error answer or None) for a v2/models path."""
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:2] != ["v2", "models"] or len(parts) < 3:
            return None, "", (404, {"error": f"no route {path}"}, {})
        name, rest = parts[2], parts[3:]
        if name not in self.models:
            return name, "", (404, {"error": f"Model {name} not found"}, {})
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] != "1":
                version = rest[1] if len(rest) > 1 else ""
                return name, "", (404, {"error": f"Model {name} with version {version} not "
                                                 f"found"}, {})
            rest = rest[2:]
        return name, "/".join(rest), None

    def metadata(self, name: str) -> dict[str, Any]:
        box = self.models[name]
        return {"name": name, "versions": ["1"], "platform": "barapi-emulator",
                "inputs": [{"name": INPUT, "datatype": "UINT8",
                            "shape": [-1, self.side, self.side, 3]}],
                "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(box.labels)]}]}

    def get(self, path: str) -> Answer:
        """Health, metadata and readiness (free: never counted as billed)."""
        with self._lock:
            self.counters.model_calls += 1
        if path.strip("/") in ("v2/health/live", "v2/health/ready"):
            ok = path.endswith("live") or self.ready
            return (200 if ok else 503), ({} if ok else {"error": "not ready"}), {}
        name, rest, error = self._route(path)
        if error is not None or name is None:
            return error or (404, {"error": "no route"}, {})
        if rest == "":
            return 200, self.metadata(name), {}
        if rest == "ready":
            return (200, {}, {}) if self.ready else (503, {"error": f"Model {name} not ready"}, {})
        return 404, {"error": f"no route {path}"}, {}

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        """POST .../infer: the request checked like a server's model would, then answered."""
        c, f = self.counters, self.faults
        name, rest, error = self._route(path)
        if error is not None or name is None or rest != "infer":
            return error or (404, {"error": f"no route {path}"}, {})
        with self._lock:
            c.requests += 1
            number = c.requests  # this request's: others may arrive while the model runs
            if not self.ready or (f.unavailable_every and number % f.unavailable_every == 0):
                c.unavailable += 1
                return 503, {"error": f"Model {name} not ready"}, {}
            now = time.monotonic()
            if f.max_rps and not self._bucket.admit(now):
                c.throttled += 1
                c.throttled_times.append(now)
                return 429, {"error": "rate limited"}, {"Retry-After": f"{1.0 / f.max_rps:.3f}"}
            c.accepted_times.append(now)
        try:
            images = self._images(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"{type(exc).__name__}: {exc}"}, {}
        if f.delay:
            time.sleep(f.delay)
        box = self.models[name]
        probs = np.asarray(asyncio.run(box.predict_proba(images)), dtype=np.float32)
        with self._lock:
            c.billed_images += len(images)
            version = self.versions[name]
            c.billed_by_version[version] = c.billed_by_version.get(version, 0) + len(images)
            if f.drop_every and number % f.drop_every == 0:
                c.dropped += 1
                return DROP, None, {}
        return 200, {"model_name": name, "model_version": version, "outputs": [{
            "name": OUTPUT, "datatype": "FP32", "shape": list(probs.shape),
            "data": probs.reshape(-1).tolist()}]}, {}

    def _images(self, request: Any) -> np.ndarray:
        """(N, side, side, 3) uint8 images of an infer request; ValueError naming what is
        wrong (the model's one input, its datatype, shape and data)."""
        inputs = request["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1:
            raise ValueError(f"expected one input tensor {INPUT!r}")
        tensor = inputs[0]
        if tensor.get("name") != INPUT or tensor.get("datatype") != "UINT8":
            raise ValueError(f"expected input {INPUT!r} of datatype UINT8, got "
                             f"{tensor.get('name')!r} {tensor.get('datatype')!r}")
        shape = [int(d) for d in tensor["shape"]]
        if len(shape) != 4 or shape[1:] != [self.side, self.side, 3] or shape[0] < 1:
            raise ValueError(f"expected shape [N, {self.side}, {self.side}, 3], got {shape}")
        data = np.asarray(tensor["data"], dtype=np.float64)
        if data.size != int(np.prod(shape)) or (data < 0).any() or (data > 255).any():
            raise ValueError(f"expected {int(np.prod(shape))} values 0..255, got {data.size}")
        for wanted in request.get("outputs") or []:
            if wanted.get("name") != OUTPUT:
                raise ValueError(f"unknown output {wanted.get('name')!r}; it has {OUTPUT!r}")
        return data.astype(np.uint8).reshape(shape)

    def __enter__(self) -> OIPEmulator:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()
