"""How much gradient do barapi's black-box estimates carry over many steps, and does least
squares over several steps' differences beat their average?

    python -m benchmarks.estimate_consistency [--steps 40] [--quick]

At the unprogrammed start (W = 0, the fitted linear head, barapi's default estimator: q = 10
Gaussian directions, β = 0.05, one-sided), H steps each draw a fresh minibatch of 20 and q
directions and query their differences through 8-bit images, as training does, but W does not
move. Then for H = 1 … `--steps`:

- `average`: the mean of the H step estimates (what momentum accumulates);
- `least squares`: the gradient regressed on all H·q (direction, difference) pairs, ridge λ;
- `split half`: the cosine between the averages of the first and the second H/2 steps, the
  estimates' agreement with themselves, whatever they estimate;

each as its cosine with the exact gradient of the loss over the whole training split (what
white-box AR's steps average to), against `linear` controls that use the same directions and
minibatches with each difference replaced by the exact directional derivative u·∇f of its
minibatch (what the differences would be if the loss were linear at scale β), and the mean of
the H exact minibatch gradients (`exact`). Black boxes: the Clarifai Moderation and NSFW
emulators' folded models and EfficientNet-Lite0, local (the exact side needs the weights).
Prints a table, writes benchmarks/results/estimate_consistency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi import api
from barapi.query import QueryService
from barapi.trainer import Task, build_heads
from barapi.whitebox import autograd_gradient
from benchmarks.common import markdown_table, write_results

SHIRTS = {"dataset": "@fashion", "classes": "Shirt,T-shirt/top", "per_class": 100, "m": 1}
DIGITS_0_4 = {"dataset": "digits", "classes": "0,1,2,3,4", "m": 1}
TASKS = [("moderation", "shirts", SHIRTS), ("nsfw", "shirts", SHIRTS),
         ("moderation", "digits 0–4", DIGITS_0_4), ("lite0", "shirts", SHIRTS)]
QUICK = [("moderation", "digits 0/1", {
    "dataset": "digits", "classes": "0,1", "canvas": 32, "window": 16, "input_size": 32,
    "resolution": 4, "m": 1})]
RIDGE = 100.0


def cosine(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


def least_squares(directions: NDArray[np.float64], diffs: NDArray[np.float64],
                  ridge: float) -> NDArray[np.float64]:
    """argmin_g Σ (δ_i − u_i·g)² + λ|g|² for (n, d) directions u and (n,) differences δ."""
    d = directions.shape[1]
    gram = directions.T @ directions + ridge * np.eye(d)
    return np.asarray(np.linalg.solve(gram, directions.T @ diffs), dtype=np.float64)


async def consistency(box: str, name: str, settings: dict[str, Any],
                      steps: int) -> list[dict[str, Any]]:
    from benchmarks.suite import local_box, with_dataset

    config = api.make_config(**with_dataset({**settings, "device": "cpu"}))
    adapter = local_box(box, config)
    split = api.load_split(config)
    task, service = Task(config, split), QueryService(adapter)
    _, head = await build_heads(service, task)
    estimator, weights, train = config.estimator(), task.program.zeros(), split.train
    exact = autograd_gradient(adapter, task)
    _, full, _ = await exact(weights, head, task.windows["train"], train.labels, 0)
    target = full.ravel().astype(np.float64)
    rng = np.random.default_rng(0)
    directions, diffs, linear, batch_grads = [], [], [], []
    for _ in range(steps):
        batch = rng.choice(len(train.labels), config.batch, replace=False)
        windows, labels = task.windows["train"][batch], train.labels[batch]
        _, grad, _ = await exact(weights, head, windows, labels, 0)
        u = estimator.sample(rng, task.program.shape)
        points = estimator.points(weights, u)
        images = task.program.compose(windows, task.program.perturbation(points))
        losses = task.losses(head, await service.predict_proba(images), labels, len(points))
        flat = u.reshape(estimator.q, -1).astype(np.float64)
        directions.append(flat)
        diffs.append((losses[1:] - losses[0]) / estimator.beta)
        linear.append(flat @ grad.ravel().astype(np.float64))
        batch_grads.append(grad.ravel().astype(np.float64))

    differences = {"8bit": diffs, "linear": linear}
    estimates = {kind: [v @ u / estimator.q for v, u in zip(values, directions, strict=True)]
                 for kind, values in differences.items()}  # one per step
    rows = []
    for h in sorted({1, *[n for n in (5, 10, 20, 40, 80) if n <= steps], steps}):
        row: dict[str, Any] = {"box": box, "task": name, "steps": h, "pairs": h * estimator.q,
                               "dim": target.size,
                               "exact": cosine(np.mean(batch_grads[:h], axis=0), target)}
        stacked_u = np.concatenate(directions[:h])
        for kind, values in differences.items():
            per_step = estimates[kind]
            row[f"{kind}_average"] = cosine(np.mean(per_step[:h], axis=0), target)
            row[f"{kind}_lsq"] = cosine(least_squares(stacked_u, np.concatenate(values[:h]),
                                                      RIDGE), target)
            half = h // 2
            row[f"{kind}_split_half"] = (cosine(np.mean(per_step[:half], axis=0),
                                                np.mean(per_step[half:h], axis=0))
                                         if half else float("nan"))
        rows.append(row)
        print(f"{box} {name} H={h}: 8-bit average {row['8bit_average']:+.2f}, least squares "
              f"{row['8bit_lsq']:+.2f}, split half {row['8bit_split_half']:+.2f}; linear "
              f"{row['linear_average']:+.2f} / {row['linear_lsq']:+.2f}", file=sys.stderr,
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="digits 0 vs 1 at 32 px through "
                        "Moderation, writes nothing: proves the code (and its controls) work")
    args = parser.parse_args(argv)
    rows = [r for box, name, settings in (QUICK if args.quick else TASKS)
            for r in asyncio.run(consistency(box, name, settings, args.steps))]

    def signed(value: float) -> str:
        return "" if value != value else f"{value:+.2f}"

    shown = [{**r, **{k: signed(v) for k, v in r.items() if isinstance(v, float)}} for r in rows]
    table = markdown_table(shown, [
        ("box", "black box"), ("task", "task"), ("steps", "steps H"), ("pairs", "H·q"),
        ("dim", "d"), ("8bit_average", "8-bit: average"), ("8bit_lsq", "least squares"),
        ("8bit_split_half", "split half"), ("linear_average", "linear: average"),
        ("linear_lsq", "least squares"), ("linear_split_half", "split half"),
        ("exact", "exact minibatch mean")])
    print(table)
    if not args.quick:
        command = "python -m benchmarks.estimate_consistency " + " ".join(
            argv if argv is not None else sys.argv[1:])
        write_results("estimate_consistency", rows, command, table=table, ridge=RIDGE)
    return rows


if __name__ == "__main__":
    main()
