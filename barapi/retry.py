"""The one retry layer: transient errors only, full-jitter backoff, Retry-After honoured.

Throttling (429, CONN_THROTTLED) is not a failure of the request: it uses up only the
deadline, never the attempts, so that a run slowed by its provider keeps going while the
deadline allows (the rate limiter adapts meanwhile). Inputs that failed inside an answered
request get their own rounds (`input_attempts`, see QueryService).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from barapi.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)
"""Each retry, at DEBUG (`barapi -v`): what failed and how long barapi waits."""


@dataclass
class RetryPolicy:
    """Retry TransientError up to `attempts` failures (throttling not counted) within
    `deadline` seconds of the first attempt.

    Waits are uniform in [0, min(cap, base·2^n)] (full jitter), or the provider's Retry-After
    (capped at `cap`) when it gave one. Anything else — auth, quota, billing, bugs — is
    raised at once. `input_attempts`: further rounds for inputs that failed inside an
    answered request (MIXED_STATUS).
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    deadline: float = 300.0
    input_attempts: int = 5
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, n: int) -> float:
        """Full-jitter wait before the n-th retry (n ≥ 1), in seconds."""
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (n - 1)))

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(self.cap, max(0.0, exc.retry_after))
        return self.backoff(state.attempt_number)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        failures = 0

        def count(state: RetryCallState) -> None:
            nonlocal failures
            exc = state.outcome.exception() if state.outcome else None
            if not (isinstance(exc, TransientError) and exc.throttled):
                failures += 1

        class OutOfAttempts(tenacity.stop.stop_base):
            def __call__(self, state: RetryCallState) -> bool:
                return failures >= policy.attempts

        policy = self

        retrying = AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=self._wait,
            stop=tenacity.stop_any(OutOfAttempts(), tenacity.stop_after_delay(self.deadline)),
            sleep=self.sleep,
            after=count,
            before_sleep=tenacity.before_sleep_log(log, logging.DEBUG),  # shown with -v
            reraise=True,
        )
        return await retrying(fn)
