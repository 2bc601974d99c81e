"""What the few-output boxes answer on digits, as `barapi run` embeds them by default.

    python -m benchmarks.boxes [--quick]

For each box (barapi.adapters.boxes) and, for reference, EfficientNet-Lite0's 1,000 classes:
the mean, spread and minimum of "safe" (moderation views) or "sfw" (nsfw views) on 200 digit
images under the blank program (canvas 112 px, window 56 px, ImageNet boxes at 112 px,
NudeNet at its 320 px); the linear probe's test accuracy on digits 0 vs 1 from the box's
answers alone (the default head's starting point, fitted as `barapi run` fits it); and the
time per image on this machine (one request of 200 images).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np

from barapi import api
from barapi.adapters.boxes import BOXES, create_box
from barapi.adapters.local import LocalAdapter, create
from barapi.config import make_config
from barapi.head import LinearHead
from barapi.trainer import Task
from benchmarks.common import markdown_table, write_results

REFERENCE = "efficientnet-lite0"


def blank_queries(config: Any) -> tuple[Task, dict[str, np.ndarray]]:
    """The task and its train/test images under the blank program (W = 0)."""
    task = Task(config, api.load_split(config))
    zeros = task.program.zeros()
    return task, {part: task.program.images(task.windows[part], zeros) for part in ("train", "test")}


def measure(name: str, box: LocalAdapter, sample: np.ndarray, probe_task: Task,
            probe_images: dict[str, np.ndarray]) -> dict[str, Any]:
    start = time.perf_counter()
    answers = asyncio.run(box.predict_proba(sample))
    seconds = time.perf_counter() - start
    labels = list(box.labels)
    column = (None if name not in BOXES  # ImageNet has a class "safe" (a strongbox): not it
              else labels.index("safe") if "safe" in labels else labels.index("sfw"))
    train = asyncio.run(box.predict_proba(probe_images["train"]))
    test = asyncio.run(box.predict_proba(probe_images["test"]))
    split, c = probe_task.split, probe_task.config
    head = LinearHead.fit(train, split.train.labels, 2, 0.0, None, c.head_l2)
    assert split.test is not None
    probe = float((head.scores(test).argmax(axis=1) == split.test.labels).mean())
    row: dict[str, Any] = {"box": name, "outputs": len(labels),
                           "ms_per_image": 1000 * seconds / len(sample),
                           "probe_0v1": probe, "probe_train": len(train), "probe_test": len(test)}
    if column is not None:
        values = answers[:, column].astype(np.float64)
        row.update(concept=labels[column], mean=float(values.mean()), std=float(values.std()),
                   min=float(values.min()), above_0_9=float((values > 0.9).mean()))
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 images instead of 200")
    args = parser.parse_args(argv)
    n = 40 if args.quick else 200
    default = make_config(device="cpu")  # canvas 112, window 56, input 112: `barapi run`'s
    _, every = blank_queries(default)
    sample = every["train"][:n]
    probe_task, probe_images = blank_queries(make_config(device="cpu", classes="0,1"))
    rows = []
    for name in (*BOXES, REFERENCE):
        box = (create(model=name, device="cpu", input_size=default.input_size) if name == REFERENCE
               else create_box(name, device="cpu", input_size=default.input_size))
        rows.append(measure(name, box, sample, probe_task, probe_images))
        print(f"{name}: done", file=sys.stderr)
    command = "python -m benchmarks.boxes" + (" --quick" if args.quick else "")
    path = write_results("boxes", rows, command, images=n, canvas=default.canvas,
                         window=default.window_size, input_size=default.input_size)
    print(markdown_table(rows, [("box", "box"), ("outputs", "K"), ("concept", "concept"),
                                ("mean", "mean"), ("std", "std"), ("min", "min"),
                                ("above_0_9", "> 0.9"), ("probe_0v1", "probe 0 vs 1"),
                                ("ms_per_image", "ms/image")]))
    print(f"\n{n} digit images; probe on {rows[0]['probe_train']} train / "
          f"{rows[0]['probe_test']} test images of digits 0 and 1; written to {path}")
    return rows


if __name__ == "__main__":
    main()
