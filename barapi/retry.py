"""The one retry layer: transient errors only, full-jitter backoff, Retry-After honoured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from barapi.errors import TransientError

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """Retry TransientError up to `attempts` times within `deadline` seconds.

    Waits are uniform in [0, min(cap, base·2^n)] (full jitter), or the provider's Retry-After
    (capped at `cap`) when it gave one. Anything else — auth, quota, billing, bugs — is
    raised at once.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    deadline: float = 300.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(self.cap, max(0.0, exc.retry_after))
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (state.attempt_number - 1)))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=self._wait,
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.deadline),
            sleep=self.sleep,
            reraise=True,
        )
        return await retrying(fn)
