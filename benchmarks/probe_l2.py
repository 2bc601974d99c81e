"""Does the linear probe already fit its training set on a 1,000-output model?

    python -m benchmarks.probe_l2 [--l2 0.001 0.01 0.1 1 10 100] [--quick]

Digits through the local EfficientNet-Lite0 at barapi's default split and canvas: the
unprogrammed answers of every split are queried once, then the linear head is fitted at each
L2 strength (`--head-l2`) and scored on train, validation and test. Training accuracy near
100% means the loss a program would descend has little signal left. Writes
benchmarks/results/probe_l2.json (not with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import numpy as np

from barapi import api
from barapi.head import LinearHead
from barapi.trainer import query_program
from benchmarks.common import markdown_table, write_results

QUICK: dict[str, Any] = {"canvas": 32, "window": 16, "input_size": 32, "per_class": 8}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--l2", type=float, nargs="+", default=[0.001, 0.01, 0.1, 1, 10, 100])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    config = api.make_config(dataset="digits", device="cpu", **(QUICK if args.quick else {}))
    session = api.prepare(config, use_cache=False)
    task = session.trainer.task
    parts = ("train", "val", "test")

    async def answers() -> dict[str, np.ndarray]:
        return {p: await query_program(session.service, task.program, task.windows[p],
                                       task.program.zeros()) for p in parts}

    probs = asyncio.run(answers())
    labels = {p: getattr(task.split, p).labels for p in parts}
    rows = []
    for l2 in args.l2:
        head = LinearHead.fit(probs["train"], labels["train"], task.split.train.n_classes,
                              task.gamma, task.weights, l2)
        rows.append({"l2": l2, **{p: float((head.scores(probs[p]).argmax(axis=1)
                                            == labels[p]).mean()) for p in parts}})
    table = markdown_table([{"l2": f"{r['l2']:g}", **{p: f"{r[p]:.1%}" for p in parts}}
                            for r in rows],
                           [("l2", "head L2"), ("train", "train acc."), ("val", "val acc."),
                            ("test", "test acc.")])
    print(table)
    if not args.quick:
        command = "python -m benchmarks.probe_l2 " + " ".join(
            argv if argv is not None else sys.argv[1:])
        write_results("probe_l2", rows, command, table=table)
    return rows


if __name__ == "__main__":
    main()
