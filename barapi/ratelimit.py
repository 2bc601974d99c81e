"""Smooth, adaptive rate limiter: requests leave at most every 1/rate seconds, never in
bursts; the rate is cut when the provider throttles and raised slowly while it accepts.

Additive increase, multiplicative decrease (AIMD, as TCP congestion control): on each
throttle the rate is multiplied by `DECREASE` (at most once per `1/rate` seconds, so that a
burst of throttled requests counts once); each accepted request adds `ceiling × INCREASE`
up to the ceiling (the card's rate). A run keeps the learned `rate` in its folder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

DECREASE = 0.7
INCREASE = 0.005
FLOOR = 0.05
"""Slowest rate the limiter falls to, in requests per second."""
UNLIMITED_START = 10.0
"""Rate taken up when a provider with no stated limit throttles, in requests per second."""


@dataclass
class RateLimiter:
    """`rate` requests per second (0 = unlimited) with `ceiling` the most it rises to
    (default: the starting rate); injectable clock and sleep for tests."""

    rate: float = 0.0
    ceiling: float | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    throttles: int = 0
    _next: float = field(default=0.0, init=False)
    _last_cut: float = field(default=-1e9, init=False)

    def __post_init__(self) -> None:
        if self.ceiling is None:
            self.ceiling = self.rate

    @classmethod
    def unlimited(cls) -> RateLimiter:
        return cls(0.0)

    async def acquire(self) -> None:
        """Wait for this request's slot. Slots are handed out in call order."""
        if self.rate <= 0:
            return
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await self.sleep(slot - now)

    def throttled(self) -> None:
        """The provider refused a request as too fast: slow down."""
        self.throttles += 1
        now = self.clock()
        if self.rate <= 0:
            self.rate = UNLIMITED_START
            self.ceiling = self.ceiling or UNLIMITED_START
        elif now - self._last_cut >= 1.0 / self.rate:
            self.rate = max(FLOOR, self.rate * DECREASE)
        else:
            return
        self._last_cut = now
        self._next = max(self._next, now + 1.0 / self.rate)

    def succeeded(self) -> None:
        """The provider accepted a request: speed up a little, up to the ceiling."""
        if self.rate > 0 and self.ceiling and self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.ceiling * INCREASE)
