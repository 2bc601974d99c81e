"""Smooth, adaptive rate limiter: requests leave at most every 1/rate seconds, never in
bursts; the rate is cut when the provider throttles and raised slowly while it accepts.

Additive increase, multiplicative decrease (AIMD, as TCP congestion control): on each
throttle the rate is multiplied by `DECREASE` (at most once per `1/rate` seconds, so that a
burst of throttled requests counts once); while the provider accepts requests the rate grows
back by `ceiling / RECOVERY_SECONDS` per second without a throttle, up to the ceiling (the
card's rate): however low a storm of throttling drove it, RECOVERY_SECONDS of quiet bring it
back to the card. A run keeps the learned `rate` in its folder with the time it was saved;
a resume starts from it recovered for the time since (`recovered_rate`), so that the rate
of a run resumed many times never ratchets down.

`Pacer` is the logic, synchronous and clock-driven: it hands out departure slots and adapts
the rate. `RateLimiter` is one process's limiter (a Pacer plus an async sleep); a sweep's
limiter shared by many processes (`barapi.sweep.limiter`) keeps one Pacer in a Ray actor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

DECREASE = 0.7
RECOVERY_SECONDS = 60.0
"""Seconds without a throttle in which the rate climbs from 0 back to the ceiling (additive
increase: ceiling / RECOVERY_SECONDS per second). Our choice: short 429 storms (another
client of the account, a server hiccup) end within seconds; a provider that really allows
less than its card throttles again, and AIMD settles just under its limit."""
FLOOR = 0.05
"""Slowest rate the limiter falls to, in requests per second."""
UNLIMITED_START = 10.0
"""Rate taken up when a provider with no stated limit throttles, in requests per second."""


def recovered_rate(rate: float, ceiling: float | None, quiet_seconds: float) -> float:
    """`rate` after `quiet_seconds` without a throttle: raised by ceiling / RECOVERY_SECONDS
    per second, at most to `ceiling` (requests per second; no ceiling or 0: unchanged)."""
    if not ceiling or rate <= 0:
        return rate
    return min(ceiling, max(rate, rate + ceiling * max(0.0, quiet_seconds) / RECOVERY_SECONDS))


@dataclass
class Pacer:
    """Departure slots at `rate` requests per second (0 = unlimited), adapted by AIMD up to
    `ceiling` (default: the starting rate; 0, a card without a limit, with a rate learned
    before: UNLIMITED_START or that rate). Times are seconds on `clock`."""

    rate: float = 0.0
    ceiling: float | None = None
    clock: Callable[[], float] = time.monotonic
    throttles: int = 0
    _next: float = field(default=0.0, init=False)
    _last_cut: float = field(default=-1e9, init=False)
    _raised: float = field(default=0.0, init=False)
    """When the rate last changed (a cut, or a rise): quiet time is counted from here."""

    def __post_init__(self) -> None:
        if self.ceiling is None:
            self.ceiling = self.rate
        elif not self.ceiling and self.rate > 0:  # no stated limit, a rate learned before
            self.ceiling = max(self.rate, UNLIMITED_START)
        self._raised = self.clock()

    def delay(self) -> float:
        """Claim the next slot; seconds to wait for it (0: leave now). Slots are handed out
        in call order, 1/rate apart."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        return slot - now

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
        self._last_cut = self._raised = now
        self._next = max(self._next, now + 1.0 / self.rate)

    def succeeded(self) -> None:
        """The provider accepted a request: recover towards the ceiling for the quiet time
        since the rate last changed (`recovered_rate`)."""
        now = self.clock()
        if self.rate > 0 and self.ceiling and self.rate < self.ceiling:
            self.rate = recovered_rate(self.rate, self.ceiling, now - self._raised)
        self._raised = now


class RateLimiter:
    """One process's limiter: `rate` requests per second (0 = unlimited) with `ceiling` the
    most it rises to (default: the starting rate); injectable clock and sleep for tests.
    `rate` and `throttles` read the pacer's current values."""

    def __init__(self, rate: float = 0.0, ceiling: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.pacer = Pacer(rate, ceiling, clock)
        self.sleep = sleep

    @classmethod
    def unlimited(cls) -> RateLimiter:
        return cls(0.0)

    @property
    def rate(self) -> float:
        return self.pacer.rate

    @property
    def ceiling(self) -> float | None:
        return self.pacer.ceiling

    @property
    def throttles(self) -> int:
        return self.pacer.throttles

    async def acquire(self) -> None:
        """Wait for this request's slot. Slots are handed out in call order."""
        wait = self.pacer.delay()
        if wait > 0:
            await self.sleep(wait)

    def throttled(self) -> None:
        """The provider refused a request as too fast: slow down."""
        self.pacer.throttled()

    def succeeded(self) -> None:
        """The provider accepted a request: speed up a little, up to the ceiling."""
        self.pacer.succeeded()
