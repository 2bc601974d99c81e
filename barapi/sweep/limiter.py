"""One rate limit per provider account, shared by every trial of a sweep, on every node.

Each account has one `barapi.ratelimit.Pacer` (the same AIMD logic a single run uses), kept
in a Ray actor: each request of each trial asks it for a departure slot and sleeps until then, so
that N trials together leave at the card's rate, not N times it. A throttled answer slows
every trial down; accepted ones raise the rate slowly up to the card's. Accepted requests
are reported in batches, with the next slot request (one actor call per request in all).

The account is named by `account_key`: provider, endpoint and card. One actor per sweep
(`AccountPacers`, started by the driver on its node, ending with it) holds the pacers of all
the accounts the sweep's trials use, each created at its card's rate by its first request.
"""

from __future__ import annotations

import time
from typing import Any

from barapi.ratelimit import Pacer, RateLimiter

LIMITER_TIMEOUT = 60.0
"""Seconds a trial waits for a slot before taking the limiter as unreachable."""
LATE = 0.5
"""A request that wakes up more than this many slot intervals after its slot (a busy CPU)
claims a new slot rather than leave next to the following trial's request, which the
provider would count as a burst; at most `LATE_RETRIES` times, then it goes."""
LATE_RETRIES = 3


class AccountPacers:
    """The actor's state: one Pacer per account key, created at the account's card rate
    by its first request."""

    def __init__(self) -> None:
        self.pacers: dict[str, Pacer] = {}
        self.requests: dict[str, int] = {}

    def delay(self, key: str, rate: float, accepted: int = 0) -> tuple[float, float, int]:
        """Count `accepted` answers since the caller's last call, then claim a slot for the
        account `key` (card rate `rate`): (seconds to wait, current rate, throttles so far)."""
        pacer = self.pacers.get(key)
        if pacer is None:
            pacer = self.pacers[key] = Pacer(rate, rate)
        for _ in range(accepted):
            pacer.succeeded()
        self.requests[key] = self.requests.get(key, 0) + 1
        return pacer.delay(), pacer.rate, pacer.throttles

    def throttled(self, key: str) -> None:
        if key in self.pacers:
            self.pacers[key].throttled()

    def state(self) -> dict[str, dict[str, float]]:
        return {key: {"rate": p.rate, "ceiling": p.ceiling or 0.0, "throttles": p.throttles,
                      "requests": self.requests.get(key, 0)} for key, p in self.pacers.items()}


def account_key(provider: str, endpoint: str | None, card: str) -> str:
    """What identifies a provider account's rate limit."""
    return f"{provider}|{endpoint or 'default'}|{card}"


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose pacing is done, for the account `key` at the card's `rate`, by
    the sweep's limiter actor `handle`. If the actor cannot be reached, `acquire` raises
    SweepBudgetExhausted (nothing is sent)."""

    def __init__(self, handle: Any, key: str, rate: float) -> None:
        super().__init__(rate)
        self.handle, self.key, self.card_rate = handle, key, rate
        self._accepted = 0
        self._throttles = 0
        self.late = 0
        self.calls = 0
        self.seconds = 0.0

    @property
    def rate(self) -> float:
        return self.pacer.rate

    @property
    def throttles(self) -> int:
        return self._throttles

    async def acquire(self) -> None:
        import asyncio

        from barapi.sweep.ledger import SweepBudgetExhausted

        for attempt in range(LATE_RETRIES + 1):
            accepted, self._accepted = self._accepted, 0
            start = time.perf_counter()
            try:
                wait, rate, throttles = await asyncio.wait_for(
                    self.handle.delay.remote(self.key, self.card_rate, accepted), LIMITER_TIMEOUT)
            except Exception as exc:
                raise SweepBudgetExhausted(f"the sweep's rate limiter cannot be reached "
                                           f"({type(exc).__name__}); nothing is sent") from exc
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start
            self.pacer.rate, self._throttles = rate, throttles
            slot = time.monotonic() + wait
            if wait > 0:
                await self.sleep(wait)
            if rate <= 0 or time.monotonic() - slot <= LATE / rate or attempt == LATE_RETRIES:
                return
            self.late += 1

    def throttled(self) -> None:
        self._throttles += 1
        self.handle.throttled.remote(self.key)

    def succeeded(self) -> None:
        self._accepted += 1


def start_limiters(name: str, namespace: str) -> Any:
    """The sweep's limiter actor, named `name`, pinned to this (the driver's) node; it
    lives as long as the driver, like the wallet."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    handle: Any = ray.remote(AccountPacers).options(
        name=name, namespace=namespace, num_cpus=0, max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    ray.get(handle.state.remote())
    return handle
