import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import LinearSoftmaxAdapter

from barapi.budget import Budget
from barapi.cache import ProbabilityCache
from barapi.errors import BudgetExhausted, TransientError
from barapi.query import QueryService
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


def test_transient_failures_are_retried_and_not_billed() -> None:
    class Flaky(LinearSoftmaxAdapter):
        failures = 2

        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            if self.failures:
                self.failures -= 1
                raise TransientError("503 unavailable")
            return await super().predict_proba(x)

    service = QueryService(Flaky(), Budget(price_per_1000=1.0, limit=1.0),
                           retry=RetryPolicy(sleep=no_sleep))
    asyncio.run(service.predict_proba(images(4)))
    assert service.stats.attempts == 3 and service.stats.billed_images == 4
    assert service.budget.spent == pytest.approx(0.004)


def test_wrong_answer_shape_is_an_error() -> None:
    class Broken(LinearSoftmaxAdapter):
        async def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.zeros((len(x), 3), dtype=np.float32)

    with pytest.raises(ValueError, match="returned shape"):
        asyncio.run(QueryService(Broken()).predict_proba(images(2)))


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
