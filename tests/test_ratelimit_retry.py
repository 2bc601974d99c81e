import asyncio
import random

import pytest

from barapi.errors import FatalProviderError, TransientError
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_requests_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, clock=clock, sleep=clock.sleep)

    async def scenario() -> list[float]:
        times = []
        for _ in range(5):
            await limiter.acquire()
            times.append(clock.now)
        return times

    times = asyncio.run(scenario())
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def make_policy(clock: FakeClock, **kw: float) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, rng=random.Random(0), **kw)  # type: ignore[arg-type]


def test_transient_errors_are_retried_honouring_retry_after() -> None:
    clock = FakeClock()
    outcomes: list[Exception | None] = [TransientError("429", retry_after=7.0),
                                        TransientError("503"), None]

    async def flaky() -> str:
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome
        return "ok"

    assert asyncio.run(make_policy(clock, base=1.0).call(flaky)) == "ok"
    assert clock.sleeps[0] == 7.0
    assert 0 <= clock.sleeps[1] <= 2.0  # full jitter on attempt 2


def test_retry_after_is_capped() -> None:
    clock = FakeClock()
    calls = 0

    async def throttled() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("429", retry_after=3600)

    with pytest.raises(TransientError):
        asyncio.run(make_policy(clock, attempts=3, cap=5.0).call(throttled))
    assert calls == 3 and clock.sleeps == [5.0, 5.0]


@pytest.mark.parametrize("error", [FatalProviderError("401 invalid key"), ValueError("bug")])
def test_fatal_errors_are_never_retried(error: Exception) -> None:
    clock = FakeClock()
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        asyncio.run(make_policy(clock).call(fails))
    assert calls == 1 and clock.sleeps == []


def test_cancellation_is_not_retried() -> None:
    clock = FakeClock()

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(make_policy(clock).call(cancelled))
    assert clock.sleeps == []
