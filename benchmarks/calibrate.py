"""The calibration sweep behind barapi's default BAR settings (digits, EfficientNet-Lite0 at
112 px, canvas 112, m = 4, frequency mapping, Adam unless stated).

    python -m benchmarks.calibrate --stage grid  [--device cuda] [--workers 8]
    python -m benchmarks.calibrate --stage seeds [--device cuda] [--workers 12]
    python -m benchmarks.calibrate --stage few-output [--workers 2]

`grid`: 24 settings (one seed), every BAR run given about 60,000 billable images (epochs
rounded to fit); `seeds`: the best candidates over seeds 0, 1, 2; `few-output`: barapi's
linear-head BAR on Clarifai Moderation's 5 outputs (the emulator's folded model, called
in-process) on shirt vs T-shirt, candidate changes to the defaults over seeds 0, 1, 2. A
stage resumes: runs already in its JSON are kept, only missing settings run (rows with
`average` or `per_sample` come from two options that lost there and were then deleted:
iterate averaging and per-sample directions). Runs in parallel processes; on a 2-core CPU
expect hours, on one H100 about 5 minutes per stage. Writes
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

from benchmarks.common import RESULTS, write_results

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


FEW_OUTPUT = {"box": "moderation", "dataset": "@fashion", "classes": "Shirt,T-shirt/top",
              "per_class": 100, "m": 1}


def few_output() -> list[dict[str, Any]]:
    candidates: list[dict[str, Any]] = [
        {}, {"lr": 0.02}, {"decay": 0.7}, {"two_sided": True, "q": 5}, {"q": 20, "batch": 10},
        {"resolution": 4}, {"head_lr": 0.001}, {"epochs": 12}, {"method": "ar"},
        {"patience": 4}, {"beta": 0.02}, {"epochs": 24, "patience": 0}, {"patience": 0}]
    return [{**FEW_OUTPUT, **c, "seed": s} for s in (0, 1, 2) for c in candidates]


def with_budget(settings: dict[str, Any]) -> dict[str, Any]:
    """Full settings, BAR runs given epochs worth about IMAGES billable images."""
    if "box" in settings:
        return settings  # barapi's defaults plus the candidate change
    config = {**BASE, **settings}
    if config.get("method", "bar") == "bar" and "epochs" not in config:
        variants = 2 * config["q"] if config["two_sided"] else config["q"] + 1
        per_epoch = 1257 * variants  # digits training split at the default fractions
        config["epochs"] = max(1, round(IMAGES / per_epoch))
    return config


def run_one(settings: dict[str, Any]) -> dict[str, Any]:
    from barapi import api

    start = time.monotonic()
    values, adapter = dict(settings), None
    if "box" in values:
        from benchmarks.suite import folded_white_box, with_dataset

        box = values.pop("box")
        values = with_dataset(values)
        adapter = folded_white_box(box, values.get("input_size", 112))
    session = api.prepare(api.make_config(**values), adapter=adapter, use_cache=False)
    result = session.run()
    return {"settings": settings, "test_accuracy": result.test_accuracy,
            "zero_shot": result.zero_shot_accuracy, "best_val_accuracy": result.best_val_accuracy,
            "best_step": result.extra["best_step"], "steps": result.steps,
            "images": session.service.stats.billed_images, "seconds": time.monotonic() - start}


def without_device(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "device"}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=["grid", "seeds", "few-output"], default="grid")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    configs = [{**with_budget(c), "device": args.device}
               for c in {"grid": grid, "seeds": seeds, "few-output": few_output}[args.stage]()]
    done = RESULTS / f"calibration_{args.stage}.json"
    rows = json.loads(done.read_text())["rows"] if done.exists() else []
    ran = [without_device(r["settings"]) for r in rows]
    todo = [c for c in configs if without_device(c) not in ran]
    print(f"{len(rows)} runs read back from {done}, {len(todo)} to run", file=sys.stderr)
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(run_one, todo):
            print(json.dumps(row), flush=True)
            rows.append(row)
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        key = json.dumps({k: v for k, v in without_device(row["settings"]).items() if k != "seed"})
        groups[key].append(row["test_accuracy"])
    for key, values in groups.items():
        print(f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}  n={len(values)}  {key}")
    command = "python -m benchmarks.calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(f"calibration_{args.stage}", rows, command)
    return rows


if __name__ == "__main__":
    main()
