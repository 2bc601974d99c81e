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
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from barapi.budget import read_ledger
from barapi.run_folder import RunFolder

TINY = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
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


# kill -9 during a paid request (the request in flight stays counted, the lock dies with the
# process, the resumed run's counts are the ledger's): tests/test_crash.py.


# Issue 29: every record of spend is a witness, uncertain spend is said, a full disk is one
# line that keeps the spend and continues, damaged records are one line. One stopped run is
# made once and copied for each test.

@pytest.fixture(scope="module")
def stopped_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped by its $320 budget after two training steps."""
    return stopped_run(tmp_path_factory.mktemp("stopped"), budget="320")


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "runs" / folder.name
    shutil.copytree(folder, copy)
    return copy


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command (after what it printed before the error)."""
    errors = [line for line in out.stderr.splitlines() if line.startswith("barapi: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == errors[0], out.stderr
    return errors[0]


def test_spend_witnessed_only_by_metrics_is_never_reset(stopped_once: Path,
                                                        tmp_path: Path) -> None:
    """Item 11: ledger, budget.json and checkpoint gone, metrics.jsonl left: the resume
    refuses instead of starting again at $0, and once repaired it pays nothing beyond the
    whole-run budget."""
    folder = copy_of(stopped_once, tmp_path)
    witnessed = max(r.get("dollars", 0) for r in RunFolder(folder).metrics())
    assert witnessed == ledger_images(folder) > 250
    for name in ("ledger.jsonl", "budget.json", "checkpoint.npz"):
        (folder / name).unlink()
    out = barapi("run", "--resume", str(folder), "--budget", f"{witnessed:g}", cwd=tmp_path)
    assert out.returncode == 2
    assert f"metrics.jsonl records ${witnessed:,.2f}" in one_line(out) and "repair-ledger" in out.stderr
    assert not (folder / "ledger.jsonl").exists()  # nothing was sent
    out = barapi("repair-ledger", str(folder), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert read_ledger(folder / "ledger.jsonl").spent_nano == round(witnessed * 1e9)
    out = barapi("run", "--resume", str(folder), "--budget", f"{witnessed:g}", cwd=tmp_path)
    assert out.returncode == 3, out.stderr  # the whole-run budget is spent already
    assert read_ledger(folder / "ledger.jsonl").spent_nano == round(witnessed * 1e9)


def test_a_budget_json_that_is_a_list_is_one_line(stopped_once: Path, tmp_path: Path) -> None:
    """Item 9: budget.json that is a list → one line naming the file and the shape
    expected; nothing is sent (resume and evaluate alike)."""
    folder = copy_of(stopped_once, tmp_path)
    (folder / "budget.json").write_text("[]")
    before = (folder / "ledger.jsonl").read_bytes()
    for command in (["run", "--resume", str(folder)], ["evaluate", str(folder)]):
        out = barapi(*command, cwd=tmp_path)
        assert out.returncode == 2
        assert one_line(out).startswith(f"barapi: error: {folder}/budget.json: expected a JSON "
                                        f"object such as {{\"limit\": 20.0, ")
    assert (folder / "ledger.jsonl").read_bytes() == before


@pytest.mark.parametrize(("content", "expected"), [
    ('{"limit": "twenty"}', "field 'limit' must be a finite number ≥ 0 or null, found 'twenty'"),
    ('{"spent_nanodollars": -1}', "field 'spent_nanodollars' must be an integer ≥ 0"),
    ('{"billed_images": true}', "field 'billed_images' must be an integer ≥ 0, found True"),
    ('{"labels": "a,b"}', "field 'labels' must be a list of strings"),
    ("[1, 2", "unreadable"),
])
def test_a_budget_json_field_of_the_wrong_kind_is_named(content: str, expected: str,
                                                        tmp_path: Path) -> None:
    from barapi.errors import LedgerDamaged

    (tmp_path / "budget.json").write_text(content)
    with pytest.raises(LedgerDamaged) as caught:
        RunFolder(tmp_path).record()
    assert str(caught.value).startswith(f"{tmp_path}/budget.json: ")
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_uncertain_spend_is_said_on_the_result_line_in_json_and_in_budget_json(
        stopped_once: Path, tmp_path: Path) -> None:
    """Item 13: a request that was in flight when its process died counts as billed; the
    result line, --json and budget.json say how much is uncertain and why."""
    folder = copy_of(stopped_once, tmp_path)
    last = read_ledger(folder / "ledger.jsonl").last_id
    with (folder / "ledger.jsonl").open("a") as handle:  # sent, then the process was killed
        handle.write(json.dumps({"images": 2, "nanodollars": 2 * 10**9, "id": last + 1,
                                 "sent": 1.0}) + "\n")
    limit = str(ledger_images(folder) + 5)  # a little more: the resume stops again soon
    out = barapi("run", "--resume", str(folder), "--budget", limit, cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert ("· $193.00, $2.00 of it uncertain: 1 request (in flight when its process ended); "
            "the provider may not have billed them (docs/method.md#uncertain-spend) ·"
            ).replace("193", str(ledger_images(folder))) in out.stdout
    out = barapi("run", "--resume", str(folder), "--budget", limit, "--json", cwd=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["uncertain_dollars"] == 2.0 and summary["uncertain_images"] == 2
    assert list(summary["uncertain_reasons"].values()) == [1]
    record = json.loads((folder / "budget.json").read_text())
    assert record["uncertain_nanodollars"] == 2 * 10**9 and record["uncertain_requests"] == 1
    assert record["uncertain_reasons"] == summary["uncertain_reasons"]


def test_uncertain_spend_names_the_providers_error(lite0_32: object, tmp_path: Path) -> None:
    """Item 13 against the Clarifai emulator: requests that met UNAVAILABLE were not billed
    by the server; barapi counts them, and says so with the reason."""
    import asyncio

    from sklearn.datasets import load_digits

    from barapi import api
    from barapi.adapters.clarifai import ClarifaiAdapter
    from barapi.emulate import ClarifaiEmulator, Faults
    from barapi.keys import Secret
    from barapi.retry import RetryPolicy

    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "d01.npz", X=digits.images[keep], y=digits.target[keep])
    config = api.make_config(provider="clarifai", dataset=str(tmp_path / "d01.npz"), canvas=32,
                             window=16, resolution=4, per_class=10, q=2, epochs=1, m=2, batch=5)

    async def scenario() -> tuple[Any, Any]:
        emulator = ClarifaiEmulator(lite0_32, "k", Faults(unavailable_every=2))
        port = await emulator.start()
        adapter = ClarifaiAdapter(key=Secret("k"), endpoint=f"127.0.0.1:{port}", insecure=True)
        try:
            session = api.prepare(config, adapter=adapter, budget=1.0,
                                  runs_root=tmp_path / "runs", use_cache=False)
            session.service.retry = RetryPolicy(attempts=12, base=0.01, cap=0.05)
            session.start()
            result = await session.trainer.run()
            return emulator.counters, session._finish(result)
        finally:
            await adapter.aclose()
            await emulator.stop()

    counters, result = asyncio.run(scenario())
    summary = api.run_summary(result)
    uncertain = summary["uncertain_images"]
    assert counters.unavailable > 0 and uncertain > 0
    assert summary["billed_images"] - uncertain == counters.billed_images  # the server's bill
    assert summary["uncertain_reasons"] == {"Clarifai gRPC UNAVAILABLE": counters.unavailable}
    assert summary["uncertain_dollars"] == pytest.approx(uncertain * 1.2 / 1000)
    record = json.loads((result.run_dir / "budget.json").read_text())
    assert record["uncertain_reasons"] == {"Clarifai gRPC UNAVAILABLE": counters.unavailable}


def test_a_full_disk_at_the_checkpoint_is_one_line_and_its_command_continues(
        stopped_once: Path, tmp_path: Path) -> None:
    """Item 10 on a real full filesystem: the run stops with one line naming the folder, the
    file and that the spend is kept; the checkpoint before is intact; once space is freed the
    printed command continues the run to its end, and the ledger is the summary's."""
    from test_checkpoint import fill, tiny_filesystem

    with tiny_filesystem(2048) as disk:
        folder = copy_of(stopped_once, disk)
        spent = ledger_images(folder)
        filler = fill(disk, leave_bytes=24 * 1024)  # room for a few lines, not a checkpoint
        out = barapi("run", "--resume", str(folder), "--budget", "5000", cwd=tmp_path)
        assert out.returncode == 2
        line = one_line(out)
        assert line.startswith(f"barapi: error: {folder}: could not write ")
        assert "No space left on device" in line and "spent so far stays counted" in line
        assert line.endswith(f"continue with: barapi run --resume {folder}")
        assert ledger_images(folder) >= spent  # nothing paid was lost; nothing torn
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".lock"]
        filler.unlink()
        command = line.rsplit("continue with: ", 1)[1].split()
        out = barapi(*command[1:], "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["billed_images"] == ledger_images(folder)


def test_a_full_disk_at_the_ledger_sends_nothing_more_and_its_command_continues(
        stopped_once: Path, tmp_path: Path) -> None:
    """Item 10 at the ledger (ENOSPC injected after a few ledger lines of the resume): one
    line with the resume command, the ledger whole (the request whose line could not be
    written never left), and the command continues."""
    folder = copy_of(stopped_once, tmp_path)
    before = read_ledger(folder / "ledger.jsonl")
    inject = (
        "import errno, os, sys\n"
        "import barapi.checkpoint as safe\n"
        "real, lines = os.write, [0]\n"
        "def write(fd, data):\n"
        "    if os.readlink(f'/proc/self/fd/{fd}').endswith('ledger.jsonl'):\n"
        "        lines[0] += 1\n"
        "        if lines[0] > 6:\n"
        "            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return real(fd, data)\n"
        "safe.os.write = write\n"
        "from barapi.cli import main\n"
        "sys.argv[0] = 'barapi'\n"
        "main()\n")
    out = subprocess.run([sys.executable, "-c", inject, "run", "--resume", str(folder),
                          "--budget", "5000"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 2
    line = one_line(out)
    assert f"{folder}: could not write ledger.jsonl (No space left on device)" in line
    assert line.endswith(f"continue with: barapi run --resume {folder}")
    after = read_ledger(folder / "ledger.jsonl")  # whole: no torn line, no gap
    assert (folder / "ledger.jsonl").read_bytes().endswith(b"}\n")
    assert after.last_id > before.last_id and after.spent_nano > before.spent_nano
    out = barapi("run", "--resume", str(folder), "--budget", "5000", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["billed_images"] == ledger_images(folder)


def test_a_run_that_met_only_unavailable_says_its_spend_is_uncertain(tmp_path: Path) -> None:
    """Item 13 as the issue met it: every request meets gRPC UNAVAILABLE, the server bills
    nothing, the ledger counts every attempt as billed-uncertain — and the one line says so,
    with the reason, and budget.json records it."""
    env = {**os.environ, "CLARIFAI_PAT": "uncertain-test-key", "XDG_CACHE_HOME": str(tmp_path)}
    emulator = subprocess.Popen(
        [sys.executable, "-m", "barapi", "emulate", "clarifai", "--port", "0", "--input-size",
         "32", "--unavailable-every", "1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert emulator.stderr is not None
        endpoint = emulator.stderr.readline().strip().rsplit(" ", 1)[1]
        out = subprocess.run(
            [sys.executable, "-m", "barapi", "run", "--provider", "clarifai", "--endpoint",
             endpoint, "--insecure", "--canvas", "32", "--window", "16", "--resolution", "4",
             "--classes", "0,1", "--per-class", "10", "--q", "2", "--epochs", "1",
             "--budget", "1", "--no-cache", "--runs-dir", "runs"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    finally:
        emulator.terminate()
        billed = emulator.communicate(timeout=30)[1]
    assert "billed images: 0" in billed  # the server billed nothing
    assert out.returncode == 2
    line = one_line(out)
    folder = run_dir(tmp_path)
    totals = read_ledger(folder / "ledger.jsonl")
    assert totals.spent_nano == totals.uncertain_nano > 0
    spent = f"${totals.spent_nano / 1e9:.3f}"
    requests = totals.uncertain_reasons["Clarifai gRPC UNAVAILABLE"]
    assert line.startswith("barapi: error: Clarifai gRPC UNAVAILABLE")
    assert (f"; {spent} spent so far, {spent} of it uncertain: {requests} requests (Clarifai "
            f"gRPC UNAVAILABLE); the provider may not have billed them") in line
    assert line.endswith(f"continue with: barapi run --resume {folder.relative_to(tmp_path)}")
    record = json.loads((folder / "budget.json").read_text())
    assert record["uncertain_nanodollars"] == totals.uncertain_nano
    assert record["uncertain_reasons"] == {"Clarifai gRPC UNAVAILABLE": requests}
