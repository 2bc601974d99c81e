"""Issue 15's money seams, run as a user runs them (subprocesses of `barapi`): the run
folder remembers its budget, one process at a time, every command pays through the run's
ledger, a damaged ledger stops the run instead of resetting its spend, and the summary's
counts are the ledger's. A local model priced by `--card-set` is the paid black box (its
answers cost nothing to compute, every image is billed in the ledger)."""

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

TINY = ["--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--per-class", "10", "--q", "2", "--epochs", "2", "--m", "2", "--device", "cpu",
        "--patience", "0", "--classes", "0,1,2"]
PRICED = [*TINY, "--card-set", "price_per_1000=1000", "--runs-dir", "runs", "--no-cache"]
# one image costs $1; a whole run costs $586


def barapi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "barapi", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def run_dir(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "runs").iterdir()
    return folder


def ledger_images(folder: Path) -> int:
    return read_ledger(folder / "ledger.jsonl").images


def stopped_run(tmp_path: Path, budget: str = "250") -> Path:
    """A run stopped by its budget mid-training (after its first checkpoint)."""
    out = barapi("run", *PRICED, "--budget", budget, "--yes", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    return run_dir(tmp_path)


def test_a_resume_without_budget_keeps_the_runs_budget(tmp_path: Path) -> None:
    folder = stopped_run(tmp_path)
    assert (folder / "checkpoint.npz").exists() and ledger_images(folder) <= 250
    out = barapi("run", "--resume", str(folder), "--json", cwd=tmp_path)
    assert out.returncode == 3, out.stderr  # still stopped by the remembered $250
    assert ledger_images(folder) <= 250 and json.loads(out.stdout)["dollars"] <= 250
    out = barapi("run", "--resume", str(folder), "--budget", "5000", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    # the summary's counts are the ledger's, across the three parts of the run
    assert summary["billed_images"] == ledger_images(folder) > 250
    assert summary["dollars"] == pytest.approx(ledger_images(folder))
    assert json.loads((folder / "budget.json").read_text())["limit"] == 5000


def test_one_process_per_run_folder_and_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    out = barapi("run", *PRICED, "--budget", "5000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = run_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from barapi.run_folder import RunFolder; "
        f"held = RunFolder.open({str(folder)!r}); print('locked', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = ledger_images(folder)
        for command in (["run", "--resume", str(folder), "--budget", "5000"],
                        ["evaluate", str(folder), "--budget", "100"]):
            out = barapi(*command, cwd=tmp_path)
            assert out.returncode == 2 and f"in use by process {holder.pid}" in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert ledger_images(folder) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash releases the lock
        holder.wait()
    out = barapi("run", "--resume", str(folder), "--budget", "5000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_the_estimator_pays_fit_and_predictions_from_one_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import LinearSoftmaxAdapter, tiny_config
    from sklearn.datasets import load_digits

    from barapi.errors import BudgetExhausted, ConfigError
    from barapi.estimator import BARClassifier

    class Priced(LinearSoftmaxAdapter):
        card = "clarifai-nsfw"  # $1.20 per 1,000 images

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # fit's answer cache: fresh

    digits = load_digits()
    keep = digits.target < 2
    x, y = digits.data[keep][:60], digits.target[keep][:60]
    settings = {k: v for k, v in tiny_config().model_dump().items()
                if k in ("canvas", "window", "resolution", "q", "batch", "m")}
    with pytest.raises(ConfigError, match="give a budget"):
        BARClassifier(adapter=Priced(), epochs=1, **settings).fit(x, y)
    clf = BARClassifier(adapter=Priced(), epochs=1, budget=1.0, **settings).fit(x, y)
    after_fit = clf.spent_nano_
    assert 0 < after_fit <= 1e9
    clf.predict(x[:10])
    assert clf.spent_nano_ == after_fit + 10 * 1_200_000  # predictions are paid from it too
    left = int((1e9 - clf.spent_nano_) // 1_200_000)
    with pytest.raises(BudgetExhausted):
        clf.predict(np.repeat(x[:1], left + 5, axis=0) + np.arange(left + 5)[:, None] % 3)
    assert clf.spent_nano_ <= 1e9


def test_evaluate_and_predict_pay_through_the_runs_ledger_and_budget(tmp_path: Path) -> None:
    out = barapi("run", *PRICED, "--budget", "5000", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = run_dir(tmp_path)
    before = ledger_images(folder)
    out = barapi("evaluate", str(folder), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    n_test = json.loads(out.stdout)["samples"]
    assert f"evaluation: at most {n_test} images, ${n_test}.00" in out.stderr  # shown first
    assert ledger_images(folder) == before + n_test == json.loads(out.stdout)["billed_images"] + before
    image = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    out = barapi("predict", str(folder), str(image), "--budget", "0.5", cwd=tmp_path)
    assert out.returncode == 2 and "more than the $0.50 left" in out.stderr  # nothing sent
    assert ledger_images(folder) == before + n_test
    out = barapi("predict", str(folder), str(image), "--budget", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ledger_images(folder) == before + n_test + 1
    # without --budget, what is left of the run's own $5,000
    spent = ledger_images(folder)
    out = barapi("evaluate", str(folder), "--part", "val", "--json", cwd=tmp_path)
    n_val = json.loads(out.stdout)["samples"]
    assert out.returncode == 0 and ledger_images(folder) == spent + n_val
    record = json.loads((folder / "budget.json").read_text())
    assert record["billed_images"] == spent + n_val  # recorded beside the ledger too


def test_a_priced_provider_needs_a_budget(tmp_path: Path) -> None:
    out = barapi("run", *PRICED, cwd=tmp_path)
    assert out.returncode == 2 and "give a budget" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["half", "deleted"])
def test_a_damaged_ledger_stops_the_run_instead_of_resetting_its_spend(damage: str,
                                                                      tmp_path: Path) -> None:
    folder = stopped_run(tmp_path)
    spent = ledger_images(folder)
    ledger = folder / "ledger.jsonl"
    if damage == "half":
        lines = ledger.read_text().splitlines()
        ledger.write_text("\n".join(lines[:len(lines) // 2]) + "\n")
    else:
        ledger.unlink()
    out = barapi("run", "--resume", str(folder), "--budget", "300", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "repair-ledger" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not ledger.exists() or ledger_images(folder) < spent  # nothing was spent
    out = barapi("repair-ledger", str(folder), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert read_ledger(ledger).spent_nano >= spent * 10**9
    out = barapi("run", "--resume", str(folder), "--budget", "300", "--json", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert ledger_images(folder) <= 300


def test_a_torn_last_line_is_counted_not_a_traceback(tmp_path: Path) -> None:
    folder = stopped_run(tmp_path)
    spent = ledger_images(folder)
    with (folder / "ledger.jsonl").open("a") as handle:
        handle.write('{"images": 7, "nanodollars": 7000000000, "id": 99')
    out = barapi("run", "--resume", str(folder), "--json", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert ledger_images(folder) >= spent + 7 and json.loads(out.stdout)["dollars"] <= 250


@pytest.mark.parametrize("budget", ["0", "20"])
def test_out_of_budget_before_the_first_checkpoint_is_a_budget_stop(budget: str,
                                                                    tmp_path: Path) -> None:
    out = barapi("run", *PRICED, "--budget", budget, "--yes", "--json", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "continue with: barapi run --resume" in out.stderr
    summary = json.loads(out.stdout)  # valid JSON: no NaN
    assert summary["test_accuracy"] is None and summary["dollars"] <= float(budget)
    folder = run_dir(tmp_path)
    out = barapi("run", "--resume", str(folder), "--budget", "5000", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_amounts_print_with_enough_decimals(tmp_path: Path) -> None:
    out = barapi("run", *TINY, "--card-set", "price_per_1000=0.004", "--runs-dir", "runs",
                 "--no-cache", "--budget", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    billed = json.loads((run_dir(tmp_path) / "summary.json").read_text())["billed_images"]
    assert f"${billed * 0.004 / 1000:.6f}".rstrip("0") in out.stdout  # e.g. $0.002344, not $0.00


def test_zero_shot_prints_no_program_and_no_best_validation(tmp_path: Path) -> None:
    out = barapi("run", *TINY, "--method", "zero-shot", "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "best val" not in out.stdout and "-100.0%" not in out.stdout  # not a run name
    assert "program 4²" not in out.stderr and "q=2" not in out.stderr
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert "NaN" not in (run_dir(tmp_path) / "summary.json").read_text()
    assert summary["best_val_accuracy"] is None


def test_kill_9_during_a_paid_request_leaves_it_counted(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-m", "barapi", "run", *PRICED, "--budget", "5000"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ledgers = list((tmp_path / "runs").glob("*/ledger.jsonl"))
        if ledgers and ledgers[0].stat().st_size > 2000:
            break
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    folder = run_dir(tmp_path)
    totals = read_ledger(folder / "ledger.jsonl")
    assert totals.images > 0
    held = RunFolder.open(folder)  # the dead process's lock is gone
    held.unlock()
    out = barapi("run", "--resume", str(folder), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # the whole run's counts: the ledger's, across the kill
    assert summary["billed_images"] == ledger_images(folder) > totals.images
