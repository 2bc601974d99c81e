"""Issue 30, step 3: should each minibatch image get its own directions? A white-box gate.

    python -m benchmarks.direction_sharing [--tasks NAME ...] [--seeds 0 1 2] [--trained]

At the same queries (q + 1 per image), a zeroth-order estimate from q directions shared by
the minibatch errs by (d + 1)/q · ‖g_B‖², one from each image's own q directions by
(d + 1)/(qB²) · Σ_i ‖∇l_i‖² (barapi/zo.py; Gaussian, one-sided; the 8-bit answers' noise adds
the same to both). Their ratio, mean_i ‖∇l_i‖² / (B ‖g_B‖²) for minibatches of B = 20, says
which wins: per-image directions where it is under 1. Measured white-box (autograd through
the local NudeNet box, a measurement only: `benchmarks.subspace_gate.true_gradients`) on the
suite's 300-test-image tasks, at W = 0 under the linear probe's head and, with `--trained`,
at the last program and head of the suite's finished default BAR run of that task and seed
(benchmarks/results/suite/runs/, made by `python -m benchmarks --group honest`; a seed
without one is skipped, said on stderr). Writes benchmarks/results/direction_sharing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from barapi import api
from barapi.head import LinearHead, OutputHead
from barapi.query import QueryService
from barapi.run_state import load_state
from barapi.trainer import Task, build_heads
from benchmarks.common import RESULTS, command_line, markdown_table, write_results
from benchmarks.subspace_gate import per_sample_error_ratio, true_gradients
from benchmarks.suite import DEFAULT, METHODS, STEP3, TASKS, Cell, with_dataset

BOX = "nudenet nsfw"


def trained(cell: Cell) -> tuple[np.ndarray, OutputHead] | None:
    """The last program and head of `cell`'s finished suite run, or None."""
    runs = RESULTS / "suite" / "runs" / cell.key
    folders = sorted(runs.iterdir()) if runs.is_dir() else []
    if not folders or not (RESULTS / "suite" / f"{cell.key}.json").exists():
        return None
    run_config = api.RunFolder.open(folders[0], lock=False).config()
    state, _, _ = load_state(Path(folders[0]) / "checkpoint.npz", run_config)
    return state.weights, state.head


def measure(task_name: str, seed: int, with_trained: bool) -> list[dict[str, Any]]:
    from barapi.adapters.boxes import create_box

    config = api.make_config(**{**with_dataset(TASKS[task_name]), "m": 1, "device": "cpu",
                                "seed": seed})
    box = create_box("nudenet-nsfw", device="cpu", input_size=None)
    split = api.load_split(config)
    task = Task(config, split)
    _, probe = asyncio.run(build_heads(QueryService(box), task))
    points: list[tuple[str, Any, OutputHead]] = [("W = 0", task.program.zeros(), probe)]
    if with_trained:
        cell = Cell("honest", task_name, BOX, DEFAULT, seed, {**METHODS[DEFAULT], "m": 1})
        found = trained(cell)
        if found is None:
            print(f"{task_name} seed {seed}: no finished default run; skipped", file=sys.stderr)
        else:
            points.append(("default BAR's last program", found[0].astype(np.float32), found[1]))
    rows = []
    for at, weights, head in points:
        assert isinstance(head, LinearHead)
        truth = true_gradients(box, task, head, weights, task.windows["train"],
                               split.train.labels)
        ratio = per_sample_error_ratio(truth.losses, np.random.default_rng([seed, 31]))
        rows.append({"task": task_name, "box": BOX, "seed": seed, "at": at, "ratio": ratio})
        print(f"{task_name} seed {seed}, {at}: {ratio:.2f}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = [task for task, _ in STEP3]
    parser.add_argument("--tasks", nargs="+", default=tasks, choices=tasks)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trained", action="store_true")
    args = parser.parse_args(argv)
    rows = [row for task in args.tasks for seed in args.seeds
            for row in measure(task, seed, args.trained)]
    summary = []
    for task, at in dict.fromkeys((r["task"], r["at"]) for r in rows):
        ratios = [r["ratio"] for r in rows if (r["task"], r["at"]) == (task, at)]
        summary.append({"task": task, "at": at, "seeds": len(ratios),
                        "ratio": f"{statistics.median(ratios):.2f} "
                                 f"({min(ratios):.2f}–{max(ratios):.2f})"})
    print(markdown_table(summary, [("task", "task"), ("at", "program"), ("seeds", "seeds"),
                                   ("ratio", "per-image / shared error, median (range)")]))
    write_results("direction_sharing", rows, command_line("direction_sharing", argv),
                  summary=summary)
    return rows


if __name__ == "__main__":
    main()
