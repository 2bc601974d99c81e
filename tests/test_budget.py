import asyncio
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barapi.budget import Budget, format_dollars, read_ledger
from barapi.errors import (
    BudgetExhausted,
    ConfigError,
    FatalProviderError,
    LedgerDamaged,
    PartialAnswer,
    TransientError,
)


def test_reserve_send_settle_in_exact_nanodollars(tmp_path: Path) -> None:
    budget = Budget(price_per_1000=1.20, limit=1.0, ledger=tmp_path / "ledger.jsonl")
    ticket = budget.reserve(128)
    assert budget.left == pytest.approx(1.0 - 0.1536)
    budget.send(ticket)
    budget.settle(ticket, "answered")
    budget.release(budget.reserve(10))
    assert budget.spent == pytest.approx(0.1536) and budget.reserved_nano == 0
    assert budget.affordable_images() == (1_000_000_000 - 153_600_000) // 1_200_000


def test_nothing_is_reserved_beyond_the_limit() -> None:
    budget = Budget(price_per_1000=2.0, limit=0.01)  # exactly 5 images
    budget.reserve(3)
    with pytest.raises(BudgetExhausted, match=r"\$0\.01"):
        budget.reserve(3)
    budget.reserve(2)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_nonsense_limits_and_prices_are_refused(value: float) -> None:
    with pytest.raises(ConfigError):
        Budget(price_per_1000=1.0, limit=value)
    with pytest.raises(ConfigError):
        Budget(price_per_1000=value)


def test_ledger_survives_a_restart_and_is_user_only(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    first = Budget(price_per_1000=2.0, limit=5.0, ledger=ledger)
    ticket = first.reserve(100)
    first.send(ticket)
    first.settle(ticket, "answered")
    second = Budget(price_per_1000=2.0, limit=5.0, ledger=ledger)
    assert second.spent == pytest.approx(0.2) and second.spent_images == 100
    assert second.uncertain_images == 0
    assert os.stat(ledger).st_mode & 0o777 == 0o600
    assert json.loads(ledger.read_text().splitlines()[0])["images"] == 100


def test_a_request_in_flight_at_a_crash_counts_as_billed_and_uncertain(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    crashed = Budget(price_per_1000=10.0, limit=5.0, ledger=ledger)
    crashed.send(crashed.reserve(7))  # the process dies before the answer
    after = Budget(price_per_1000=10.0, limit=5.0, ledger=ledger)
    assert after.spent_images == 7 and after.uncertain_images == 7
    assert after.spent == pytest.approx(0.07)


def test_a_torn_last_line_is_billed_and_later_lines_still_parse(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    budget = Budget(price_per_1000=10.0, limit=5.0, ledger=ledger)
    budget.settle(budget.reserve(4), "answered")
    line = json.dumps({"images": 9, "nanodollars": 90_000_000, "id": 2, "sent": 1.0})
    with ledger.open("a") as handle:
        handle.write(line[:40])  # a crash mid-write: no newline, no closing brace
    again = Budget(price_per_1000=10.0, limit=5.0, ledger=ledger)
    assert again.spent_images == 13 and again.uncertain_images == 9
    again.settle(again.reserve(1), "answered")  # appended on a line of its own
    assert Budget(price_per_1000=10.0, ledger=ledger).spent_images == 14


def test_lines_removed_from_the_middle_are_noticed(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    budget = Budget(price_per_1000=10.0, limit=5.0, ledger=ledger)
    for _ in range(4):
        budget.settle(budget.reserve(2), "answered")
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines[:2] + lines[4:]) + "\n")  # request 2 is gone
    with pytest.raises(LedgerDamaged, match="repair-ledger"):
        Budget(price_per_1000=10.0, ledger=ledger)
    assert read_ledger(ledger, allow_gaps=True).images == 6


def test_ledgers_of_the_old_format_still_count(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"time": 1.0, "images": 128, "nanodollars": 153600000}\n')
    assert Budget(price_per_1000=1.2, ledger=ledger).spent_images == 128


def test_outcomes_decide_what_is_billed() -> None:
    budget = Budget(price_per_1000=1000.0, limit=100.0)

    async def request(error: BaseException | None, send: bool = True) -> None:
        with pytest.raises(type(error)) if error is not None else _nothing():
            async with budget.reservation(5) as ticket:
                if send:
                    budget.send(ticket)
                if error is not None:
                    raise error

    async def scenario() -> None:
        await request(TransientError("429", billed=False, throttled=True))  # provider refused
        assert budget.spent == 0
        await request(TransientError("cannot connect (not sent)", billed=False))
        assert budget.spent == 0
        await request(ConfigError("request could not be built"))
        assert budget.spent == 0
        await request(FatalProviderError("401 key"))
        assert budget.spent == 0
        await request(TimeoutError(), send=False)  # never left: released
        assert budget.spent == 0
        await request(TimeoutError())  # may have reached the provider: counted
        assert budget.spent == pytest.approx(5.0) and budget.uncertain_images == 5
        await request(TransientError("503 after the body left"))
        assert budget.spent == pytest.approx(10.0) and budget.uncertain_images == 10
        import numpy as np
        await request(PartialAnswer("mixed", np.zeros((5, 2)), np.array([1, 1, 0, 0, 1], bool)))
        assert budget.spent == pytest.approx(13.0)
        await request(None)
        assert budget.spent == pytest.approx(18.0) and budget.uncertain_images == 10
        assert budget.reserved_nano == 0

    asyncio.run(scenario())


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


@pytest.mark.parametrize(("amount", "text"), [(0.004, "$0.004"), (0, "$0.00"), (1.5, "$1.50"),
                                              (1234.5678, "$1,234.5678"), (0.0000012, "$0.0000012")])
def test_amounts_print_with_enough_decimals_to_be_true(amount: float, text: str) -> None:
    assert format_dollars(amount) == text


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
            async with budget.reservation(n) as ticket:
                budget.send(ticket)
                peak = max(peak, budget.spent_nano + budget.reserved_nano)
                for _ in range(delays[i]):
                    await asyncio.sleep(0)
                if failures[i] == "refused":
                    raise TransientError("429", billed=False)
                if failures[i] == "lost":
                    raise ConnectionError
        except (BudgetExhausted, TransientError, ConnectionError):
            pass

    async def main() -> None:
        await asyncio.gather(*(request(i, n) for i, n in enumerate(sizes)))

    asyncio.run(main())
    assert peak <= round(limit * 1e9)
    assert budget.spent <= limit + 1e-12 and budget.reserved_nano == 0


def test_uncertain_spend_is_counted_with_its_reason_and_read_back(tmp_path: Path) -> None:
    """Issue 29 item 13: how much is uncertain, and why, survives the ledger."""
    from barapi.budget import IN_FLIGHT, reason_kind, uncertain_note

    ledger = tmp_path / "ledger.jsonl"
    budget = Budget(price_per_1000=1000.0, limit=100.0, ledger=ledger)

    async def unavailable() -> None:
        with pytest.raises(TransientError):
            async with budget.reservation(2) as ticket:
                budget.send(ticket)
                raise TransientError("Clarifai gRPC UNAVAILABLE: emulated outage")

    for _ in range(3):
        asyncio.run(unavailable())
    budget.send(budget.reserve(1))  # in flight when the process ends
    assert budget.uncertain_reasons == {"Clarifai gRPC UNAVAILABLE": 3}
    again = Budget(price_per_1000=1000.0, ledger=ledger)
    assert again.uncertain_nano == 7 * 10**9 and again.uncertain_images == 7
    assert again.uncertain_reasons == {"Clarifai gRPC UNAVAILABLE": 3, reason_kind(IN_FLIGHT): 1}
    assert again.uncertain_requests == 4
    note = uncertain_note(again.uncertain_nano, again.uncertain_reasons)
    assert note.startswith("$7.00 of it uncertain: 3 requests (Clarifai gRPC UNAVAILABLE), "
                           "1 request (in flight when its process ended)")
    assert "may not have billed" in note and "docs/method.md" in note
    assert uncertain_note(0, {}) == ""


def full_disk(monkeypatch: pytest.MonkeyPatch, after_bytes: int = 0) -> list[int]:
    """From now on, os.write in barapi's safe writes writes at most `after_bytes` bytes in
    all, then fails as a full disk does (ENOSPC). Returns the list of bytes written."""
    import errno

    import barapi.checkpoint as safe

    real, written = os.write, [0]

    def write(fd: int, data: bytes) -> int:
        room = after_bytes - written[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = real(fd, data[:room])
        written[0] += done
        return done

    monkeypatch.setattr(safe.os, "write", write)
    return written


def test_a_full_disk_at_the_sent_line_sends_nothing_and_leaves_no_torn_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29 item 10: the request whose ledger line cannot be written never leaves, and
    the ledger stays exact (a partly written line is cut back)."""
    from barapi.errors import WriteFailed

    ledger = tmp_path / "ledger.jsonl"
    budget = Budget(price_per_1000=1000.0, limit=100.0, ledger=ledger)
    budget.settle(budget.reserve(3), "answered")
    before = ledger.read_bytes()
    full_disk(monkeypatch, after_bytes=20)  # half a line fits
    left = []

    async def request() -> None:
        async with budget.reservation(5) as ticket:
            budget.send(ticket)
            left.append(ticket)  # the request would leave here

    with pytest.raises(WriteFailed, match=f"{ledger}: cannot write \\(No space left on device\\)"):
        asyncio.run(request())
    assert not left and ledger.read_bytes() == before
    assert budget.spent_nano == 3 * 10**9 and budget.reserved_nano == 0
    assert read_ledger(ledger).spent_nano == 3 * 10**9


def test_a_full_disk_at_the_outcome_line_keeps_the_request_billed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29 item 10: a request that left and whose outcome cannot be written stays
    counted as billed (uncertain), in memory as in the ledger read back."""
    from barapi.errors import WriteFailed

    ledger = tmp_path / "ledger.jsonl"
    budget = Budget(price_per_1000=1000.0, limit=100.0, ledger=ledger)

    async def request() -> None:
        async with budget.reservation(5) as ticket:
            budget.send(ticket)
            full_disk(monkeypatch)  # the answer came back; now the disk is full
            raise TransientError("Clarifai gRPC UNAVAILABLE: lost", billed=False)

    with pytest.raises(WriteFailed):
        asyncio.run(request())
    back = read_ledger(ledger)
    assert budget.spent_nano == back.spent_nano == 5 * 10**9
    assert budget.uncertain_nano == back.uncertain_nano == 5 * 10**9
