"""CMA-ES (the `cma` library) against barapi's random-direction BAR on the same images.

    python -m benchmarks.cma_es [--sigmas 0.05 0.2] [--seeds 0 1 2] [--quick]

Shirt vs T-shirt through the Clarifai Moderation emulator's folded model (5 outputs, called
in-process, the setting of `python -m benchmarks.calibrate --stage few-output`), barapi's
default split, canvas and 3×8×8 program. Each CMA-ES generation asks 11 programs and scores
them on one minibatch of 20 (220 images: one BAR step with q = 10), the linear head is fitted
to the unprogrammed answers and moved by Adam on every generation's answers as in barapi's
trainer, the search mean is validated once per epoch (unlike the trainer, not at the
unprogrammed start), and the best one is tested: 6 epochs, the images of BAR without early
stopping. Only the black box's answers are used. Writes
benchmarks/results/cma_es.json; compare with calibration_few-output.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import numpy as np

from barapi import api
from barapi.head import LinearHead
from barapi.optim import Optimizer
from barapi.query import QueryService
from barapi.trainer import Task, build_heads, evaluate
from benchmarks.common import markdown_table, write_results

SHIRTS = {"dataset": "@fashion", "classes": "Shirt,T-shirt/top", "per_class": 100, "m": 1,
          "device": "cpu"}
QUICK = {"dataset": "digits", "classes": "0,1", "canvas": 32, "window": 16, "input_size": 32,
         "resolution": 4, "per_class": 20, "epochs": 1, "m": 1, "device": "cpu"}


async def run(settings: dict[str, Any], sigma: float, seed: int,
              box: str = "moderation") -> dict[str, Any]:
    """One CMA-ES run on `box` (an emulated service's folded model, or "lite0") with the
    trainer's settings (dataset, split, program, q + 1 = population, batch, epochs, device)."""
    import cma

    from benchmarks.suite import local_box, with_dataset

    config = api.make_config(**with_dataset({**settings, "seed": seed}))
    adapter = local_box(box, config)
    split = api.load_split(config)
    task, service = Task(config, split), QueryService(adapter)
    _, head = await build_heads(service, task)
    train = split.train
    shape, popsize = task.program.shape, config.q + 1
    es = cma.CMAEvolutionStrategy(np.zeros(task.program.dim), sigma,
                                  {"popsize": popsize, "seed": seed + 1, "verbose": -9})
    head_opt = Optimizer("adam", config.head_lr)
    steps_per_epoch = -(-len(train.labels) // config.batch)
    best: tuple[float, float, Any, Any] = (-1.0, 0.0, None, None)
    start = time.monotonic()
    for epoch in range(config.epochs):
        order = np.random.default_rng([seed, 0, epoch]).permutation(len(train.labels))
        for position in range(steps_per_epoch):
            batch = order[position * config.batch:(position + 1) * config.batch]
            labels = train.labels[batch]
            candidates = es.ask()
            points = np.asarray(candidates, dtype=np.float32).reshape(popsize, *shape)
            images = task.program.compose(task.windows["train"][batch],
                                          task.program.perturbation(points))
            probs = await service.predict_proba(images)
            es.tell(candidates, list(task.losses(head, probs, labels, popsize)))
            if isinstance(head, LinearHead):
                _, grad = head.loss_and_gradient(probs, np.tile(labels, popsize), task.gamma,
                                                 task.weights)
                head = head.with_parameters(head_opt.step(head.parameters, grad))
        mean = np.asarray(es.mean, dtype=np.float32).reshape(shape)
        val = await evaluate(service, task, head, mean, "val")
        if (val.accuracy, -val.loss) > best[:2]:
            best = (val.accuracy, -val.loss, mean, head)
    test = await evaluate(service, task, best[3], best[2], "test")
    return {"sigma": sigma, "seed": seed, "test_accuracy": test.accuracy,
            "best_val_accuracy": best[0], "images": service.stats.billed_images,
            "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="digits 0 vs 1 at 32 px, one "
                        "epoch, writes nothing: proves the code works")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SHIRTS
    rows = []
    for sigma in args.sigmas:
        for seed in args.seeds:
            rows.append(asyncio.run(run(settings, sigma, seed)))
            print(f"σ = {sigma}, seed {seed}: test {rows[-1]['test_accuracy']:.1%}, "
                  f"{rows[-1]['images']:,} images", file=sys.stderr, flush=True)
    summary = []
    for sigma in args.sigmas:
        acc = [r["test_accuracy"] for r in rows if r["sigma"] == sigma]
        images = [r["images"] for r in rows if r["sigma"] == sigma]
        summary.append({"sigma": f"{sigma:g}", "test": f"{statistics.mean(acc):.1%} ± "
                        f"{statistics.pstdev(acc):.1%}", "seeds": len(acc),
                        "images": f"{round(statistics.mean(images)):,}"})
    table = markdown_table(summary, [("sigma", "CMA-ES σ₀"), ("test", "test acc."),
                                     ("seeds", "seeds"), ("images", "billable images")])
    print(table)
    if not args.quick:
        command = "python -m benchmarks.cma_es " + " ".join(
            argv if argv is not None else sys.argv[1:])
        write_results("cma_es", rows, command, table=table)
    return rows


if __name__ == "__main__":
    main()
