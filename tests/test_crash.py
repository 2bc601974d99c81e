"""kill -9 in the middle of a paid run, then `barapi run --resume`: same W, nothing paid twice
beyond the requests that were in flight at the kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from barapi.budget import read_ledger
from barapi.run_folder import RunFolder

ARGS = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--per-class", "20", "--q", "4", "--epochs", "2", "--m", "2", "--device", "cpu",
        "--card-set", "price_per_1000=1.0", "--budget", "10", "--progress", "--patience", "0"]
STEP_IMAGES = 20 * 5  # minibatch × (q + 1): the most one step has in flight


def barapi(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "barapi", "run", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ledger_images(folder: Path) -> int:
    return read_ledger(folder / "ledger.jsonl").images


def only_run(root: Path) -> Path:
    (folder,) = root.iterdir()
    return folder


def test_kill_9_then_resume_is_bit_identical_and_pays_once(tmp_path: Path) -> None:
    whole = barapi(*ARGS, "--runs-dir", "a", "--cache-dir", "cache-a", "--json", cwd=tmp_path)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    reference = only_run(tmp_path / "a")

    victim = barapi(*ARGS, "--runs-dir", "b", "--cache-dir", "cache-b", cwd=tmp_path)
    deadline = time.monotonic() + 240
    steps = 0
    while time.monotonic() < deadline and steps < 12:
        time.sleep(0.05)
        metrics = list((tmp_path / "b").glob("*/metrics.jsonl"))
        if metrics:
            steps = sum('"event": "step"' in line for line in metrics[0].read_text().splitlines())
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert 12 <= steps < 20, "the kill must land mid-run"
    folder = only_run(tmp_path / "b")
    assert ledger_images(folder) > 0  # the requests before the kill, and the one in flight
    RunFolder.open(folder).unlock()  # the dead process's lock died with it

    resumed = barapi("--resume", str(folder), "--cache-dir", "cache-b", "--budget", "10", "--json",
                     cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    final, expected = np.load(folder / "checkpoint.npz"), np.load(reference / "checkpoint.npz")
    assert np.array_equal(final["weights"], expected["weights"])
    assert np.array_equal(final["best_weights"], expected["best_weights"])
    paid, paid_once = ledger_images(folder), ledger_images(reference)
    assert paid_once <= paid <= paid_once + STEP_IMAGES
    summary = json.loads(out)  # the whole run's counts: the ledger's, across the kill
    assert summary["dollars"] == pytest.approx(paid / 1000) and summary["billed_images"] == paid
