"""Images/s through each cloud adapter against its loopback emulator, at its card's rate.

    python -m benchmarks.providers [--seconds 10] [--quick]

The emulators answer from a cheap numpy stand-in model here (the point is the transport
and scheduling, not the model: Clarifai's card allows 15 requests/s × 128 images, more than
EfficientNet-Lite0 does on a CPU). Reports achieved requests/s as a ratio to the card's
limit (goal ≥ 0.95), and the emulator's billed images beside barapi's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np

from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.api import make_service
from barapi.cards import load_card
from barapi.emulate import AzureEmulator, ClarifaiEmulator
from barapi.keys import Secret
from benchmarks.common import markdown_table, write_results
from benchmarks.loopback import NumpyModel

BENCH_BUDGET = 100.0
"""Dollars each provider's row may spend (emulated: nothing is paid; an explicit cap all the
same, as for any priced card)."""


KEY = "benchmark-key"


def row(name: str, card: Any, requests: int, span: float, billed: int, ours: int) -> dict[str, Any]:
    achieved = (requests - 1) / span
    return {"provider": name, "card": card.name, "limit_rps": card.requests_per_second,
            "achieved_rps": achieved, "ratio": achieved / card.requests_per_second,
            "images_per_s": ours / span, "emulator_billed": billed, "barapi_billed": ours}


async def clarifai(seconds: float) -> dict[str, Any]:
    emulator = ClarifaiEmulator(NumpyModel(), KEY)
    port = await emulator.start()
    adapter = ClarifaiAdapter(key=Secret(KEY), endpoint=f"127.0.0.1:{port}", insecure=True)
    card = load_card(adapter.card)
    service = make_service(adapter, BENCH_BUDGET, card=card)
    n = int(seconds * card.requests_per_second) * card.max_images_per_request
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    start = time.monotonic()
    await service.predict_proba(x)
    span = time.monotonic() - start
    await adapter.aclose()
    await emulator.stop()
    return row("clarifai", card, service.stats.requests, span, emulator.counters.billed_images,
               service.stats.billed_images)


async def azure(seconds: float) -> dict[str, Any]:
    with AzureEmulator(NumpyModel(), KEY, ["a", "b"]) as emulator:
        adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["a", "b"],
                                           endpoint=f"http://127.0.0.1:{emulator.port}")
        card = load_card(adapter.card)
        service = make_service(adapter, BENCH_BUDGET, card=card)
        service.max_concurrency = 8
        n = int(seconds * card.requests_per_second)
        x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        start = time.monotonic()
        await service.predict_proba(x)
        span = time.monotonic() - start
        await adapter.aclose()
    return row("azure (no-store)", card, service.stats.requests, span,
               emulator.counters.billed_images, service.stats.billed_images)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    rows = [asyncio.run(clarifai(seconds)), asyncio.run(azure(seconds))]
    print(markdown_table(rows, [("provider", "provider"), ("limit_rps", "card req/s"),
                                ("achieved_rps", "achieved req/s"), ("ratio", "ratio"),
                                ("images_per_s", "images/s"), ("emulator_billed", "emulator billed"),
                                ("barapi_billed", "barapi billed")]))
    if not args.quick:
        command = "python -m benchmarks.providers " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"wrote {write_results('providers', rows, command)}")
    return rows


if __name__ == "__main__":
    main()
