"""Local adapter images/s against a raw batched forward of the same model, same run.

    python -m benchmarks.adapter_speed [--device cpu|cuda] [--quick]

Ratios (adapter / raw) are what to compare across machines; a CPU row also shows why the
adapter splits requests into passes of 8 images (`chunk`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from barapi.adapters.local import create
from benchmarks.common import markdown_table, write_results


def images_per_second(fn: Callable[[], object], n_images: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_images / statistics.median(times)


def measure(device: str, size: int, batch: int, repeats: int) -> list[dict[str, float]]:
    adapter = create(model="efficientnet-lite0", device=device, input_size=size)
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    model = adapter._model
    tensor = torch.randn(batch, 3, size, size, device=adapter.device)
    tensor = tensor.contiguous(memory_format=torch.channels_last)

    def raw() -> None:
        with torch.inference_mode():
            model(tensor).softmax(dim=1).cpu()

    loop = asyncio.new_event_loop()
    rows = []
    raw_speed = images_per_second(raw, batch, repeats)
    for chunk in (adapter.chunk,) if adapter.device.type == "cuda" else (8, 32, batch):
        adapter.chunk = chunk
        speed = images_per_second(lambda: loop.run_until_complete(adapter.predict_proba(x)),
                                  batch, repeats)
        rows.append({"device": adapter.device.type, "input_px": size, "request_images": batch,
                     "chunk": chunk, "adapter_img_s": speed, "raw_forward_img_s": raw_speed,
                     "ratio": speed / raw_speed})
    loop.close()
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (CI)")
    args = parser.parse_args(argv)
    sizes, batch, repeats = ((32,), 22, 1) if args.quick else ((112, 224), 220, 5)
    rows: list[dict[str, float]] = []
    for size in sizes:
        rows += measure(args.device, size, batch, repeats)
    table = markdown_table(rows, [("device", "device"), ("input_px", "input px"),
                                  ("request_images", "images/request"), ("chunk", "pass size"),
                                  ("adapter_img_s", "adapter img/s"),
                                  ("raw_forward_img_s", "raw forward img/s"), ("ratio", "ratio")])
    print(table)
    if not args.quick:
        path = write_results(f"adapter_speed_{rows[0]['device']}", rows,
                             "python -m benchmarks.adapter_speed " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
