"""The calibration sweep behind barapi's default BAR settings (digits, EfficientNet-Lite0 at
112 px, canvas 112, m = 4, frequency mapping, Adam unless stated).

    python -m benchmarks.calibrate --stage grid  [--device cuda] [--workers 8]
    python -m benchmarks.calibrate --stage seeds [--device cuda] [--workers 12]

`grid`: 24 settings (one seed), every BAR run given about 60,000 billable images (epochs
rounded to fit); `seeds`: the best candidates over seeds 0, 1, 2. Runs in parallel processes;
on a 2-core CPU expect hours, on one H100 about 5 minutes per stage. Writes
benchmarks/results/calibration_<stage>.json. Settings are spelled out in full, so the sweep
does not drift when the defaults change.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks.common import write_results

IMAGES = 60_000
BASE = {"input_size": 112, "canvas": 112, "m": 4, "mapping": "frequency", "optimizer": "adam",
        "directions": "gaussian", "batch": 20, "resolution": 8, "q": 10, "lr": 0.05,
        "beta": 0.05, "two_sided": False, "loss": "focal"}


def grid() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = [{"method": "zero-shot"}, {"method": "ar", "epochs": 5},
                                  {"method": "ar", "epochs": 5, "resolution": None}]
    for res, q, lr, beta, two in [
        (8, 10, 0.05, 0.05, False), (8, 10, 0.02, 0.05, False), (8, 10, 0.1, 0.05, False),
        (4, 10, 0.05, 0.05, False), (4, 10, 0.1, 0.05, False), (16, 10, 0.05, 0.05, False),
        (8, 5, 0.05, 0.05, False), (8, 20, 0.05, 0.05, False), (8, 10, 0.05, 0.1, False),
        (8, 10, 0.05, 0.02, False), (8, 10, 0.05, 0.05, True), (4, 10, 0.05, 0.05, True),
        (8, 10, 0.05, 0.1, True), (16, 20, 0.05, 0.05, True), (8, 40, 0.05, 0.05, False),
    ]:
        runs.append({"resolution": res, "q": q, "lr": lr, "beta": beta, "two_sided": two})
    runs += [{"optimizer": "sgd"}, {"m": 10}, {"m": 1}, {"loss": "ce"}, {"batch": 10},
             {"batch": 50}]
    return runs


def seeds() -> list[dict[str, Any]]:
    candidates = [{}, {"loss": "ce"}, {"loss": "ce", "lr": 0.02}, {"loss": "ce", "q": 20},
                  {"loss": "ce", "beta": 0.1, "two_sided": True},
                  {"loss": "ce", "resolution": 4, "lr": 0.1},
                  {"method": "zero-shot"}, {"method": "ar", "epochs": 5, "loss": "ce"}]
    return [{**c, "seed": s} for s in (0, 1, 2) for c in candidates]


def with_budget(settings: dict[str, Any]) -> dict[str, Any]:
    """Full settings, BAR runs given epochs worth about IMAGES billable images."""
    config = {**BASE, **settings}
    if config.get("method", "bar") == "bar" and "epochs" not in config:
        variants = 2 * config["q"] if config["two_sided"] else config["q"] + 1
        per_epoch = 1257 * variants  # digits training split at the default fractions
        config["epochs"] = max(1, round(IMAGES / per_epoch))
    return config


def run_one(settings: dict[str, Any]) -> dict[str, Any]:
    from barapi import api

    start = time.monotonic()
    session = api.prepare(api.make_config(**settings))
    result = session.run()
    return {"settings": settings, "test_accuracy": result.test_accuracy,
            "zero_shot": result.zero_shot_accuracy, "best_val_accuracy": result.best_val_accuracy,
            "best_step": result.extra["best_step"], "steps": result.steps,
            "images": session.service.stats.billed_images, "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=["grid", "seeds"], default="grid")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    configs = [{**with_budget(c), "device": args.device}
               for c in (grid() if args.stage == "grid" else seeds())]
    rows = []
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(run_one, configs):
            print(json.dumps(row), flush=True)
            rows.append(row)
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        key = json.dumps({k: v for k, v in row["settings"].items() if k not in ("seed", "device")})
        groups[key].append(row["test_accuracy"])
    for key, values in groups.items():
        print(f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}  n={len(values)}  {key}")
    command = "python -m benchmarks.calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(f"calibration_{args.stage}", rows, command)
    return rows


if __name__ == "__main__":
    main()
