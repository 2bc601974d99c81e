"""One rate limit per provider account, shared by every trial of a sweep, on every node.

A Ray actor per account holds one `barapi.ratelimit.Pacer` (the same AIMD logic a single run
uses): each request of each trial asks it for a departure slot and sleeps until then, so
that N trials together leave at the card's rate, not N times it. A throttled answer slows
every trial down; accepted ones raise the rate slowly up to the card's. Accepted requests
are reported in batches, with the next slot request (one actor call per request in all).

The account is named by `account_key`: provider, endpoint and card. Limiters are detached
actors named after the sweep, created by the first trial that needs one and removed by the
driver at the end.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from barapi.ratelimit import Pacer, RateLimiter

LIMITER_TIMEOUT = 60.0
"""Seconds a trial waits for a slot before taking the limiter as unreachable."""


class AccountPacer:
    """The actor's state: a Pacer at `rate` requests per second, rising to `ceiling`."""

    def __init__(self, rate: float, ceiling: float | None = None) -> None:
        self.pacer = Pacer(rate, ceiling)
        self.requests = 0

    def delay(self, accepted: int = 0) -> tuple[float, float, int]:
        """Count `accepted` answers since the caller's last call, then claim a slot:
        (seconds to wait, current rate, throttles so far)."""
        for _ in range(accepted):
            self.pacer.succeeded()
        self.requests += 1
        return self.pacer.delay(), self.pacer.rate, self.pacer.throttles

    def throttled(self) -> None:
        self.pacer.throttled()

    def state(self) -> dict[str, float]:
        return {"rate": self.pacer.rate, "ceiling": self.pacer.ceiling or 0.0,
                "throttles": self.pacer.throttles, "requests": self.requests}


def account_key(provider: str, endpoint: str | None, card: str) -> str:
    """What identifies a provider account's rate limit."""
    return f"{provider}|{endpoint or 'default'}|{card}"


def limiter_name(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose pacing is done by the account's actor `handle`. If the actor
    cannot be reached, `acquire` raises SweepBudgetExhausted (nothing is sent)."""

    def __init__(self, handle: Any, rate: float) -> None:
        super().__init__(rate)
        self.handle = handle
        self._accepted = 0
        self._throttles = 0
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

        accepted, self._accepted = self._accepted, 0
        start = time.perf_counter()
        try:
            wait, rate, throttles = await asyncio.wait_for(
                self.handle.delay.remote(accepted), LIMITER_TIMEOUT)
        except Exception as exc:
            raise SweepBudgetExhausted(f"the sweep's rate limiter cannot be reached "
                                       f"({type(exc).__name__}); nothing is sent") from exc
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start
        self.pacer.rate, self._throttles = rate, throttles
        if wait > 0:
            await self.sleep(wait)

    def throttled(self) -> None:
        self._throttles += 1
        self.handle.throttled.remote()

    def succeeded(self) -> None:
        self._accepted += 1


def account_limiter(prefix: str, namespace: str, key: str, rate: float) -> Any:
    """The handle of the account's limiter actor, created at `rate` if it does not exist."""
    import ray

    actor = ray.remote(AccountPacer).options(
        name=limiter_name(prefix, key), namespace=namespace, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_concurrency=1)
    return actor.remote(rate, rate)


def remove_limiters(prefix: str, namespace: str) -> None:
    """Kill the limiter actors of the sweep named by `prefix` (the end of a sweep)."""
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == namespace and entry.get("name", "").startswith(prefix):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=namespace))
            except ValueError:
                continue
