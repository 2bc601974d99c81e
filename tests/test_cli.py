"""The command line, run as a user runs it (subprocesses of the installed `barapi`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from barapi.budget import format_dollars

TINY = ["--dataset", "digits", "--canvas", "48", "--window", "24", "--input-size", "48", "--resolution", "4",
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


def test_predict_prepares_an_image_as_training_did_whatever_its_size_or_colour(
        finished_run: Path, tmp_path: Path) -> None:
    """Issue 31: a training image saved at another size (8×8 digits enlarged to 64 px, as a
    user's scan would be) or in colour gets the answer its 8×8 original gets: predict resizes
    to the dataset's recorded sample size and colour before the canvas embeds it."""
    from sklearn.datasets import load_digits

    record = json.loads((finished_run / "config.json").read_text())["session"]["input"]
    assert record == {"height": 8, "width": 8, "grey": True, "float_scale": None}
    digits = load_digits()
    originals = [np.rint(digits.images[i] * 255 / 16).astype(np.uint8) for i in range(10)]
    paths: dict[str, list[str]] = {"8px": [], "64px": [], "64px-colour": []}
    for i, grey in enumerate(originals):
        im = Image.fromarray(grey)
        for kind, saved in (("8px", im), ("64px", im.resize((64, 64), Image.Resampling.NEAREST)),
                            ("64px-colour", im.resize((64, 64), Image.Resampling.NEAREST)
                             .convert("RGB"))):
            path = tmp_path / f"{i}-{kind}.png"
            saved.save(path)
            paths[kind].append(str(path))
    answers = {}
    for kind, files in paths.items():
        out = barapi("predict", str(finished_run), *files, "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        answers[kind] = [json.loads(line) for line in out.stdout.splitlines()]
    for kind in ("64px", "64px-colour"):
        for small, large in zip(answers["8px"], answers[kind], strict=True):
            assert large["label"] == small["label"]
            assert large["scores"] == pytest.approx(small["scores"], abs=1e-5)
    out = barapi("predict", str(finished_run), paths["64px"][0], cwd=tmp_path)
    assert "images prepared as the training images were (8×8 px, grey)" in out.stderr


METHOD_ONLY = ["--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
               "--per-class", "10", "--q", "1", "--epochs", "2", "--device", "cpu"]
"""Tiny method settings naming no task and no black box: the default job's task and box."""


def test_the_default_job_is_a_few_output_box_and_it_talks_while_it_works(tmp_path: Path) -> None:
    """Issue 31: `barapi run` naming no task and no black box runs the default job (the
    two-output imagenet-nsfw box reprogrammed for MNIST 0 vs 1, --preset demo), prints
    progress lines on stderr when stderr is not a terminal, and says what the program added
    beside the linear probe; -q silences the progress lines, not the result."""
    from barapi.config import PRESETS

    out = barapi("run", *METHOD_ONLY, "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("barapi: the default job (--preset demo)")
    assert "barapi: bar on mnist5k (classes 0,1) through local/imagenet-nsfw" in out.stderr
    progress = [line for line in out.stderr.splitlines() if " barapi: step " in line]
    assert progress and all(" images · $0.00 · val " in line for line in progress), out.stderr
    result, lift = out.stdout.splitlines()[:2]
    assert result.startswith("test accuracy ") and "linear probe " in result
    assert "· $0 (a free black box)" in result and "billed" not in result
    assert lift.startswith("the program added ")
    folder = next((tmp_path / "runs").iterdir())
    config = json.loads((folder / "config.json").read_text())["config"]
    assert {k: config[k] for k in PRESETS["demo"]} == PRESETS["demo"]
    assert json.loads((folder / "summary.json").read_text())["test_images"] == 300
    assert "on the same 300 test images)" in result

    quiet = barapi("-q", "run", *METHOD_ONLY, "--runs-dir", "runs", cwd=tmp_path)
    assert quiet.returncode == 0 and " barapi: step " not in quiet.stderr
    assert quiet.stdout.startswith("test accuracy ")
    named = barapi("estimate", "--dataset", "digits", cwd=tmp_path)  # a task named: not the job
    assert "training" in named.stderr and "(the default job" not in named.stderr
    assert named.stderr.startswith("barapi: bar on digits through local/efficientnet-lite0, "
                                   "canvas 112, program 8², q=10, 6 epoch(s) (nothing is sent)")
    assert ("(at most: --patience 2 stops training early only once a program has beaten the "
            "unprogrammed start; until then every epoch runs)") in named.stderr
    assert "barapi: step 0/" in out.stderr and "testing the selected program" in out.stderr


@pytest.mark.parametrize("signum,code,word,priced", [
    (signal.SIGINT, 130, "interrupted", False), (signal.SIGTERM, 143, "terminated", False),
    (signal.SIGINT, 130, "interrupted", True)])
def test_ctrl_c_or_a_termination_names_the_run_folder_to_resume(
        tmp_path: Path, signum: int, code: int, word: str, priced: bool) -> None:
    """Issue 31: an interrupted run (Ctrl-C; SIGTERM from `timeout` or a scheduler) says which
    folder to resume, not RUN_DIR."""
    import time

    def as_from_a_terminal() -> None:  # a background job of a script inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    # a cache of its own: answers the machine's shared cache holds would make the run spend $0
    price = ["--card-set", "price_per_1000=1", "--budget", "1000", "--yes",
             "--cache-dir", str(tmp_path / "cache")] if priced else []
    proc = subprocess.Popen([sys.executable, "-m", "barapi", "run", *TINY, "--epochs", "50",
                             "--runs-dir", "runs", *price], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # interrupt once a step is recorded
        logs = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if logs and '"event": "step"' in logs[0].read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    folder = next((tmp_path / "runs").iterdir())
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"barapi: {word}; ") and last.endswith(
        f"what was paid for is kept in runs/{folder.name}: continue with barapi run --resume "
        f"runs/{folder.name}")
    assert ("spent so far" in last) == priced  # a priced run says what it spent


def test_run_help_groups_every_option_by_what_a_user_decides() -> None:
    """Issue 31: `run --help` in four groups; every RunConfig field in exactly one."""
    from barapi.cli import GROUPS
    from barapi.config import RunConfig

    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(RunConfig.model_fields)
    text = subprocess.run([sys.executable, "-m", "barapi", "run", "--help"], capture_output=True,
                          text=True, timeout=60).stdout
    titles = [line for line in text.splitlines() if line and not line.startswith(" ")
              and line.endswith(":")]
    assert titles == ["Task and data:", "Black box and money:", "Method:", "Output:",
                      "Other options:"]
    assert "omit for full" not in text and "--resolution K|full" in text


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
    (["--dataset", "digits", "--m", "200", "--head", "map"], "exceeds the black box's 1000 source labels"),
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


MISSING_PACKAGE_CASES = [
    # (package made missing, command, what the line names, the extra)
    ("grpc", ["emulate", "clarifai", "--port", "0"], "this needs the optional package grpc", "cloud"),
    ("clarifai_grpc", ["estimate", "--provider", "clarifai"],
     "the clarifai provider needs the optional package clarifai-grpc", "cloud"),
    ("onnx2torch", ["run", "--model", "nudenet-nsfw", "--method", "ar", "--classes", "0,1",
                    "--per-class", "2", "--epochs", "1", "--runs-dir", "r"],
     "the nudenet boxes' white-box reference needs the optional package onnx2torch", "nudenet"),
    ("efficientnet_lite_pytorch", ["estimate"],
     "model efficientnet-lite0 needs the optional package efficientnet-lite-pytorch", "local"),
]


@pytest.mark.parametrize("package,args,what,extra", MISSING_PACKAGE_CASES,
                         ids=[c[0] for c in MISSING_PACKAGE_CASES])
def test_a_missing_optional_package_is_one_line_with_the_one_install_hint(
        tmp_path: Path, package: str, args: list[str], what: str, extra: str) -> None:
    """Issue 31: every "missing package" error gives the same install command for its extra
    (`install_hint`: onnx2torch's --no-deps included), never a traceback."""
    from barapi.adapters.base import install_hint

    code = f"""
import sys

class Missing:  # as on a machine where barapi was installed without the extra
    def find_spec(self, name, path=None, target=None):
        if name == {package!r} or name.startswith({package!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from barapi.cli import main
main({args!r})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**__import__("os").environ, "CLARIFAI_PAT": "k"},
                         timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"barapi: error: {what}: {install_hint(extra)}"
    assert "--no-deps" in last if extra == "nudenet" else "--no-deps" not in last


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


def test_the_header_names_the_model_the_provider_chose_when_model_is_left_out() -> None:
    """Issue 31: not "clarifai/default": the model the adapter queries."""
    from types import SimpleNamespace

    from barapi.cli import model_name
    from barapi.config import make_config

    clarifai = SimpleNamespace(model="moderation-recognition", identity="clarifai/x@latest")
    assert model_name(make_config(provider="clarifai"), clarifai) == "moderation-recognition"
    local = SimpleNamespace(identity="local/efficientnet-lite0/0123abcd@112/logits/(0.4,)/(0.2,)")
    assert model_name(make_config(), local) == "efficientnet-lite0"
    assert model_name(make_config(model="imagenet-nsfw"), local) == "imagenet-nsfw"
