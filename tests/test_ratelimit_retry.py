import asyncio
import os
import random
from pathlib import Path

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


def storms(limiter: RateLimiter, clock: FakeClock, count: int = 12) -> None:
    """`count` short 429 storms: each two seconds of throttled requests, then two requests
    accepted at the current rate."""
    for _ in range(count):
        for _ in range(20):
            limiter.throttled()
            clock.now += 0.1
        for _ in range(2):
            clock.now += 1 / limiter.rate
            limiter.succeeded()


def test_the_learned_rate_recovers_to_the_card_once_throttling_stops() -> None:
    """Issue 29 item 14: twelve short storms drive the rate far down; a minute without a
    throttle brings it back to the card, however low it fell."""
    from barapi.ratelimit import FLOOR, RECOVERY_SECONDS

    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, clock=clock, sleep=clock.sleep)
    storms(limiter, clock)
    assert limiter.rate < 2.0 and limiter.throttles == 240
    start = clock.now
    while clock.now - start < RECOVERY_SECONDS:  # quiet: every request accepted
        clock.now += 1 / limiter.rate
        limiter.succeeded()
    assert limiter.rate == 10.0
    limiter.throttled()  # and it still slows down when told to
    assert FLOOR <= limiter.rate < 10.0


def test_a_resume_starts_from_the_learned_rate_recovered_for_the_time_since(
        tmp_path: Path) -> None:
    """Issue 29 item 14: the rate kept in the run folder for resumes does not ratchet down:
    a resume an hour later starts at the card's rate, one at once from the learned rate."""
    import json
    import time

    from barapi.ratelimit import RECOVERY_SECONDS, recovered_rate
    from barapi.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    folder.write_record(requests_per_second=0.8, rate_saved_at=time.time() - 3600)
    assert folder.learned_rate(10.0) == 10.0
    folder.write_record(requests_per_second=0.8, rate_saved_at=time.time() + 5)  # just saved
    assert folder.learned_rate(10.0) == 0.8
    (tmp_path / "budget.json").write_text(json.dumps({"requests_per_second": 0.8}))
    old = time.time() - 2 * RECOVERY_SECONDS  # saved before the field: budget.json's time
    os.utime(tmp_path / "budget.json", (old, old))
    assert folder.learned_rate(10.0) == 10.0
    assert recovered_rate(0.8, 10.0, RECOVERY_SECONDS / 2) == pytest.approx(5.8)
    (tmp_path / "budget.json").unlink()
    assert folder.learned_rate(10.0) is None  # nothing learned: the card's rate


def test_a_rate_learned_on_a_card_without_a_limit_recovers_too(tmp_path: Path) -> None:
    """A provider with no stated limit that once throttled: a resume starts at the learned
    rate and climbs back to the rate taken on that first throttle, instead of staying put."""
    import time

    from barapi.ratelimit import RECOVERY_SECONDS, UNLIMITED_START
    from barapi.run_folder import RunFolder

    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, ceiling=0.0, clock=clock, sleep=clock.sleep)
    clock.now += RECOVERY_SECONDS
    limiter.succeeded()
    assert limiter.rate == UNLIMITED_START
    folder = RunFolder(tmp_path)
    folder.write_record(requests_per_second=2.0, rate_saved_at=time.time() - 3600)
    assert folder.learned_rate(0.0) == UNLIMITED_START
