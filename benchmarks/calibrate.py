"""The calibration sweep behind barapi's default BAR settings (digits, EfficientNet-Lite0 at
112 px, canvas 112, m = 4, frequency mapping, Adam unless stated).

    python -m benchmarks.calibrate --stage grid  [--device cuda --gpus-per-trial 0.125]
    python -m benchmarks.calibrate --stage seeds [--max-concurrent 12] [--address auto]
    python -m benchmarks.calibrate --stage few-output
    python -m benchmarks.calibrate --stage wide --device cuda --gpus-per-trial 0.066
    python -m benchmarks.calibrate --stage wide --resume runs/calibration/SWEEP_DIR
    python -m benchmarks.calibrate --stage wide --table | --paired '{"batch": 5}' [--seeds 0-9]

`grid`: 24 settings (one seed), every BAR run given about 60,000 billable images (epochs
rounded to fit); `seeds`: the best candidates over seeds 0, 1, 2 (both from the label-map
era: they spell out the estimator's settings but not the head or early stopping, so a
rerun now would use today's defaults for those); `few-output`: linear-head BAR on Clarifai
Moderation's 5 outputs (the emulator's folded model, called in-process) on shirt vs
T-shirt, changes to the then-defaults over seeds 0, 1, 2; `wide`: the evidence behind the
defaults and the advice in docs/results.md, 5–10 seeds with 1,000-image test splits on three black
boxes (one H100: about 30 minutes over resumed calls; `--table` prints its docs/results.md table
from the JSON without running anything). `few-output` and `wide` spell out the defaults of
their time (SPELLED), so their rows keep their meaning; rows marked "stopping": "accuracy"
ran before `--patience` also counted a lower validation loss as progress, and rows with
`average` or `per_sample` come from options that lost and were then deleted (iterate
averaging, per-sample directions; in `wide`, `coarse_resolution`/`coarse_epochs`: c×c
random directions upsampled to k×k for the first epochs; `warmup`: the program's step
size rising linearly over the first epochs; `shaping`: a step's q differences minus their
mean ("center") or replaced by centred ranks ("rank"); `channels` 1: a grey program, one
value per position for R, G and B). Rows with `cma_sigma` are CMA-ES runs
(`benchmarks.cma_es`). A stage resumes: runs already in its JSON are kept, only missing
settings run. The runs go through `barapi sweep` (Ray Tune; `--address` joins a cluster):
the stage's missing rows become a spec (`runs/calibration/calibration_<stage>.toml`, a grid
over the row numbers, turned into settings by `sweep_hook`), each run an ordinary run folder
of the sweep, resumable with `--resume SWEEP_DIR` (or `barapi sweep --resume`). CMA-ES rows
are not barapi runs: they run after the sweep, one after the other, in this process. On a
2-core CPU expect hours. Writes benchmarks/results/calibration_<stage>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
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
    candidates: list[dict[str, Any]] = [
        {}, {"loss": "ce"}, {"loss": "ce", "lr": 0.02}, {"loss": "ce", "q": 20},
        {"loss": "ce", "beta": 0.1, "two_sided": True}, {"loss": "ce", "resolution": 4, "lr": 0.1},
        {"method": "zero-shot"}, {"method": "ar", "epochs": 5, "loss": "ce"}]
    return [{**c, "seed": s} for s in (0, 1, 2) for c in candidates]


SPELLED = {"resolution": 8, "epochs": 6, "patience": 2}
"""barapi's default program side, epochs and patience, spelled out in the few-output and
wide candidates so that their rows keep their meaning if the defaults change."""


def spelled(candidate: dict[str, Any]) -> dict[str, Any]:
    return candidate if candidate.get("method") == "zero-shot" else {**SPELLED, **candidate}


FEW_OUTPUT: dict[str, Any] = {"box": "moderation", "dataset": "@fashion",
                              "classes": "Shirt,T-shirt/top", "per_class": 100, "m": 1}


def few_output() -> list[dict[str, Any]]:
    candidates: list[dict[str, Any]] = [
        {}, {"lr": 0.02}, {"decay": 0.7}, {"two_sided": True, "q": 5}, {"q": 20, "batch": 10},
        {"resolution": 4}, {"head_lr": 0.001}, {"epochs": 12}, {"method": "ar"},
        {"patience": 4}, {"beta": 0.02}, {"epochs": 24, "patience": 0}, {"patience": 0},
        {"method": "ar", "resolution": 4}, {"method": "ar", "resolution": 2},
        {"resolution": 2}, {"resolution": 2, "patience": 0}, {"resolution": 4, "patience": 0}]
    return [{**FEW_OUTPUT, **spelled(c), "seed": s} for s in (0, 1, 2) for c in candidates]


FASHION_WIDE: dict[str, Any] = {"dataset": "@fashion-1000", "classes": "Shirt,T-shirt/top",
                                "per_class": 100, "m": 1, "val_fraction": 0.1,
                                "test_fraction": 0.5}
"""FEW_OUTPUT's task with 1,000 test and 200 validation images per seed (FEW_OUTPUT's 120
test images leave about ±4 points of sampling error on every accuracy, and its 60 validation
images decide early stopping by one or two images)."""


def wide() -> list[dict[str, Any]]:
    """Many seeds, large test splits: shirt vs T-shirt through Moderation and NSFW (10 seeds
    each) and through EfficientNet-Lite0's 1,000 outputs (10 seeds), digits on Lite0 (5
    seeds); then `minibatch()`'s additions, digits 0–4 through Moderation among them."""
    ar, k4, p0 = {"method": "ar"}, {"resolution": 4}, {"patience": 0}
    k4_12 = {**k4, "epochs": 12}
    moderation: list[dict[str, Any]] = [
        ar, {}, p0, {**k4, **p0}, {"method": "zero-shot"}, {"resolution": 2, **p0}, k4,
        {"resolution": 2}, {"epochs": 12, **p0}, {**k4_12, **p0},
        {"resolution": 2, "epochs": 12, **p0}, {**ar, **k4}, {**ar, "resolution": 2},
        {**k4, "q": 20, "batch": 10, **p0}, {**ar, "epochs": 12, **p0},
        {**ar, "epochs": 24, **p0}, {**ar, **k4_12, **p0}, {**ar, **k4, "epochs": 24, **p0},
        {**k4, "epochs": 24, **p0}, k4_12, {**k4_12, "patience": 4},
        {**k4_12, "q": 20, "batch": 10, **p0}, {**k4_12, **p0, "lr": 0.1},
        {**k4_12, **p0, "lr": 0.02}]
    nsfw: list[dict[str, Any]] = [
        {"method": "zero-shot"}, ar, {**ar, "epochs": 12, **p0}, {**ar, **k4_12, **p0}, {},
        k4_12, {**k4_12, **p0}]
    lite0: list[dict[str, Any]] = [
        ar, {}, k4_12, {**k4_12, **p0}, {"method": "zero-shot"}, {**ar, "epochs": 24, **p0}]
    runs = [{"box": box, **FASHION_WIDE, **spelled(c), "seed": s}
            for box, candidates in (("moderation", moderation), ("nsfw", nsfw), ("lite0", lite0))
            for s in range(10) for c in candidates]
    runs += [{"box": "lite0", "dataset": "digits", **spelled(c), "seed": s}
             for s in range(5) for c in lite0]
    return more_seeds() + minibatch() + runs


DIGITS_0_4: dict[str, Any] = {"box": "moderation", "dataset": "digits", "classes": "0,1,2,3,4",
                              "m": 1}
"""The suite's 5-class few-output task: digits 0–4 through Moderation's 5 outputs."""


Tasks = list[tuple[str, dict[str, Any], range]]
"""(black box, task settings, seeds) triples."""


def expand(blocks: list[tuple[Tasks, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Runs of (tasks, candidates) blocks in order: block by block, candidate by candidate,
    task by task, seed by seed (so that a sweep cut short keeps the earlier blocks whole)."""
    return [{"box": box, **task, **spelled(c), "seed": s}
            for tasks, candidates in blocks for c in candidates
            for box, task, seeds in tasks for s in seeds]


def minibatch() -> list[dict[str, Any]]:
    """Smaller minibatches at the same images per epoch (more steps, and more directions per
    image: q per B·(q + 1) images), and the suite's 5-class few-output task over 5 seeds, in
    order of priority so that a sweep cut short keeps the comparisons that matter."""
    shirts: Tasks = [(box, FASHION_WIDE, range(10)) for box in ("moderation", "nsfw")]
    digits: Tasks = [("moderation", DIGITS_0_4, range(5))]
    p0 = {"patience": 0}
    return expand([
        (shirts, [{"batch": 5}, {"method": "ar", "batch": 5}, {"batch": 2}, {"batch": 10}]),
        (digits, [{}, {"batch": 5}, {"method": "ar"}, {"method": "ar", "batch": 5},
                  {"batch": 2}, {"method": "zero-shot"}]),
        (shirts, [{"batch": 5, "epochs": 12}, {"method": "ar", "batch": 2}]),
        ([("lite0", FASHION_WIDE, range(10)), ("lite0", {"dataset": "digits"}, range(5))],
         [{"batch": 5}]),
        (digits, [{"resolution": 4, "epochs": 12}, {"method": "ar", "epochs": 12, **p0},
                  {"method": "ar", "resolution": 4, "epochs": 12, **p0}, p0,
                  {"patience": 4}]),
    ])


def more_seeds() -> list[dict[str, Any]]:
    """Two-sided differences at β = 0.02 and CMA-ES (`cma_sigma`: `benchmarks.cma_es` on the
    images of BAR without early stopping) on the three few-output tasks; then the default and
    AR on 10 more seeds of the shirt tasks and 5 more of digits 0–4 (20 and 10 in all)."""
    few: Tasks = [(box, FASHION_WIDE, range(10)) for box in ("moderation", "nsfw")] + [
        ("moderation", DIGITS_0_4, range(5))]
    more: Tasks = [(box, FASHION_WIDE, range(10, 20)) for box in ("moderation", "nsfw")] + [
        ("moderation", DIGITS_0_4, range(5, 10))]
    return expand([
        (few, [{"two_sided": True, "q": 5, "beta": 0.02}, {"cma_sigma": 0.05, "patience": 0}]),
        (more, [{}, {"method": "ar"}]),
    ])


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
    from benchmarks.suite import CELL_BUDGET

    start = time.monotonic()
    values, adapter = dict(settings), None
    if "cma_sigma" in values:
        import asyncio

        from benchmarks.cma_es import run as cma_run

        sigma, box, seed = values.pop("cma_sigma"), values.pop("box"), values.pop("seed")
        for key in ("patience", "method"):
            values.pop(key, None)  # CMA-ES runs every epoch and keeps the best validated mean
        row = asyncio.run(cma_run(values, sigma, seed, box))
        return {"settings": settings, "test_accuracy": row["test_accuracy"],
                "zero_shot": float("nan"), "best_val_accuracy": row["best_val_accuracy"],
                "best_step": None, "steps": None, "images": row["images"],
                "seconds": time.monotonic() - start}
    if "box" in values:
        from benchmarks.suite import folded_white_box, with_dataset

        box = values.pop("box")
        values = with_dataset(values)
        if box != "lite0":
            adapter = folded_white_box(box, values.get("input_size", 112),
                                       values.get("device", "cpu"))
    session = api.prepare(api.make_config(**values), adapter=adapter, use_cache=False,
                          budget=CELL_BUDGET)
    result = session.run()
    return {"settings": settings, "test_accuracy": result.test_accuracy,
            "zero_shot": result.zero_shot_accuracy, "best_val_accuracy": result.best_val_accuracy,
            "best_step": result.extra["best_step"], "steps": result.steps,
            "images": session.service.stats.billed_images, "seconds": time.monotonic() - start}


STAGES = {"grid": grid, "seeds": seeds, "few-output": few_output, "wide": wide}


TASK_KEYS = ("box", "dataset", "classes", "per_class", "m", "val_fraction", "test_fraction",
             "seed", "device")


def label(settings: dict[str, Any]) -> str:
    """A wide-stage candidate in words, e.g. "BAR k=4, 12 ep., patience 2"."""
    method = "cma-es" if "cma_sigma" in settings else settings.get("method", "bar")
    if method == "zero-shot":
        return "linear probe"
    patience = settings["patience"]
    stopping = "no early stop" if not patience else f"patience {patience}" + (
        " (accuracy only)" if "stopping" in settings else "")
    text = f"{method.upper()} k={settings['resolution']}, {settings['epochs']} ep., {stopping}"
    extra = {k: v for k, v in settings.items()
             if k not in (*TASK_KEYS, "method", "resolution", "epochs", "patience", "stopping")}
    return text + "".join(f", {k} {v}" for k, v in extra.items())


def grouped(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows by (black box, task, candidate label)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        s = row["settings"]
        task = ("shirt vs T-shirt" if s["dataset"] != "digits"
                else f"digits {s['classes']}" if "classes" in s else "digits")
        groups[(s["box"], task, label(s))].append(row)
    return groups


def standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per black box and task, each candidate's test accuracy (mean ± standard
    error over seeds) and mean billable images (test evaluations included)."""
    groups = grouped(rows)
    lines = ["| black box | task | setting | seeds | test acc. | ± s.e. | billable images |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (box, task, name), runs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], statistics.mean(r["test_accuracy"] for r in kv[1]))):
        accuracies = [r["test_accuracy"] for r in runs]
        error = standard_error(accuracies)
        images = statistics.mean(r["images"] for r in runs)
        lines.append(f"| {box} | {task} | {name} | {len(runs)} | {statistics.mean(accuracies):.1%}"
                     f" | {error:.1%} | {images:,.0f} |")
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Markdown: each candidate's test accuracy minus the baseline candidate's (changes to
    barapi's defaults, e.g. {} or {"batch": 5}) on the same black box, task and seed, mean ±
    standard error over the seeds both ran."""
    groups = grouped(rows)
    reference = label(spelled(baseline))
    lines = [f"Against {reference}:", "",
             "| black box | task | setting | seeds | difference | ± s.e. |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (box, task, name), runs in sorted(groups.items()):
        base = {r["settings"]["seed"]: r["test_accuracy"]
                for r in groups.get((box, task, reference), [])}
        diffs = [r["test_accuracy"] - base[r["settings"]["seed"]] for r in runs
                 if r["settings"]["seed"] in base]
        if name != reference and diffs:
            lines.append(f"| {box} | {task} | {name} | {len(diffs)} | "
                         f"{statistics.mean(diffs) * 100:+.1f} | {standard_error(diffs) * 100:.1f} |")
    return "\n".join(lines)


def seed_range(text: str) -> range:
    """"A-B" (or "A") → the seeds A to B, inclusive."""
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def without_device(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "device"}


def sweep_hook(values: dict[str, Any], build: bool) -> tuple[dict[str, Any], Any]:
    """The sweep's hook: a trial's values {"stage", "row", "device"} → (run settings, the
    black box: an emulated service's folded model as a local adapter, or None for
    EfficientNet-Lite0). `build` False: the settings only."""
    settings = with_budget(STAGES[values["stage"]]()[int(values["row"])])
    settings = {**settings, "device": values.get("device", "auto")}
    config = {k: v for k, v in settings.items() if k not in ("box", "cma_sigma")}
    box = settings.get("box")
    if box is not None:
        from benchmarks.suite import with_dataset

        config = with_dataset(config)
    adapter = None
    if build and box not in (None, "lite0"):
        from benchmarks.suite import folded_white_box

        adapter = folded_white_box(box, config.get("input_size", 112), config.get("device", "cpu"))
    return config, adapter


def sweep_spec(stage: str, rows: list[int], device: str, gpus: float, cpus: float) -> str:
    """The TOML spec of a calibration sweep over the stage's rows `rows`."""
    return "\n".join([
        "# written by python -m benchmarks.calibrate: the rows of a calibration stage, turned",
        "# into run settings by benchmarks.calibrate:sweep_hook (run from the repository root)",
        "[run]", f'stage = "{stage}"', f'device = "{device}"', "[grid]",
        f"row = {json.dumps(rows)}", "[sweep]", 'hook = "benchmarks.calibrate:sweep_hook"',
        f"cpus_per_trial = {cpus}", f"gpus_per_trial = {gpus}", "cache = false", ""])


def sweep_rows(stage: str, configs: list[dict[str, Any]], todo: list[int], args: Any) -> list[dict[str, Any]]:
    """Run the stage's rows `todo` (indices into `configs`) through `barapi sweep`; their
    results in this benchmark's row format."""
    import os

    from barapi.sweep import run_sweep

    # the trials import this module (the hook): Ray's workers started from this process
    # inherit its environment (on a cluster, start `ray start` with the same PYTHONPATH)
    repo = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    if args.resume is not None:
        result = run_sweep(resume=args.resume, address=args.address,
                           max_concurrent=args.max_concurrent)
    else:
        if not todo:
            return []
        root = Path(args.sweeps_dir)
        root.mkdir(parents=True, exist_ok=True)
        spec = root / f"calibration_{stage}.toml"
        spec.write_text(sweep_spec(stage, todo, args.device, args.gpus_per_trial,
                                   args.cpus_per_trial))
        print(f"barapi sweep {spec} --budget 0 --sweeps-dir {root}"
              + (f" --address {args.address}" if args.address else ""), file=sys.stderr)
        result = run_sweep(spec, 0.0, sweeps_dir=root, address=args.address,
                           max_concurrent=args.max_concurrent)
    found = []
    for row in result.rows:
        if row["status"] != "done":
            continue
        folder = Path(row["run_dir"])
        summary = json.loads((folder / "summary.json").read_text())
        found.append({"settings": configs[int(row["row"])],
                      "test_accuracy": summary["test_accuracy"],
                      "zero_shot": summary["zero_shot_test_accuracy"],
                      "best_val_accuracy": summary["best_val_accuracy"],
                      "best_step": summary.get("best_step"), "steps": summary["steps"],
                      "images": summary["billed_images"], "seconds": summary["wall_seconds"],
                      "run_dir": str(folder)})
    return found


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=list(STAGES), default="grid")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="runs at a time (default: as many as Ray's resources allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--address", default=None, help="join this Ray cluster (auto|HOST:PORT)")
    parser.add_argument("--sweeps-dir", default="runs/calibration")
    parser.add_argument("--resume", type=Path, default=None, metavar="SWEEP_DIR",
                        help="continue an interrupted calibration sweep")
    parser.add_argument("--rows", type=seed_range, default=None, metavar="A-B",
                        help="only the stage's rows A to B (to split a stage between sweeps)")
    parser.add_argument("--table", action="store_true",
                        help="print the stage's results as a markdown table; run nothing")
    parser.add_argument("--paired", metavar="JSON",
                        help="print each candidate's paired difference (points, same seeds) "
                        "from this one, e.g. '{}' for barapi's default; run nothing")
    parser.add_argument("--seeds", type=seed_range, metavar="A-B",
                        help="with --table or --paired: only the rows of seeds A to B")
    args = parser.parse_args(argv)
    if args.table or args.paired is not None:
        rows = json.loads((RESULTS / f"calibration_{args.stage}.json").read_text())["rows"]
        if args.seeds is not None:
            rows = [r for r in rows if r["settings"]["seed"] in args.seeds]
        print(table(rows) if args.paired is None else paired(rows, json.loads(args.paired)))
        return rows
    configs = [{**with_budget(c), "device": args.device}
               for c in STAGES[args.stage]()]
    command = "python -m benchmarks.calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    done = RESULTS / f"calibration_{args.stage}.json"
    rows = json.loads(done.read_text())["rows"] if done.exists() else []
    ran = [without_device(r["settings"]) for r in rows]
    todo = [i for i, c in enumerate(configs) if without_device(c) not in ran
            and (args.rows is None or i in args.rows)]
    cma = [i for i in todo if "cma_sigma" in configs[i]]
    print(f"{len(rows)} runs read back from {done}, {len(todo)} to run ({len(cma)} CMA-ES)",
          file=sys.stderr)
    for row in sweep_rows(args.stage, configs, [i for i in todo if i not in cma], args):
        if without_device(row["settings"]) not in ran:
            rows.append(row)
    write_results(f"calibration_{args.stage}", rows, command)  # an interrupted stage keeps its rows
    for i in cma:
        row = run_one(configs[i])
        print(json.dumps(row), flush=True)
        rows.append(row)
        write_results(f"calibration_{args.stage}", rows, command)
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        key = json.dumps({k: v for k, v in without_device(row["settings"]).items() if k != "seed"})
        groups[key].append(row["test_accuracy"])
    for key, values in groups.items():
        print(f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}  n={len(values)}  {key}")
    write_results(f"calibration_{args.stage}", rows, command)
    return rows


if __name__ == "__main__":
    main()
