"""Azure Custom Vision: the official SDK (msrest, blocking) against barapi's httpx transport,
both against the loopback emulator, same images, one run.

    python -m benchmarks.azure_transport [--images 200] [--quick]

Measures sequential and concurrent (8 in flight; the SDK through a thread pool) images/s,
and what each does with a throttling answer (429 + Retry-After).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.emulate import AzureEmulator, Faults
from barapi.keys import Secret
from barapi.wire import encode_png
from benchmarks.common import markdown_table, write_results
from benchmarks.loopback import NumpyModel

KEY = "benchmark-key"


def sdk_client(port: int) -> Any:
    from azure.cognitiveservices.vision.customvision.prediction import (
        CustomVisionPredictionClient,
    )
    from msrest.authentication import ApiKeyCredentials

    credentials = ApiKeyCredentials(in_headers={"Prediction-key": KEY})
    return CustomVisionPredictionClient(f"http://127.0.0.1:{port}", credentials)


def sdk_rate(port: int, pngs: list[bytes], workers: int) -> float:
    client = sdk_client(port)

    def one(data: bytes) -> None:
        client.classify_image_with_no_store("p", "i", io.BytesIO(data))

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, pngs))
    return len(pngs) / (time.perf_counter() - start)


async def httpx_rate(port: int, images: np.ndarray, concurrency: int) -> float:
    adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["a", "b"],
                                       endpoint=f"http://127.0.0.1:{port}")
    slots = asyncio.Semaphore(concurrency)

    async def one(image: np.ndarray) -> None:
        async with slots:
            await adapter.predict_proba(image[None])

    start = time.perf_counter()
    await asyncio.gather(*(one(im) for im in images))
    rate = len(images) / (time.perf_counter() - start)
    await adapter.aclose()
    return rate


def throttled_behaviour(images: np.ndarray) -> dict[str, str]:
    with AzureEmulator(NumpyModel(), KEY, ["a", "b"], Faults(max_rps=0.5)) as emulator:
        client = sdk_client(emulator.port)
        client.classify_image_with_no_store("p", "i", io.BytesIO(encode_png(images[0])))
        try:
            client.classify_image_with_no_store("p", "i", io.BytesIO(encode_png(images[1])))
            sdk = "no error raised"
        except Exception as exc:
            sdk = f"{type(exc).__name__}: {str(exc)[:80]}"
        adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["a", "b"],
                                           endpoint=f"http://127.0.0.1:{emulator.port}")
        try:
            asyncio.run(adapter.predict_proba(images[2:3]))
            ours = "no error raised"
        except Exception as exc:
            ours = f"{type(exc).__name__}(retry_after={getattr(exc, 'retry_after', None)})"
    return {"sdk_on_429": sdk, "httpx_on_429": ours}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 16 if args.quick else args.images
    images = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    pngs = [encode_png(im) for im in images]
    rows = []
    with AzureEmulator(NumpyModel(), KEY, ["a", "b"]) as emulator:
        for concurrency in (1, 8):
            sdk = sdk_rate(emulator.port, pngs, concurrency)
            ours = asyncio.run(httpx_rate(emulator.port, images, concurrency))
            rows.append({"in_flight": concurrency, "sdk_img_s": sdk, "httpx_img_s": ours,
                         "httpx_over_sdk": ours / sdk})
    behaviour = throttled_behaviour(images)
    print(markdown_table(rows, [("in_flight", "requests in flight"), ("sdk_img_s", "SDK img/s"),
                                ("httpx_img_s", "httpx img/s"), ("httpx_over_sdk", "httpx / SDK")]))
    print(f"on a 429: SDK raised {behaviour['sdk_on_429']}; httpx adapter raised "
          f"{behaviour['httpx_on_429']}")
    if not args.quick:
        given = argv if argv is not None else sys.argv[1:]
        command = "python -m benchmarks.azure_transport " + " ".join(given)
        print(f"wrote {write_results('azure_transport', rows, command, **behaviour)}")
    return rows


if __name__ == "__main__":
    main()
