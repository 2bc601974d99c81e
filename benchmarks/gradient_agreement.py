"""Do query-based finite differences see the gradient that white-box AR follows?

    python -m benchmarks.gradient_agreement [--directions 50] [--betas 0.01 0.02 0.05 0.1]
        [--boxes lite0 moderation] [--task shirts|digits01] [--no-float] [--name NAME]

At the unprogrammed start (W = 0) of shirt vs T-shirt, with the fitted linear head, on one
minibatch of 20: for random Gaussian directions u of the 3×8×8 program, the one-sided [f(W +
βu) − f(W)]/β and two-sided [f(W + βu) − f(W − βu)]/(2β) differences of the minibatch loss,
measured through 8-bit queries of the black box, against the autograd directional derivative
u·∇f of the same loss (what AR follows). The same differences on float images (the model
called directly, no 8-bit encoding) separate the loss's curvature at scale β from the
encoding; at β = 0.001 they must agree with autograd (correlation ≈ 1: the control). β is in
units of W (tanh'(0) = 1: β = 0.05 moves a background pixel by about 6 grey levels). Black
boxes (`--boxes`, the suite's names): EfficientNet-Lite0 (1,000 outputs), the Clarifai
Moderation emulator's folded model (5 outputs), or the honest boxes ("imagenet nsfw",
"nudenet nsfw", …), all local (the autograd side needs the weights). `--task digits01`:
digits 0 vs 1 at barapi's default settings instead of shirt vs T-shirt; `--no-float` skips
the float rows (slow through onnx2torch). Prints a table, writes
benchmarks/results/NAME.json (default gradient_agreement).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import numpy as np

from barapi import api
from barapi.query import QueryService
from barapi.trainer import Task, build_heads
from barapi.whitebox import autograd_gradient
from benchmarks.common import command_line, markdown_table, write_results

SHIRTS = {"dataset": "@fashion", "classes": "Shirt,T-shirt/top", "per_class": 100, "m": 1,
          "device": "cpu"}
DIGITS01 = {"dataset": "digits", "classes": "0,1", "m": 1, "device": "cpu"}
QUICK = {"dataset": "digits", "classes": "0,1", "canvas": 32, "window": 16, "input_size": 32,
         "resolution": 4, "batch": 8, "m": 1, "device": "cpu"}


def agreement(box: str, betas: list[float], n_directions: int,
              settings: dict[str, Any], wires: tuple[str, ...] = ("float", "8-bit")
              ) -> list[dict[str, Any]]:
    from benchmarks.suite import local_box, with_dataset

    config = api.make_config(**with_dataset(settings))
    adapter = local_box(box, config)
    split = api.load_split(config)
    task, service = Task(config, split), QueryService(adapter)
    _, head = asyncio.run(build_heads(service, task))
    rng = np.random.default_rng(0)
    batch = rng.choice(len(split.train.labels), config.batch, replace=False)
    windows, labels = task.windows["train"][batch], split.train.labels[batch]
    weights = task.program.zeros()

    async def exact_gradient() -> np.ndarray:
        _, grad, _ = await autograd_gradient(adapter, task)(weights, head, windows, labels, 0)
        return grad

    exact = asyncio.run(exact_gradient())
    directions = rng.standard_normal((n_directions, *task.program.shape)).astype(np.float32)
    along = np.tensordot(directions, exact, axes=3)

    def loss(points: np.ndarray) -> np.ndarray:
        images = task.program.compose(windows, task.program.perturbation(points))
        probs = asyncio.run(service.predict_proba(images))
        return np.asarray(task.losses(head, probs, labels, len(points)))

    def float_loss(points: np.ndarray) -> np.ndarray:
        import torch

        backgrounds = (task.program.perturbation(points) + 1) / 2
        x = np.repeat(backgrounds[:, None], len(windows), axis=1)
        rows_, cols = task.program.canvas.window_slice
        x[:, :, rows_, cols] = windows[None] / 255.0
        x = x.reshape(-1, *x.shape[2:]).transpose(0, 3, 1, 2)
        with torch.no_grad():
            probs = adapter.probabilities(torch.from_numpy(np.ascontiguousarray(x)))
        return np.asarray(task.losses(head, probs.numpy(), labels, len(points)))

    rows = []
    losses = {"float": float_loss, "8-bit": loss}
    for wire in wires:
        f = losses[wire]
        clean = float(f(weights[None])[0])
        for beta in [1e-3, *betas] if wire == "float" else betas:
            plus, minus = f(weights + beta * directions), f(weights - beta * directions)
            one, two = (plus - clean) / beta, (plus - minus) / (2 * beta)
            rows.append({"box": box, "wire": wire, "beta": beta, "grey_levels": beta * 127.5,
                         "one_sided": float(np.corrcoef(one, along)[0, 1]),
                         "two_sided": float(np.corrcoef(two, along)[0, 1]),
                         "directions": n_directions})
            print(f"{box} {wire} β={beta}: correlation one-sided {rows[-1]['one_sided']:.2f}, "
                  f"two-sided {rows[-1]['two_sided']:.2f}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directions", type=int, default=50)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--quick", action="store_true", help="digits 0 vs 1 at 32 px, writes "
                        "nothing: proves the code (and the float control) works")
    parser.add_argument("--boxes", nargs="+", default=["lite0", "moderation"])
    parser.add_argument("--task", choices=["shirts", "digits01"], default="shirts")
    parser.add_argument("--no-float", action="store_true", help="8-bit rows only")
    parser.add_argument("--name", default="gradient_agreement", help="results file name")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SHIRTS if args.task == "shirts" else DIGITS01
    wires = ("8-bit",) if args.no_float else ("float", "8-bit")
    rows = [r for box in args.boxes
            for r in agreement(box, args.betas, args.directions, settings, wires)]
    table = markdown_table(
        [{**r, "beta": f"{r['beta']:g}", "grey_levels": f"{r['grey_levels']:.1f}",
          "one_sided": f"{r['one_sided']:.2f}", "two_sided": f"{r['two_sided']:.2f}"}
         for r in rows],
        [("box", "black box"), ("wire", "images"), ("beta", "β"), ("grey_levels", "≈ grey levels"),
         ("one_sided", "corr. one-sided"), ("two_sided", "corr. two-sided")])
    print(table)
    if args.quick:
        return rows
    write_results(args.name, rows, command_line("gradient_agreement", argv), table=table)
    return rows


if __name__ == "__main__":
    main()
