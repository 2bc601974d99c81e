"""Progress lines (barapi.progress): what they say, how often, and where they go."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from barapi import progress
from barapi.progress import ProgressLines, duration, setup_logging


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def step(n: int, queries: int, dollars: float = 0.0) -> dict[str, object]:
    return {"event": "step", "step": n, "queries": queries, "dollars": dollars}


def test_lines_come_every_few_seconds_with_spend_validation_and_time_left(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    lines = ProgressLines(total_steps=100, steps_per_epoch=20, epochs=5, limit=25.0, every=5.0)
    with caplog.at_level(logging.INFO, logger="barapi.run"):
        lines({"event": "start", "step": 0})  # the labels and the probe take long: not the pace
        clock.now += 60.0
        lines({"event": "val", "step": 0, "val_accuracy": 0.625, "queries": 40, "dollars": 0.01})
        for n in range(1, 31):  # one step a second: a line at most every 5 s
            clock.now += 1.0
            lines(step(n, 40 + 220 * n, dollars=0.01 + 0.0022 * n))
    said = [r.getMessage() for r in caplog.records if r.name == "barapi.run"]
    assert said[0] == "step 0/100 (epoch 1/5) · 40 images · $0.01 of $25.00 · val 62.5% (best 62.5%)"
    assert len(said) == 1 + 6  # steps 5, 10, …, 30
    assert said[-1] == ("step 30/100 (epoch 2/5) · 6,640 images · $0.076 of $25.00 · "
                        "val 62.5% (best 62.5%) · 70 s left")


def test_a_validation_always_writes_and_the_best_is_kept(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    lines = ProgressLines(total_steps=10, steps_per_epoch=5, epochs=2, every=None)  # a bar shows
    with caplog.at_level(logging.INFO, logger="barapi.run"):
        for n, accuracy in ((5, 0.9), (10, 0.8)):
            clock.now += 1.0
            lines(step(n, n * 10))
            lines({"event": "val", "step": n, "val_accuracy": accuracy, "queries": n * 10})
        lines({"event": "early_stop", "step": 10, "best_step": 5})
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("step 5/10 (epoch 1/2) · 50 images · $0.00 · val 90.0% (best 90.0%)")
    assert "val 80.0% (best 90.0%)" in said[1] and "0 s left" in said[1]
    assert said[2].startswith("stopped by --patience at step 10") and "(step 5)" in said[2]


def test_nothing_is_formatted_when_info_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("barapi.test-silent")
    logger.setLevel(logging.WARNING)
    lines = ProgressLines(10, 5, 2, logger=logger)
    monkeypatch.setattr(lines, "line", lambda *a: pytest.fail("formatted while silent"))
    lines({"event": "val", "step": 0, "val_accuracy": 0.5, "queries": 1})


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (12, 95, 3600, 7200)] == ["12 s", "1.6 min", "60.0 min", "2.0 h"]


@pytest.mark.parametrize("verbosity,shown", [(-1, {"WARNING"}), (0, {"INFO", "WARNING"}),
                                             (1, {"DEBUG", "INFO", "WARNING"})])
def test_setup_logging_sends_barapi_lines_to_stderr_at_the_chosen_level(
        monkeypatch: pytest.MonkeyPatch, verbosity: int, shown: set[str]) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger("barapi")
    before = (root.level, list(root.handlers))
    try:
        setup_logging(verbosity)
        setup_logging(verbosity)  # a second invocation in one process: still one handler
        log = logging.getLogger("barapi.run")
        for level in ("DEBUG", "INFO", "WARNING"):
            log.log(getattr(logging, level), level)
    finally:
        for handler in root.handlers[:]:
            if handler not in before[1]:
                root.removeHandler(handler)
        root.setLevel(before[0])
    lines = stream.getvalue().splitlines()
    assert {line.rsplit(" ", 1)[-1] for line in lines} == shown and len(lines) == len(shown)
    # not a terminal: each line starts with the time, for a log file
    assert all(line[:8].count(":") == 2 and line[8:17] == " barapi: " for line in lines)


def test_a_resumed_run_shows_its_best_validation_before_the_next_one(
        caplog: pytest.LogCaptureFixture) -> None:
    lines = ProgressLines(10, 5, 2, every=0.0)
    lines.best_accuracy = 0.875  # what Trainer.run sets from the checkpoint
    with caplog.at_level(logging.INFO, logger="barapi.run"):
        lines(step(7, 70))
    assert caplog.records[0].getMessage() == "step 7/10 (epoch 2/2) · 70 images · $0.00 · best val 87.5%"
