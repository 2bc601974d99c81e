import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import LinearSoftmaxAdapter

from barapi.budget import Budget
from barapi.cache import ProbabilityCache
from barapi.errors import BudgetExhausted, InputsFailed, InvalidAnswer, PartialAnswer, TransientError
from barapi.query import QueryService
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy


async def no_sleep(_: float) -> None:
    return None


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_splits_into_requests_of_at_most_the_batch_limit() -> None:
    adapter = LinearSoftmaxAdapter(max_batch=16)
    service = QueryService(adapter)
    x = images(50)
    probs = asyncio.run(service.predict_proba(x))
    assert sorted(adapter.calls) == [2, 16, 16, 16]
    direct = asyncio.run(LinearSoftmaxAdapter(max_batch=64).predict_proba(x))
    assert np.allclose(probs, direct)
    assert service.stats.requests == 4 and service.stats.billed_images == 50


def test_cached_answers_cost_nothing(tmp_path: Path) -> None:
    adapter = LinearSoftmaxAdapter()
    cache = ProbabilityCache(tmp_path)
    service = QueryService(adapter, Budget(price_per_1000=2.0, limit=1.0), cache)
    x = images(20)
    first = asyncio.run(service.predict_proba(x))
    spent = service.budget.spent
    assert spent == pytest.approx(0.04)
    mixed = np.concatenate([x[:10], images(5, seed=1)])
    second = asyncio.run(service.predict_proba(mixed))
    assert np.array_equal(second[:10], first[:10])
    assert service.budget.spent == pytest.approx(spent + 0.01)  # only the 5 new images
    assert service.stats.cached_images == 10 and adapter.calls == [20, 5]


def test_budget_exhaustion_stops_before_sending() -> None:
    adapter = LinearSoftmaxAdapter(max_batch=10)
    service = QueryService(adapter, Budget(price_per_1000=1000.0, limit=25.0), max_concurrency=1)
    with pytest.raises(BudgetExhausted):
        asyncio.run(service.predict_proba(images(40)))
    assert sum(adapter.calls) <= 25 and service.budget.spent <= 25.0


class Flaky(LinearSoftmaxAdapter):
    """Fails its first `failures` calls with `error`."""

    def __init__(self, error: Exception, failures: int = 2, **options: int) -> None:
        super().__init__(**options)
        self.error, self.failures = error, failures

    async def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.failures:
            self.failures -= 1
            raise self.error
        return await super().predict_proba(x)


def test_refusals_are_retried_and_not_billed() -> None:
    refused = TransientError("429 too many requests", billed=False, throttled=True)
    service = QueryService(Flaky(refused), Budget(price_per_1000=1.0, limit=1.0),
                           retry=RetryPolicy(sleep=no_sleep))
    asyncio.run(service.predict_proba(images(4)))
    assert service.stats.attempts == 3 and service.stats.billed_images == 4
    assert service.budget.spent == pytest.approx(0.004) and service.budget.uncertain_images == 0


@pytest.mark.parametrize("error", [TransientError("503 after the body left"), TimeoutError("read"),
                                   ConnectionResetError("lost after sending")])
def test_unknown_outcomes_are_billed_before_the_retry(error: Exception, tmp_path: Path) -> None:
    budget = Budget(price_per_1000=1.0, limit=1.0, ledger=tmp_path / "ledger.jsonl")
    service = QueryService(Flaky(error, failures=1), budget, retry=RetryPolicy(sleep=no_sleep))
    if isinstance(error, TransientError):
        asyncio.run(service.predict_proba(images(4)))
        assert budget.spent == pytest.approx(0.008)  # the lost attempt and the answered one
    else:  # not a provider error: not retried, but still counted
        with pytest.raises(type(error)):
            asyncio.run(service.predict_proba(images(4)))
        assert budget.spent == pytest.approx(0.004)
    assert budget.uncertain_images == 4
    assert Budget(price_per_1000=1.0, ledger=tmp_path / "ledger.jsonl").uncertain_images == 4


def test_throttling_alone_never_uses_up_the_attempts() -> None:
    throttled = TransientError("11005 CONN_THROTTLED", billed=False, throttled=True)
    limiter = RateLimiter(10.0, sleep=no_sleep)
    service = QueryService(Flaky(throttled, failures=25), Budget(price_per_1000=1.0, limit=1.0),
                           limiter=limiter, retry=RetryPolicy(attempts=3, sleep=no_sleep))
    asyncio.run(service.predict_proba(images(4)))
    assert service.budget.spent == pytest.approx(0.004)
    assert limiter.rate < 10.0 and limiter.throttles == 25


def test_wrong_answer_shape_is_billed_and_retried() -> None:
    class Broken(LinearSoftmaxAdapter):
        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            self.calls.append(len(x))
            return np.zeros((len(x), 3), dtype=np.float32)

    adapter = Broken()
    service = QueryService(adapter, Budget(price_per_1000=1.0, limit=1.0),
                           retry=RetryPolicy(attempts=2, sleep=no_sleep))
    with pytest.raises(TransientError, match="returned shape"):
        asyncio.run(service.predict_proba(images(2)))
    assert adapter.calls == [2, 2] and service.budget.spent == pytest.approx(0.004)


BAD_ROWS = {"nan": np.nan, "inf": np.inf, "negative": -0.5, "all zero": 0.0, "unnormalised": 0.5}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_invalid_answers_are_billed_never_cached_asked_once_more(kind: str, tmp_path: Path) -> None:
    class Liar(LinearSoftmaxAdapter):
        lies = 1

        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            probs = await super().predict_proba(x)
            if self.lies:
                self.lies -= 1
                probs[-1] = BAD_ROWS[kind]
            return probs

    adapter = Liar()
    cache = ProbabilityCache(tmp_path / "cache")
    service = QueryService(adapter, Budget(price_per_1000=1000.0, limit=100.0), cache)
    probs = asyncio.run(service.predict_proba(images(3)))
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert adapter.calls == [3, 1]  # the bad row alone was asked again
    assert service.budget.spent == pytest.approx(4.0)  # the bad answer was paid for
    adapter.lies = 2  # now it lies twice about input 1
    with pytest.raises(InvalidAnswer, match="twice"):
        asyncio.run(service.predict_proba(images(3, seed=5)))
    fresh = QueryService(LinearSoftmaxAdapter(), Budget(price_per_1000=1000.0, limit=100.0), cache)
    asyncio.run(fresh.predict_proba(images(3, seed=5)))
    assert fresh.stats.cached_images == 2  # the good answers were kept, the bad one was not


def test_each_request_is_cached_as_it_returns(tmp_path: Path) -> None:
    """A batch whose last request never returns (a kill) keeps the answers of the others."""
    class Hangs(LinearSoftmaxAdapter):
        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            if len(self.calls) == 2:
                self.calls.append(len(x))
                await asyncio.sleep(3600)
            return await super().predict_proba(x)

    adapter = Hangs(max_batch=10)
    cache = ProbabilityCache(tmp_path)
    service = QueryService(adapter, Budget(price_per_1000=1000.0, limit=100.0), cache,
                           max_concurrency=1)
    x = images(30)

    async def killed() -> None:
        task = asyncio.create_task(service.predict_proba(x))
        # the third request hangs; the first two have settled (their answers written: on a
        # loaded machine the second one's write may still be pending when the third starts)
        while len(adapter.calls) < 3 or service.stats.requests < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(killed())
    cache.close()  # what an interrupted run does on its way out: pending writes finish
    assert len(cache) == 20
    assert service.budget.spent == pytest.approx(30.0)  # the request in flight counts as billed
    # and the user is told why it is uncertain in words (issue 31: not "CancelledError: ")
    assert service.budget.uncertain_reasons == {"the run was interrupted with it in flight": 1}


class Mixed(LinearSoftmaxAdapter):
    """Every input in `failing` fails (MIXED_STATUS) for its first `times` asks."""

    def __init__(self, failing: set[int], times: int, **options: int) -> None:
        super().__init__(**options)
        self.failing, self.times, self.asked = failing, times, 0

    async def predict_proba(self, x: np.ndarray) -> np.ndarray:
        probs = await super().predict_proba(x)
        ok = np.ones(len(x), bool)
        for i in range(len(x)):
            key = int(x[i, 0, 0, 0]) if self.asked else i
            if key in self.failing and self.times:
                ok[i] = False
        if self.asked == 0:
            self.first = x.copy()
        self.asked += 1
        if not ok.all():
            self.times -= 1
            raise PartialAnswer("mixed", probs, ok, ["30002 input failed" if not o else "" for o in ok])
        return probs


def test_failed_inputs_are_asked_again_and_the_run_continues() -> None:
    x = images(10)
    x[:, 0, 0, 0] = np.arange(10)  # inputs tell their index
    adapter = Mixed({2, 7}, times=3)
    service = QueryService(adapter, Budget(price_per_1000=1000.0, limit=100.0),
                           retry=RetryPolicy(sleep=no_sleep))
    probs = asyncio.run(service.predict_proba(x))
    assert np.allclose(probs, asyncio.run(LinearSoftmaxAdapter().predict_proba(x)), atol=1e-6)
    assert service.budget.spent == pytest.approx(10.0)  # failed inputs are not billed


def test_inputs_that_keep_failing_stop_with_their_indices_and_reasons() -> None:
    x = images(10)
    x[:, 0, 0, 0] = np.arange(10)
    service = QueryService(Mixed({4}, times=100), Budget(price_per_1000=1000.0, limit=100.0),
                           retry=RetryPolicy(input_attempts=3, sleep=no_sleep))
    with pytest.raises(InputsFailed, match=r"input 4: 30002 input failed"):
        asyncio.run(service.predict_proba(x))
    assert service.budget.spent == pytest.approx(9.0)


def test_requests_respect_the_byte_limit_at_worst_case_png_size() -> None:
    from barapi.wire import encode_png, worst_case_png_bytes

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_png(noise)) <= worst_case_png_bytes(noise.shape)
    adapter = LinearSoftmaxAdapter(max_batch=64)
    limit = 5 * worst_case_png_bytes((64, 64, 3)) + 10
    service = QueryService(adapter, max_bytes=limit)
    asyncio.run(service.predict_proba(np.repeat(noise[None], 12, axis=0)))
    assert adapter.calls == [5, 5, 2]


def test_paid_answers_are_cached_even_when_another_request_fails(tmp_path: Path) -> None:
    class FailsOnce(LinearSoftmaxAdapter):
        failed = False

        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            if len(self.calls) == 1 and not self.failed:  # the second request of the batch
                self.failed = True
                raise ValueError("connection reset")
            return await super().predict_proba(x)

    adapter = FailsOnce(max_batch=10)
    service = QueryService(adapter, Budget(price_per_1000=1000.0, limit=100.0),
                           ProbabilityCache(tmp_path), max_concurrency=1)
    x = images(30)
    with pytest.raises(ValueError):
        asyncio.run(service.predict_proba(x))
    paid = service.budget.spent
    asyncio.run(service.predict_proba(x))
    assert service.stats.cached_images == 20  # the two answered requests were kept
    assert service.budget.spent == pytest.approx(paid + 10.0)  # only the failed one is re-sent


class SlowCache(ProbabilityCache):
    """A real cache whose writes take 0.2 s to commit (a busy disk, a shared SQLite lock)."""

    def _set_many(self, keys: list[str], values: np.ndarray) -> None:
        time.sleep(0.2)
        super()._set_many(keys, values)


class Watched(Budget):
    """A Budget that, as each outcome line is written, notes how many answers another
    process opening the cache folder would find: what a kill -9 at that instant leaves."""

    def __init__(self, folder: Path, ledger: Path) -> None:
        super().__init__(price_per_1000=1000.0, limit=100.0, ledger=ledger)
        self.folder, self.kept_at_outcome = folder, []

    def _append(self, entry: dict[str, object], sync: bool = False,
                terminate_only: bool = False) -> None:
        if entry.get("outcome") in ("answered", "partial"):
            elsewhere = ProbabilityCache(self.folder)
            self.kept_at_outcome.append((entry["outcome"], len(elsewhere)))
            elsewhere.close()
        super()._append(entry, sync, terminate_only)


@pytest.mark.parametrize("adapter", [LinearSoftmaxAdapter(), Mixed({1}, times=1)],
                         ids=["answered", "partial"])
def test_a_request_is_settled_only_once_its_answers_are_committed_to_the_cache(
        adapter: LinearSoftmaxAdapter, tmp_path: Path) -> None:
    """The ledger's outcome line says "paid and kept": a kill -9 after it must not lose the
    answers (else a resume pays for them again while the ledger shows nothing in flight,
    as CI once saw after a sweep's driver was killed: 36 images paid twice, none uncertain)."""
    budget = Watched(tmp_path / "cache", tmp_path / "ledger.jsonl")
    service = QueryService(adapter, budget, SlowCache(tmp_path / "cache"),
                           retry=RetryPolicy(sleep=no_sleep))
    asyncio.run(service.predict_proba(images(3)))
    partial = [("partial", 2)] if isinstance(adapter, Mixed) else []  # input 1 fails once
    expected = [*partial, ("answered", 3)]
    assert budget.kept_at_outcome == expected


def test_learned_labels_are_kept_before_their_request_is_settled(tmp_path: Path) -> None:
    class Tags(LinearSoftmaxAdapter):
        async def discover_labels(self, image: np.ndarray) -> list[str]:
            return ["tag-a", "tag-b"]

    ledger = tmp_path / "ledger.jsonl"
    service = QueryService(Tags(), Budget(price_per_1000=1000.0, limit=100.0, ledger=ledger))
    seen: list[str] = []

    def keep(labels: list[str]) -> None:
        seen.append(ledger.read_text())
        assert labels == ["tag-a", "tag-b"]

    assert asyncio.run(service.discover_labels(images(1)[0], keep=keep)) == ["tag-a", "tag-b"]
    assert '"sent"' in seen[0] and '"outcome"' not in seen[0]  # kept while still in flight
    assert '"outcome": "answered"' in ledger.read_text()


def stored_rows(folder: Path, adapter: LinearSoftmaxAdapter, x: np.ndarray) -> list[str]:
    """Buy answers for `x` into the cache at `folder`; their keys."""
    from barapi.cache import cache_identity, image_keys

    cache = ProbabilityCache(folder)
    asyncio.run(QueryService(adapter, cache=cache).predict_proba(x))
    cache.close()
    adapter.calls.clear()
    return image_keys(cache_identity(adapter), x)


def tamper(folder: Path, key: str, kind: str, width: int) -> None:
    """Replace the stored answer under `key`: through the cache's own write path (values),
    or as plain diskcache stores (bytes, a pickle)."""
    import diskcache

    if kind in ("garbage bytes", "pickle"):
        value = (os.urandom(8 + 4 * width) if kind == "garbage bytes"
                 else np.full(width, 1 / width, np.float32))
        with diskcache.Cache(str(folder)) as raw:
            raw.set(key, value)
        return
    row = np.full((1, width - (kind == "short row")), 1 / width, np.float32)
    row[0, 0] = {"nan": np.nan, "negative": -0.5, "above 1": 1.5}.get(kind, row[0, 0])
    if kind == "all zero":
        row[:] = 0
    if kind == "unnormalised":
        row *= 0.5
    cache = ProbabilityCache(folder)
    asyncio.run(cache.set_many([key], row))
    cache.close()


TAMPERED = ["nan", "negative", "above 1", "all zero", "unnormalised", "short row",
            "garbage bytes", "pickle"]


@pytest.mark.parametrize("kind", TAMPERED)
def test_a_bad_stored_answer_is_a_miss_bought_once_reported_once_and_replaced(
        kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache hit is validated like a fresh answer: a bad one is asked again (paid, within
    the budget), one line says so for the whole run, and the fresh answer replaces it."""
    adapter, folder = LinearSoftmaxAdapter(), tmp_path / "cache"
    x, y = images(3), images(2, seed=1)
    keys = stored_rows(folder, adapter, np.concatenate([x, y]))
    truth = asyncio.run(LinearSoftmaxAdapter().predict_proba(np.concatenate([x, y])))
    tamper(folder, keys[1], kind, adapter.n_sources)
    tamper(folder, keys[3], kind, adapter.n_sources)
    budget = Budget(price_per_1000=1000.0, limit=100.0)
    service = QueryService(adapter, budget, ProbabilityCache(folder))
    with caplog.at_level("WARNING", logger="barapi.cache"):
        got = [asyncio.run(service.predict_proba(batch)) for batch in (x, y, np.concatenate([x, y]))]
    assert adapter.calls == [1, 1] and budget.spent == pytest.approx(2.0)
    assert np.allclose(got[2], truth, atol=1e-6) and np.array_equal(got[2], np.concatenate(got[:2]))
    assert service.cache is not None and service.cache.bad_entries == 2
    assert len(caplog.records) == 1, caplog.records  # once per run, not once per batch
    assert caplog.records[0].getMessage() == (
        f"answer cache {folder}: 1 stored answer(s) are not valid answers (damaged or tampered); "
        f"they are asked again, within the budget, and replaced")


def test_a_bad_stored_answer_is_bought_again_only_within_the_budget(tmp_path: Path) -> None:
    adapter, folder = LinearSoftmaxAdapter(), tmp_path / "cache"
    keys = stored_rows(folder, adapter, images(3))
    tamper(folder, keys[0], "nan", adapter.n_sources)
    budget = Budget(price_per_1000=1000.0, limit=0.5)  # less than one image
    service = QueryService(adapter, budget, ProbabilityCache(folder))
    with pytest.raises(BudgetExhausted):
        asyncio.run(service.predict_proba(images(3)))
    assert adapter.calls == [] and budget.spent == 0


def brim_full(folder: Path) -> None:
    """A cache that can take no more pages: SQLite's real "database or disk is full", as on
    a full disk (its page count capped by a pragma that diskcache applies on every open), for
    answers of 1,000 classes (each needs a new page)."""
    import sqlite3

    cache = ProbabilityCache(folder)
    asyncio.run(cache.set_many(["seed"], np.full((1, 20), 0.05, np.float32)))
    cache.close()
    with sqlite3.connect(folder / "cache.db") as con:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute("INSERT INTO Settings VALUES ('sqlite_max_page_count', ?)", (pages,))


def test_a_priced_cache_that_cannot_write_stops_before_the_next_paid_request(tmp_path: Path) -> None:
    """On a full disk answers that cannot be kept would be bought again later: the request
    that could not be kept returns its answers, and nothing more is paid."""
    from barapi.budget import read_ledger
    from barapi.errors import CacheUnusable

    folder, ledger = tmp_path / "cache", tmp_path / "ledger.jsonl"
    brim_full(folder)
    adapter = LinearSoftmaxAdapter(n_sources=1000, max_batch=10)
    budget = Budget(price_per_1000=1000.0, limit=100.0, ledger=ledger)
    service = QueryService(adapter, budget, ProbabilityCache(folder), max_concurrency=1)
    x = images(10)
    answered = asyncio.run(service.predict_proba(x))  # one request: answered, not kept
    assert np.allclose(answered, asyncio.run(LinearSoftmaxAdapter(1000).predict_proba(x)), atol=1e-6)
    for batch in (images(30, seed=1), x):
        with pytest.raises(CacheUnusable) as caught:
            asyncio.run(service.predict_proba(batch))
        assert adapter.calls == [10]
    message = str(caught.value)
    assert message.startswith(f"answer cache {folder}: cannot write it (OperationalError: "
                              f"database or disk is full); stopped before the next paid request")
    assert "--no-cache" in message and "\n" not in message
    totals = read_ledger(ledger)
    assert totals.images == 10 and totals.uncertain_images == 0 and budget.spent == pytest.approx(10.0)

    stopped = QueryService(adapter, Budget(price_per_1000=1000.0, limit=100.0),
                           SlowCache(folder), max_concurrency=1)  # fails 0.2 s after the answer
    with pytest.raises(CacheUnusable):  # within one batch: its second request never leaves
        asyncio.run(stopped.predict_proba(images(30, seed=2)))
    assert adapter.calls == [10, 10] and stopped.budget.spent == pytest.approx(10.0)


def test_a_free_cache_that_cannot_write_is_one_warning_and_the_run_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    folder = tmp_path / "cache"
    brim_full(folder)
    adapter = LinearSoftmaxAdapter(n_sources=1000, max_batch=10)
    service = QueryService(adapter, cache=ProbabilityCache(folder, priced=False))
    with caplog.at_level("WARNING", logger="barapi.cache"), warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(2):
            asyncio.run(service.predict_proba(images(30, seed=seed)))
    assert adapter.calls == [10] * 6
    assert [r.getMessage() for r in caplog.records] == [
        f"answer cache {folder}: cannot write it (OperationalError: database or disk is full); "
        f"going on without the cache"]


def test_a_priced_cache_that_cannot_be_read_stops_the_batch_before_it_is_paid(tmp_path: Path) -> None:
    """Unchecked when opened (a cache handed in), damaged cache.db: nothing is bought again."""
    from barapi.errors import CacheUnusable

    folder = tmp_path / "cache"
    stored_rows(folder, LinearSoftmaxAdapter(), images(3))
    (folder / "cache.db").write_bytes(b"\xff" * 4096)
    adapter = LinearSoftmaxAdapter()
    budget = Budget(price_per_1000=1000.0, limit=100.0)
    service = QueryService(adapter, budget, ProbabilityCache(folder))
    with pytest.raises(CacheUnusable, match=r"cannot read it .*--no-cache"):
        asyncio.run(service.predict_proba(images(3)))
    assert adapter.calls == [] and budget.spent == 0
