"""The command line, run as a user runs it (subprocesses of the installed `barapi`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from barapi.budget import format_dollars

TINY = ["--canvas", "48", "--window", "24", "--input-size", "48", "--resolution", "4",
        "--per-class", "10", "--q", "3", "--epochs", "1", "--m", "2", "--device", "cpu",
        "--patience", "0"]


def barapi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "barapi", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    out = barapi("run", *TINY, "--json", "--runs-dir", "runs", cwd=cwd)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["queries"] > 0 and 0 <= summary["test_accuracy"] <= 1
    assert summary["zero_shot_test_accuracy"] >= 0
    return Path(summary["run_dir"]) if Path(summary["run_dir"]).is_absolute() \
        else cwd / summary["run_dir"]


def test_run_writes_a_complete_run_folder(finished_run: Path) -> None:
    names = {p.name for p in finished_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.npz", "program.png", "curves.png",
            "summary.json"} <= names
    records = [json.loads(x) for x in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert {"start", "step", "val"} <= {r["event"] for r in records}


def test_evaluate_and_predict(finished_run: Path, tmp_path: Path) -> None:
    out = barapi("evaluate", str(finished_run), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads((finished_run / "summary.json").read_text())
    assert json.loads(out.stdout)["accuracy"] == pytest.approx(summary["test_accuracy"])
    image = tmp_path / "three.png"
    from sklearn.datasets import load_digits
    Image.fromarray((load_digits().images[3] * 255 / 16).astype(np.uint8)).save(image)
    out = barapi("predict", str(finished_run), str(image), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["label"] in [str(i) for i in range(10)] and len(answer["scores"]) == 10


def test_a_run_whose_program_never_beat_its_start_says_so(tmp_path: Path) -> None:
    """A step size too small to change one 8-bit pixel: every validation equals the start's,
    so the kept program is the blank one, and the result line says so."""
    out = barapi("run", *TINY, "--lr", "1e-9", "--head", "map", "--runs-dir", "runs",
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "best val" in out.stdout and "(the unprogrammed start: no program beat it)" in out.stdout


def test_resume_of_a_finished_run_changes_nothing(finished_run: Path, tmp_path: Path) -> None:
    before = (finished_run / "checkpoint.npz").read_bytes()
    out = barapi("run", "--resume", str(finished_run), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import io
    old, new = np.load(io.BytesIO(before)), np.load(finished_run / "checkpoint.npz")
    assert np.array_equal(old["weights"], new["weights"])


@pytest.mark.parametrize("method", ["ar", "zero-shot"])
def test_other_methods_run(method: str, tmp_path: Path) -> None:
    out = barapi("run", *TINY, "--method", method, "--json", "--runs-dir", "r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    if method == "zero-shot":
        assert summary["steps"] == 0
        assert summary["test_accuracy"] == summary["probe_test_accuracy"]  # the linear head


def bad_npz(tmp_path: Path) -> str:
    x = np.zeros((12, 6, 6))
    x[3, 2, 2] = np.nan
    np.savez(tmp_path / "bad.npz", X=x, y=np.arange(12) % 2)
    return str(tmp_path / "bad.npz")


def corrupt_folder(tmp_path: Path) -> str:
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "imgs" / cls / "ok.png")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"\x89PNG garbage")
    return str(tmp_path / "imgs")


def single_class(tmp_path: Path) -> str:
    np.savez(tmp_path / "one.npz", X=np.zeros((9, 6, 6)), y=np.zeros(9))
    return str(tmp_path / "one.npz")


@pytest.mark.parametrize(("args", "message"), [
    (["--provider", "nosuch"], "unknown provider 'nosuch'"),
    (["--model", "resnet9000"], "unknown local model 'resnet9000'"),
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--window", "64", "--canvas", "32"], "window 64 is larger than the canvas 32"),
    (["--m", "200", "--head", "map"], "exceeds the black box's 1000 source labels"),
    (["--q", "0"], "q must be at least 1"),
    ([bad_npz], "NaN"),
    ([corrupt_folder], "broken.png"),
    ([single_class], "at least 2 classes"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_run(args: list, message: str,
                                                          tmp_path: Path) -> None:
    if callable(args[0]):
        args = ["--dataset", args[0](tmp_path)]
    out = barapi("run", *args, "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started, nothing was queried


def test_providers_lists_the_local_adapter(tmp_path: Path) -> None:
    out = barapi("providers", cwd=tmp_path)
    assert "local" in out.stdout.split()


PRICED = [*TINY, "--card-set", "price_per_1000=1000", "--runs-dir", "runs", "--cache-dir", "cache"]


def test_estimate_prints_the_cost_and_sends_nothing(tmp_path: Path) -> None:
    out = barapi("estimate", *TINY, "--card-set", "price_per_1000=2", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    phases = {p["name"]: p for p in json.loads(out.stdout)["phases"]}
    assert phases["label mapping"]["images"] == 100  # 10 per class, frequency mapping
    assert phases["total"]["dollars"] == pytest.approx(phases["total"]["images"] * 0.002)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_a_budget_too_small_for_a_measured_run_stops_before_spending(tmp_path: Path) -> None:
    out = barapi("run", *PRICED, "--budget", "50", cwd=tmp_path)
    assert out.returncode == 2
    assert "--budget $50 cannot pay for" in out.stderr and "smallest such run costs" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_budget_runs_out_mid_run_then_resume_with_more(tmp_path: Path) -> None:
    out = barapi("run", *PRICED, "--budget", "1100", "--yes", "--json", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "budget of $1,100.00 reached" in out.stderr and "--resume" in out.stderr
    summary = json.loads(out.stdout)
    assert summary["stopped"] and summary["dollars"] <= 1100
    folder = Path(summary["run_dir"]) if Path(summary["run_dir"]).is_absolute() \
        else tmp_path / summary["run_dir"]
    spent_before = summary["dollars"]
    out = barapi("run", "--resume", str(folder), "--budget", "5000", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["stopped"] is None and spent_before < summary["dollars"] <= 5000
    # the estimate printed on a resume is the whole run's: it says what was already spent
    out = barapi("run", "--resume", str(folder), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (f"(the whole run: {format_dollars(summary['dollars'])} of it already spent; a resume"
            " pays only for what is left, and answers already bought come from the cache)"
            in out.stderr)


def test_a_missing_optional_package_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    code = """
import sys

class NoGrpc:  # as on a machine where barapi was installed without its cloud extra
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" or name.startswith("grpc."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoGrpc())
from barapi.cli import main
main(["emulate", "clarifai", "--port", "0"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**__import__("os").environ, "CLARIFAI_PAT": "k"},
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("barapi: error: this needs the optional package grpc: "
                                  "pip install -e '.[cloud]' (or pip install 'barapi[cloud]')")


class EmulatorProcess:
    """`barapi emulate clarifai` in its own process, on a port of its choosing."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "barapi", "emulate", "clarifai", "--port", "0",
             "--input-size", "32"], stderr=subprocess.PIPE, text=True, env=env)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert "clarifai emulator on 127.0.0.1:" in line, line
        self.endpoint = line.strip().rsplit(" ", 1)[1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


def test_a_run_folder_may_reach_its_provider_at_a_new_endpoint(tmp_path: Path) -> None:
    """A run stopped by its budget, then resumed, evaluated and used for a prediction with
    --endpoint after the provider moved (an emulator restarted on another port)."""
    env = {**__import__("os").environ, "CLARIFAI_PAT": "cli-test-key",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    options = ["--provider", "clarifai", "--insecure", "--canvas", "32", "--window", "16",
               "--resolution", "4", "--classes", "0,1", "--per-class", "10", "--q", "2",
               "--batch", "10", "--epochs", "2", "--patience", "0", "--json"]
    first = EmulatorProcess(env)
    try:
        out = subprocess.run([sys.executable, "-m", "barapi", "run", *options, "--endpoint",
                              first.endpoint, "--budget", "0.15", "--yes"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    finally:
        first.stop()
    assert out.returncode == 3, out.stderr  # stopped by the budget, resumable
    folder = tmp_path / json.loads(out.stdout)["run_dir"]
    second = EmulatorProcess(env)
    try:
        assert second.endpoint != first.endpoint
        out = subprocess.run([sys.executable, "-m", "barapi", "run", "--resume", str(folder),
                              "--endpoint", second.endpoint, "--insecure", "--budget", "1",
                              "--json"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads(out.stdout)
        assert summary["stopped"] is None and 0.15 < summary["dollars"] <= 1
        reach = ["--endpoint", second.endpoint, "--insecure", "--json"]
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "one.png")
        for use in (["evaluate", str(folder), *reach],
                    ["predict", str(folder), str(tmp_path / "one.png"), *reach]):
            out = subprocess.run([sys.executable, "-m", "barapi", *use], capture_output=True,
                                 text=True, cwd=tmp_path, env=env, timeout=300)
            assert out.returncode == 0, (use[0], out.stderr[-2000:])
    finally:
        second.stop()
    saved = json.loads((folder / "config.json").read_text())["config"]
    assert saved["endpoint"] == first.endpoint  # the run folder keeps its own settings


def test_a_damaged_answer_cache_stops_a_priced_run_with_one_line_and_nothing_spent(
        tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.db").write_bytes(b"\xff" * 8192)
    out = barapi("run", *PRICED, "--budget", "2000", "--yes", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "barapi: error: answer cache cache: cannot read it (DatabaseError: file is not a "
        "database); stopped before paying for answers it may hold: repair or move the folder, "
        "choose another --cache-dir, or run with --no-cache"]
    assert not (tmp_path / "runs").exists()
