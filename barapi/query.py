"""QueryService: the only path from the algorithm to an adapter.

For each batch of images, in order: cache lookup (a hit costs $0), split of the misses into
requests of at most the adapter's batch limit, a budget reservation per request (reserve →
call → commit, or release on failure), rate limiting and a concurrency cap, retries of
transient errors, cache write. It counts every billable image.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.budget import Budget
from barapi.cache import ProbabilityCache, image_keys
from barapi.errors import PartialAnswer
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy
from barapi.wire import check_batch, worst_case_png_bytes


@dataclass
class QueryStats:
    """Counters in images and requests since the service was created."""

    billed_images: int = 0
    cached_images: int = 0
    requests: int = 0
    attempts: int = 0

    @property
    def images(self) -> int:
        """Images answered, paid or cached."""
        return self.billed_images + self.cached_images


@dataclass
class QueryService:
    adapter: Adapter
    budget: Budget = field(default_factory=Budget.unlimited)
    cache: ProbabilityCache | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter.unlimited)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_batch: int | None = None
    max_bytes: int | None = None
    max_concurrency: int = 4
    stats: QueryStats = field(default_factory=QueryStats)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_concurrency)

    @property
    def batch_limit(self) -> int:
        return min(self.max_batch or self.adapter.max_batch, self.adapter.max_batch)

    def limit_for(self, shape: tuple[int, ...]) -> int:
        """Images per request for images of `shape` (H, W, 3): the batch limit, and as many
        as fit in `max_bytes` at their worst-case encoded size."""
        if self.max_bytes is None:
            return self.batch_limit
        return max(1, min(self.batch_limit, self.max_bytes // worst_case_png_bytes(shape)))

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, K) probabilities for (N, H, W, 3) uint8 images."""
        check_batch(images)
        n, k = len(images), self.adapter.n_sources
        out = np.empty((n, k), dtype=np.float32)
        keys = image_keys(self.adapter.identity, images) if self.cache is not None else None
        missing = np.arange(n)
        if self.cache is not None and keys is not None:
            hits = await self.cache.get_many(keys)
            found = [i for i, v in enumerate(hits) if v is not None]
            for i in found:
                out[i] = hits[i]
            self.stats.cached_images += len(found)
            missing = np.array([i for i, v in enumerate(hits) if v is None], dtype=np.int64)
        per_request = self.limit_for(images.shape[1:])
        chunks = [missing[i:i + per_request] for i in range(0, len(missing), per_request)]
        results = await asyncio.gather(*(self._request(images[c]) for c in chunks),
                                       return_exceptions=True)
        answered = []
        for chunk, probs in zip(chunks, results, strict=True):
            if isinstance(probs, np.ndarray):
                out[chunk] = probs
                answered.append(chunk)
            elif isinstance(probs, PartialAnswer):
                out[chunk[probs.ok]] = probs.probs[probs.ok]
                answered.append(chunk[probs.ok])
        if self.cache is not None and keys is not None and answered:
            # cache what was paid for even when another request of the batch failed
            done = np.concatenate(answered)
            await self.cache.set_many([keys[i] for i in done], out[done])
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return out

    async def _request(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """One request's answers; inputs that failed inside an answered request are asked
        again once, on their own. A PartialAnswer that escapes carries every answer paid for."""
        try:
            return await self._send(images)
        except PartialAnswer as partial:
            await self._ask_again(images, partial)
            return np.asarray(partial.probs, dtype=np.float32)

    async def _ask_again(self, images: NDArray[np.uint8], partial: PartialAnswer) -> None:
        """Fill in the answers of `partial`'s failed inputs by asking for them once more;
        raise `partial`, with what that paid for, where some fail again."""
        failed = np.flatnonzero(~partial.ok)
        try:
            partial.probs[failed] = await self._send(images[failed])
        except PartialAnswer as second:
            partial.probs[failed[second.ok]] = second.probs[second.ok]
            partial.ok[failed[second.ok]] = True
            still = ", ".join(str(i) for i in np.flatnonzero(~partial.ok))
            partial.args = (f"inputs {still} of a request failed twice ({second})",)
            raise partial from None
        partial.ok[failed] = True

    async def _send(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        n = len(images)

        async def attempt() -> NDArray[np.float32]:
            async with self.budget.reservation(n), self._slots:
                await self.limiter.acquire()  # last, so that the request leaves in its slot
                self.stats.attempts += 1
                probs = await self.adapter.predict_proba(images)
            probs = np.asarray(probs, dtype=np.float32)
            if probs.shape != (n, self.adapter.n_sources):
                raise ValueError(
                    f"adapter {self.adapter.identity} returned shape {probs.shape} for {n} images"
                )
            return probs

        try:
            probs = await self.retry.call(attempt)
        except PartialAnswer as partial:
            self.stats.requests += 1
            self.stats.billed_images += partial.billed_images
            raise
        self.stats.requests += 1
        self.stats.billed_images += n
        return probs
