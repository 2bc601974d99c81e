"""The query layer's cost: achieved request rate against a rate-limited loopback endpoint,
and its overhead against calling an adapter directly with the same batches.

    python -m benchmarks.scheduler [--quick]

Goals (issue: QueryService): achieved rate ≥ 0.95 of the limit with no 429s; through a local
adapter, QueryService no slower than direct calls (time ratio ≈ 1).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

from barapi.budget import Budget
from barapi.cache import ProbabilityCache
from barapi.query import QueryService
from barapi.ratelimit import RateLimiter
from benchmarks.common import markdown_table, write_results
from benchmarks.loopback import LoopbackAdapter, NumpyModel, RateLimitedEndpoint


async def achieved_rate(rate: float, seconds: float, per_request: int) -> dict[str, float]:
    with RateLimitedEndpoint(rate) as endpoint:
        adapter = LoopbackAdapter(endpoint.port, max_batch=per_request)
        service = QueryService(adapter, Budget(price_per_1000=1.2, limit=100.0),
                               limiter=RateLimiter(rate), max_concurrency=8)
        n = int(rate * seconds) * per_request
        images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        await service.predict_proba(images)
        await adapter.aclose()
        span = endpoint.last - endpoint.first
        achieved = (endpoint.accepted - 1) / span if span > 0 else float("nan")
        assert endpoint.images == service.stats.billed_images  # the endpoint's count = barapi's
        return {"limit_rps": rate, "requests": endpoint.accepted, "achieved_rps": achieved,
                "ratio": achieved / rate, "rejected_429": endpoint.rejected,
                "billed_images": service.stats.billed_images, "dollars": service.budget.spent}


async def overhead(adapter_name: str, batches: int, batch: int, size: int,
                   cached: bool = False) -> dict[str, Any]:
    """Median time of one batch through QueryService against the adapter called directly.
    `cached`: with the answer cache on (each batch new, so every answer is looked up, written
    and committed before its request is settled)."""
    if adapter_name == "local":
        from barapi.adapters.local import create

        adapter = create(model="efficientnet-lite0", device="cpu", input_size=size)
    else:
        adapter = NumpyModel(n_sources=20, max_batch=batch)
    folder = tempfile.TemporaryDirectory() if cached else None
    cache = ProbabilityCache(folder.name) if folder is not None else None
    service = QueryService(adapter, Budget(price_per_1000=0.0), cache)
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(batches)]
    await adapter.predict_proba(data[0])  # warm-up
    direct, through = [], []
    for x in data:  # interleaved, so drift on a shared machine hits both alike
        start = time.perf_counter()
        await adapter.predict_proba(x)
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        await service.predict_proba(x)
        through.append(time.perf_counter() - start)
    if cache is not None and folder is not None:
        cache.close()
        folder.cleanup()
    d, t = statistics.median(direct), statistics.median(through)
    return {"adapter": adapter_name + (" + cache" if cached else ""), "images_per_call": batch,
            "direct_ms": d * 1e3, "service_ms": t * 1e3, "time_ratio": t / d,
            "overhead_us_per_image": (t - d) / batch * 1e6}


def main(argv: list[str] | None = None) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else 15.0
    limits = (20.0,) if args.quick else (2.0, 10.0, 20.0)
    rates = [asyncio.run(achieved_rate(r, seconds, 16)) for r in limits]
    costs = [asyncio.run(overhead("numpy", 5 if args.quick else 50, 220, 32, cached))
             for cached in (False, True)]
    if not args.quick:
        costs.append(asyncio.run(overhead("local", 10, 220, 112)))
    print(markdown_table(rates, [("limit_rps", "limit req/s"), ("achieved_rps", "achieved req/s"),
                                 ("ratio", "ratio"), ("requests", "requests"),
                                 ("rejected_429", "429s"), ("billed_images", "billed images")]))
    print()
    print(markdown_table(costs, [("adapter", "adapter"), ("images_per_call", "images/call"),
                                 ("direct_ms", "direct ms"), ("service_ms", "QueryService ms"),
                                 ("time_ratio", "time ratio"),
                                 ("overhead_us_per_image", "overhead µs/image")]))
    if not args.quick:
        command = "python -m benchmarks.scheduler " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"wrote {write_results('scheduler', rates + costs, command)}")
    return rates, costs


if __name__ == "__main__":
    main()
