"""QueryService: the only path from the algorithm to an adapter.

For each batch of images, in order: cache lookup (a hit costs $0 and is validated like a
fresh answer; a bad one is a miss), split of the misses into requests of at most the
adapter's batch limit, and for each request: a budget reservation (reserve → counted as
billed in the ledger just before it leaves → settled by its outcome), a concurrency slot and
the rate limiter (which slows down when the provider throttles; a priced cache that failed
stops the request here, before it is paid: `ProbabilityCache.ready_to_pay`),
retries of transient errors, validation of the answers against what the provider promises,
and the cache write of that request's valid answers as soon as it returns. The ledger
settles a request only once that write is committed: a request whose answers a kill -9 (or
a worker's hard exit) could still lose has no outcome line, so it counts as in flight
(billed, uncertain), never as answered-and-kept. Inputs that fail inside an answered request
(Clarifai MIXED_STATUS) are asked again with backoff, up to `RetryPolicy.input_attempts`
rounds; invalid answers are asked once more, then stop the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.budget import Budget
from barapi.cache import ProbabilityCache, cache_identity, image_keys
from barapi.errors import InputsFailed, InvalidAnswer, PartialAnswer, TransientError
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy
from barapi.wire import check_batch, worst_case_png_bytes

SUM_TOLERANCE = 1e-3
"""How far from 1 a promised probability distribution's row may sum (float32 softmax over
1,000 classes sums to 1 within ~1e-6; 1e-3 leaves room for providers that round)."""


@dataclass
class QueryStats:
    """Counters in images and requests since the service was created."""

    billed_images: int = 0
    cached_images: int = 0
    requests: int = 0
    attempts: int = 0
    invalid_answers: int = 0
    failed_inputs: int = 0

    @property
    def images(self) -> int:
        """Images answered, paid or cached."""
        return self.billed_images + self.cached_images


def invalid_rows(probs: NDArray[np.float32], kind: str) -> NDArray[np.bool_]:
    """(N,) True where a row breaks the provider's promise: non-finite, outside [0, 1], all
    zero, or (kind "distribution") not summing to 1 within SUM_TOLERANCE."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(probs).all(axis=1)
        bad |= (probs < 0).any(axis=1) | (probs > 1 + 1e-6).any(axis=1)
        bad |= ~(probs > 0).any(axis=1)
        if kind == "distribution":
            bad |= np.abs(probs.astype(np.float64).sum(axis=1) - 1) > SUM_TOLERANCE
    return np.asarray(bad)


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
        await self.adapter.ensure_checked()  # may settle the identity the cache keys hold
        n, k = len(images), self.adapter.n_sources
        out = np.empty((n, k), dtype=np.float32)
        keys = (image_keys(cache_identity(self.adapter), images)
                if self.cache is not None else None)
        missing = np.arange(n)
        if self.cache is not None and keys is not None:
            found, rows = await self._cached(self.cache, keys)
            out[found] = rows
            self.stats.cached_images += len(found)
            missing = np.setdiff1d(missing, found)
        per_request = self.limit_for(images.shape[1:])
        chunks = [missing[i:i + per_request] for i in range(0, len(missing), per_request)]
        results = await asyncio.gather(
            *(self._request(images[c], [keys[i] for i in c] if keys else None) for c in chunks),
            return_exceptions=True)
        for chunk, probs in zip(chunks, results, strict=True):
            if isinstance(probs, np.ndarray):
                out[chunk] = probs
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return out

    async def _cached(self, cache: ProbabilityCache, keys: list[str]
                      ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """(indices, (len, K) rows) of the keys whose stored answers hold: decoded at the
        adapter's width and valid exactly as a fresh answer must be. A bad entry is a miss:
        reported (once per cache), asked again within the budget and replaced."""
        hits = await cache.get_many(keys, self.adapter.n_sources)
        found = np.array([i for i, v in enumerate(hits) if v is not None], dtype=np.int64)
        rows = np.array([hits[i] for i in found], dtype=np.float32).reshape(
            len(found), self.adapter.n_sources)
        bad = invalid_rows(rows, self.adapter.answers)
        cache.report_bad(int(bad.sum()))
        return found[~bad], rows[~bad]

    async def _request(self, images: NDArray[np.uint8],
                       keys: list[str] | None) -> NDArray[np.float32]:
        """One request's valid answers, cached as they arrive. Failed inputs are asked again
        with backoff; invalid answers once more."""
        n = len(images)
        probs = np.zeros((n, self.adapter.n_sources), dtype=np.float32)
        pending = np.arange(n)
        reasons: dict[int, str] = {}
        invalid_asks = 0
        for round_ in range(self.retry.input_attempts + 1):
            if round_:
                await self.retry.sleep(self.retry.backoff(round_))
            sent_keys = [keys[i] for i in pending] if keys is not None else None
            try:
                answer = await self._send(images[pending], sent_keys)
                ok = np.ones(len(pending), bool)
            except PartialAnswer as partial:
                answer, ok = np.asarray(partial.probs, dtype=np.float32), partial.ok.copy()
                self.stats.failed_inputs += int((~ok).sum())
                reasons.update({int(pending[i]): partial.reasons[i] for i in np.flatnonzero(~ok)})
            bad = ok & invalid_rows(answer, self.adapter.answers)
            if bad.any():
                self.stats.invalid_answers += int(bad.sum())
                invalid_asks += 1
                if invalid_asks > 1:
                    rows = ", ".join(str(int(i)) for i in pending[bad][:10])
                    raise InvalidAnswer(
                        f"{self.adapter.identity} answered values it does not promise (NaN, "
                        f"inf, negative, above 1, all zero or not summing to 1) twice for input(s) "
                        f"{rows} of a request: e.g. {answer[bad][0][:6].tolist()}; billed, not cached")
                ok &= ~bad
            good = pending[ok]
            probs[good] = answer[ok]  # (cached by _send the moment they arrived)
            pending = pending[~ok]
            if not len(pending):
                return probs
        detail = "; ".join(f"input {i}: {reasons.get(int(i), 'invalid answer')}" for i in pending[:10])
        raise InputsFailed(f"{len(pending)} input(s) of a request kept failing after "
                           f"{self.retry.input_attempts + 1} tries ({detail}); the answered ones "
                           f"are paid for and cached")

    async def discover_labels(self, image: NDArray[np.uint8],
                              keep: Callable[[list[str]], None] | None = None) -> list[str]:
        """The adapter's labels from one paid prediction of the (H, W, 3) `image`: reserved,
        ledgered, rate-limited and retried like any request. `keep(labels)` stores them
        durably (a run folder's record) before the ledger settles the request."""

        async def attempt() -> list[str]:
            async with self.budget.reservation(1) as ticket:
                async with self._slots:
                    await self.limiter.acquire()
                    self.stats.attempts += 1
                    self.budget.send(ticket)
                    labels = await self.adapter.discover_labels(image)
                if keep is not None:
                    keep(labels)  # kept before the ledger settles the request as answered
                return labels

        labels = await self.retry.call(attempt)
        self.stats.requests += 1
        self.stats.billed_images += 1
        return labels

    def _store(self, keys: list[str] | None, probs: NDArray[np.float32],
               ok: NDArray[np.bool_]) -> Future[None] | None:
        """Queue the valid answers among `ok` for the cache, at once (no await in between);
        the write's future, None when nothing is written."""
        if self.cache is None or keys is None:
            return None
        keep = ok & ~invalid_rows(probs, self.adapter.answers)
        if not keep.any():
            return None
        return self.cache.store([k for k, y in zip(keys, keep, strict=True) if y], probs[keep])

    async def _send(self, images: NDArray[np.uint8],
                    keys: list[str] | None = None) -> NDArray[np.float32]:
        n = len(images)

        async def attempt() -> NDArray[np.float32]:
            async with self.budget.reservation(n) as ticket:
                stored: Future[None] | None = None
                partial: PartialAnswer | None = None
                async with self._slots:
                    await self.limiter.acquire()  # last, so that the request leaves in its slot
                    if self.cache is not None:  # a priced cache that failed: nothing more is paid
                        await self.cache.ready_to_pay()
                    self.stats.attempts += 1
                    self.budget.send(ticket)
                    try:
                        probs = await self.adapter.predict_proba(images)
                    except TransientError as exc:
                        if exc.throttled:
                            self.limiter.throttled()
                        raise
                    except PartialAnswer as exc:
                        partial, probs, ok = exc, np.asarray(exc.probs, dtype=np.float32), exc.ok
                        self.stats.billed_images += exc.billed_images
                    else:
                        probs, ok = np.asarray(probs, dtype=np.float32), np.ones(n, bool)
                        if probs.shape != (n, self.adapter.n_sources):  # unparseable: billed, retried
                            raise TransientError(
                                f"{self.adapter.identity} returned shape {probs.shape} for {n} "
                                f"images (expected {(n, self.adapter.n_sources)})")
                        self.stats.billed_images += n
                    stored = self._store(keys, probs, ok)
                    self.limiter.succeeded()
                if stored is not None:  # committed before the ledger settles the request
                    await asyncio.shield(asyncio.wrap_future(stored))
                if partial is not None:
                    raise partial
            return probs

        try:
            return await self.retry.call(attempt)
        finally:
            self.stats.requests += 1
