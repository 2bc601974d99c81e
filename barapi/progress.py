"""Progress a person and a log file can both read: INFO lines through the standard `logging`
module (loggers under ``barapi``), silent until logging is configured — `setup_logging` does
it for the command line (``-v``/``-q``); a library user calls ``logging.basicConfig``.

A training run writes, at most every `ProgressLines.every` seconds and at each validation::

    step 40/210 (epoch 1/6) · 4,620 images · $0.00 · val 71.7% (best 71.7%) · 1.9 min left

On a terminal the command line shows a tqdm bar instead, with only the validation lines
above it (`tqdm.contrib.logging.logging_redirect_tqdm`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from barapi.budget import format_dollars

log = logging.getLogger("barapi.run")
"""A run's progress lines (`ProgressLines`) at INFO."""

EVERY = 5.0
"""Seconds between two progress lines of the same run at most (a validation always writes)."""


class ProgressLines:
    """`Trainer` hook turning a run's metrics records into INFO lines on `logger`: one per
    validation and, when `every` (seconds) is not None, one per training step at most every
    `every` seconds. Each line: step and total steps, epoch, images queried (cached ones
    included), dollars spent (of the budget), the last and best validation accuracy, and the
    time left at the pace so far (training steps only; the final test evaluation is extra).

    `prefix` starts every line (e.g. "fit: "). `limit`: the budget in dollars, or None."""

    def __init__(self, total_steps: int, steps_per_epoch: int, epochs: int,
                 limit: float | None = None, every: float | None = EVERY,
                 logger: logging.Logger = log, prefix: str = "") -> None:
        self.total_steps, self.steps_per_epoch, self.epochs = total_steps, steps_per_epoch, epochs
        self.limit, self.every, self.logger, self.prefix = limit, every, logger, prefix
        self.started = self.last = time.monotonic()
        self.first_step: int | None = None
        self.val_accuracy: float | None = None
        self.best_accuracy: float | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        event, now = record.get("event"), time.monotonic()
        step = int(record.get("step", 0))
        if self.first_step is None and event in ("val", "step"):  # the pace: from training on
            self.first_step, self.started = (step - 1 if event == "step" else step), now
        if event == "val":
            self.val_accuracy = float(record["val_accuracy"])
            self.best_accuracy = max(self.best_accuracy or 0.0, self.val_accuracy)
        elif event == "early_stop":
            self.logger.info("%sstopped by --patience at step %d: no better program or lower "
                             "validation loss for a while; keeping the best (step %d)",
                             self.prefix, step, int(record.get("best_step", 0)))
            return
        elif event != "step" or self.every is None or now - self.last < self.every:
            return
        if not self.logger.isEnabledFor(logging.INFO):
            return
        self.last = now
        self.logger.info("%s%s", self.prefix, self.line(record, now))

    def line(self, record: dict[str, Any], now: float) -> str:
        step = int(record.get("step", 0))
        epoch = min(max(1, -(-step // self.steps_per_epoch)), self.epochs)
        parts = [f"step {step:,}/{self.total_steps:,} (epoch {epoch}/{self.epochs})",
                 f"{int(record.get('queries', 0)):,} images",
                 format_dollars(float(record.get("dollars", 0.0)))
                 + (f" of {format_dollars(self.limit)}" if self.limit is not None else "")]
        if self.val_accuracy is not None:
            parts.append(f"val {self.val_accuracy:.1%} (best {(self.best_accuracy or 0):.1%})")
        elif self.best_accuracy is not None:  # a resumed run, before its next validation
            parts.append(f"best val {self.best_accuracy:.1%}")
        if self.first_step is not None and step > self.first_step and now > self.started:
            pace = (now - self.started) / (step - self.first_step)
            parts.append(f"{duration(pace * (self.total_steps - step))} left")
        return " · ".join(parts)


def duration(seconds: float) -> str:
    """12 s, 3.4 min, 1.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class _CommandLineHandler(logging.StreamHandler):
    """The handler `setup_logging` installs (replaced on each call, e.g. each CLI invocation
    in one process, so that it writes to the sys.stderr of the moment)."""


def setup_logging(verbosity: int = 0) -> None:
    """Send the ``barapi`` loggers to stderr: INFO and above by default (progress lines),
    WARNING and above at `verbosity` -1 (``-q``), DEBUG at 1 (``-v``). Lines start with the
    time when stderr is not a terminal (a log file, CI), with "barapi: " when it is."""
    root = logging.getLogger("barapi")
    for handler in [h for h in root.handlers if isinstance(h, _CommandLineHandler)]:
        root.removeHandler(handler)
    handler = _CommandLineHandler(sys.stderr)
    tty = sys.stderr.isatty()
    handler.setFormatter(logging.Formatter("barapi: %(message)s" if tty else
                                           "%(asctime)s barapi: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0
                  else logging.WARNING)
