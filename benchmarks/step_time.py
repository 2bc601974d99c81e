"""Wall time of a BAR training step split into black-box (model) time and barapi's own time.

    python -m benchmarks.step_time [--steps 10] [--quick]

Runs the default configuration (digits, local EfficientNet-Lite0 at 112 px, minibatch 20,
q = 10: 220 queried images a step) without evaluation, timing every adapter call. barapi's
time is everything else in a step: composing and 8-bit encoding the perturbed programs,
the query layer, losses, the gradient estimate, the optimisers, the head and checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi import api
from barapi.adapters.base import Adapter
from benchmarks.common import markdown_table, write_results


class TimedAdapter(Adapter):
    """Forwards to an adapter and records (images, seconds) of every call."""

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner
        self.labels, self.max_batch = inner.labels, inner.max_batch
        self.card, self.identity = inner.card, inner.identity
        self.calls: list[tuple[int, float]] = []

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        start = time.perf_counter()
        probs = await self.inner.predict_proba(images)
        self.calls.append((len(images), time.perf_counter() - start))
        return probs


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {"device": "cpu", "evaluate": False, "epochs": 1,
                                "per_class": 2 * args.steps}  # 20 per step: `steps` steps
    if args.quick:
        settings.update(canvas=32, window=16, input_size=32, resolution=4, q=2, per_class=4)
    config = api.make_config(**settings)
    adapter = TimedAdapter(api.open_adapter(config))
    with tempfile.TemporaryDirectory() as tmp:
        result = api.train(config, adapter=adapter, runs_root=Path(tmp))
        assert result.run_dir is not None
        records = [r for r in api.RunFolder.open(result.run_dir).metrics() if r["event"] == "step"]
    steps = len(records)
    wall = records[-1]["elapsed"]
    model = sum(seconds for _, seconds in adapter.calls[1:])  # calls[0]: the probe's query
    images = sum(n for n, _ in adapter.calls[1:])
    row = {"steps": steps, "images_per_step": images / steps, "wall_s_per_step": wall / steps,
           "model_s_per_step": model / steps, "barapi_s_per_step": (wall - model) / steps,
           "barapi_share": (wall - model) / wall}
    shown = {**row, **{k: f"{row[k]:.3f}" for k in row if k.endswith("_per_step")}}
    print(markdown_table([shown], [("steps", "steps"), ("images_per_step", "images/step"),
                                 ("wall_s_per_step", "wall s/step"),
                                 ("model_s_per_step", "model s/step"),
                                 ("barapi_s_per_step", "barapi s/step"),
                                 ("barapi_share", "barapi share")]))
    if not args.quick:
        command = "python -m benchmarks.step_time " + " ".join(argv or sys.argv[1:])
        print(f"wrote {write_results('step_time', [row], command)}")
    return [row]


if __name__ == "__main__":
    main()
