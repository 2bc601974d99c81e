import asyncio
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barapi.budget import Budget
from barapi.errors import BudgetExhausted, TransientError


def test_reserve_commit_release_in_exact_nanodollars(tmp_path: Path) -> None:
    budget = Budget(price_per_1000=1.20, limit=1.0, ledger=tmp_path / "ledger.jsonl")
    cost = budget.reserve(128)
    assert budget.left == pytest.approx(1.0 - 0.1536)
    budget.commit(cost, 128)
    budget.release(budget.reserve(10))
    assert budget.spent == pytest.approx(0.1536) and budget.reserved_nano == 0
    assert budget.affordable_images() == (1_000_000_000 - 153_600_000) // 1_200_000


def test_nothing_is_reserved_beyond_the_limit() -> None:
    budget = Budget(price_per_1000=2.0, limit=0.01)  # exactly 5 images
    budget.reserve(3)
    with pytest.raises(BudgetExhausted, match=r"\$0\.01"):
        budget.reserve(3)
    budget.reserve(2)


def test_ledger_survives_a_restart_and_is_user_only(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    first = Budget(price_per_1000=2.0, limit=5.0, ledger=ledger)
    first.commit(first.reserve(100), 100)
    second = Budget(price_per_1000=2.0, limit=5.0, ledger=ledger)
    assert second.spent == pytest.approx(0.2) and second.spent_images == 100
    assert os.stat(ledger).st_mode & 0o777 == 0o600
    assert json.loads(ledger.read_text().splitlines()[0])["images"] == 100


def test_provider_refusal_is_released_unknown_failure_is_committed() -> None:
    budget = Budget(price_per_1000=1000.0, limit=100.0)

    async def scenario() -> None:
        with pytest.raises(TransientError):
            async with budget.reservation(5):
                raise TransientError("429")
        assert budget.spent == 0
        with pytest.raises(TimeoutError):
            async with budget.reservation(5):
                raise TimeoutError  # may have reached the provider: counted
        assert budget.spent == pytest.approx(5.0)

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=40),
       failures=st.lists(st.sampled_from(["ok", "refused", "lost"]), min_size=40, max_size=40),
       limit=st.floats(0.0, 2.0), delays=st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_budget_is_never_exceeded_under_concurrency(sizes: list[int], failures: list[str],
                                                    limit: float, delays: list[int]) -> None:
    budget = Budget(price_per_1000=20.0, limit=limit)
    peak = 0

    async def request(i: int, n: int) -> None:
        nonlocal peak
        try:
            async with budget.reservation(n):
                peak = max(peak, budget.spent_nano + budget.reserved_nano)
                for _ in range(delays[i]):
                    await asyncio.sleep(0)
                if failures[i] == "refused":
                    raise TransientError("503")
                if failures[i] == "lost":
                    raise ConnectionError
        except (BudgetExhausted, TransientError, ConnectionError):
            pass

    async def main() -> None:
        await asyncio.gather(*(request(i, n) for i, n in enumerate(sizes)))

    asyncio.run(main())
    assert peak <= round(limit * 1e9)
    assert budget.spent <= limit + 1e-12 and budget.reserved_nano == 0
