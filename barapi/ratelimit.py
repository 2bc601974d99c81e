"""Smooth rate limiter: requests leave at most every 1/rate seconds, never in bursts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """`rate` requests per second (0 = unlimited); injectable clock and sleep for tests."""

    rate: float = 0.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _next: float = field(default=0.0, init=False)

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
