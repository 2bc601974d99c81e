"""A rate-limited prediction endpoint on 127.0.0.1, and an httpx adapter for it.

Stands in for a paid API when measuring the query layer: the server enforces a request rate
(burst 1, like a provider's gateway) and answers over-rate requests with 429 and Retry-After,
counting accepted requests and billable images. Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.emulate import Answer, LoopbackHTTPServer
from barapi.errors import TransientError


class NumpyModel(Adapter):
    """A cheap numpy black box: softmax over K classes of a fixed random projection of 4×4 mean
    colours. Stands in where the model's speed must not dominate a measurement."""

    card = "local"

    def __init__(self, n_sources: int = 1000, max_batch: int = 256) -> None:
        self.labels = [str(i) for i in range(n_sources)]
        self.max_batch = max_batch
        self.identity = f"numpy/{n_sources}"
        self.matrix = np.random.default_rng(0).standard_normal((n_sources, 48))

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        n, s = len(images), images.shape[1]
        cells = images.reshape(n, 4, s // 4, 4, s // 4, 3).mean(axis=(2, 4)).reshape(n, -1) / 255
        logits = cells @ self.matrix.T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class RateLimitedEndpoint:
    """POST /predict, body = raw uint8 images, header X-Shape: N,H,W,3 → JSON probabilities."""

    def __init__(self, rate: float, n_classes: int = 5, tolerance: float = 0.9) -> None:
        self.rate, self.n_classes, self.tolerance = rate, n_classes, tolerance
        self.accepted = self.rejected = self.images = 0
        self.first = self.last = 0.0
        self._next_allowed = 0.0
        self._lock = threading.Lock()
        self._http = LoopbackHTTPServer(self.answer)
        self.port = self._http.port

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        shape = tuple(int(v) for v in headers["X-Shape"].split(","))
        now = time.monotonic()
        with self._lock:
            if now < self._next_allowed:
                self.rejected += 1
                wait = self._next_allowed - now
                return 429, {"error": {"code": "429", "message": "rate limited"}}, {
                    "Retry-After": f"{wait:.3f}"}
            self._next_allowed = max(now, self._next_allowed) + self.tolerance / self.rate
            self.accepted += 1
            self.images += shape[0]
            self.first = self.first or now
            self.last = now
        images = np.frombuffer(body, dtype=np.uint8).reshape(shape)
        means = images.reshape(shape[0], -1).mean(axis=1, keepdims=True) / 255.0
        logits = np.cos(means * np.arange(1, self.n_classes + 1))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return 200, probs.tolist(), {}

    def __enter__(self) -> RateLimitedEndpoint:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()


class LoopbackAdapter(Adapter):
    card = "local"

    def __init__(self, port: int, n_classes: int = 5, max_batch: int = 128) -> None:
        self.labels = [f"c{i}" for i in range(n_classes)]
        self.max_batch = max_batch
        self.identity = f"loopback/{n_classes}"
        self._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        response = await self._client.post(
            "/predict", content=np.ascontiguousarray(images).tobytes(),
            headers={"X-Shape": ",".join(str(v) for v in images.shape)})
        if response.status_code == 429:
            raise TransientError("429 rate limited",
                                 retry_after=float(response.headers.get("Retry-After", 1)))
        response.raise_for_status()
        return np.asarray(response.json(), dtype=np.float32)

    async def aclose(self) -> None:
        await self._client.aclose()
