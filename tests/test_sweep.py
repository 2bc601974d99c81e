"""`barapi sweep` on a real local Ray, against the Clarifai emulator (issue 17).

One uninterrupted sweep (Ray in this process) is the reference. Then: a sweep whose budget
stops it midway, continued with `--resume` and a larger budget; and a sweep on a Ray cluster
(a head started with `ray start --head` on 127.0.0.1 plus a worker node joining it) whose
driver is killed with kill -9 mid-sweep, then resumed. Each must give the reference's trial
results; the trials' ledgers must add up to what the emulator billed (plus, after a kill,
at most the requests that were in flight), and never to more than the sweep's budget; the
emulator must see the account's requests at no more than the card's rate.

The four trials vary `classes` (disjoint digits), so no trial can buy another's answers and
each trial's spend is the same in every sweep.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("clarifai_grpc")

import contextlib

from barapi.budget import read_ledger

KEY = "sweep-test-key"
RATE = 4.0  # the card's requests per second (the account's limit)
PRICE = 1.2e-3  # dollars per image (Clarifai Moderation's card)
CLASSES = ["0,1", "2,3", "4,5", "6,7"]
OBJECT_STORE = 80 * 2**20
pytestmark = pytest.mark.timeout(240)


def spec_text(port: int, cache: Path) -> str:
    return f"""
[run]
provider = "clarifai"
model = "moderation-recognition"
endpoint = "127.0.0.1:{port}"
insecure = true
canvas = 32
window = 16
resolution = 4
per_class = 10
q = 2
batch = 10
epochs = 2
patience = 0
[grid]
classes = {json.dumps(CLASSES)}
[card]
requests_per_second = {RATE}
[sweep]
cpus_per_trial = 0.5
cache_dir = "{cache}"
"""


class Emulator:
    """`barapi emulate clarifai` in its own process (the provider of every test here),
    publishing its counters to a file after each request."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "counters.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "barapi", "emulate", "clarifai", "--port", "0",
             "--input-size", "32", "--counters-file", str(self.file)],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "CLARIFAI_PAT": KEY})
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert "clarifai emulator on 127.0.0.1:" in line, line
        self.port = int(line.strip().rsplit(":", 1)[1])

    @property
    def counters(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.file.read_text())
        return data

    @property
    def billed(self) -> int:
        return int(self.counters["billed_images"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    old = os.environ.get("CLARIFAI_PAT")
    os.environ["CLARIFAI_PAT"] = KEY  # Ray's workers inherit it
    served = Emulator(tmp_path_factory.mktemp("emulator"))
    yield served
    served.stop()
    if old is None:
        os.environ.pop("CLARIFAI_PAT", None)
    else:
        os.environ["CLARIFAI_PAT"] = old


def ledgers(sweep_dir: Path) -> tuple[int, int]:
    """(billed images, of which uncertain) over the trials' own ledgers."""
    totals = [read_ledger(p) for p in sorted((sweep_dir / "trials").glob("*/ledger.jsonl"))]
    return sum(t.images for t in totals), sum(t.uncertain_images for t in totals)


def by_trial(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {r["name"]: (r["status"], r["val_accuracy"], r["test_accuracy"], r["steps"])
            for r in rows}


def in_process_sweep(spec: Path, budget: float, **options: Any) -> Any:
    import ray

    from barapi.sweep import run_sweep

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        return run_sweep(spec, budget, **options)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    """The uninterrupted sweep, Ray in this process, with what the emulator saw."""
    root = tmp_path_factory.mktemp("reference")
    spec = root / "sweep.toml"
    spec.write_text(spec_text(emulator.port, root / "cache"))
    billed, seen = emulator.billed, len(emulator.counters["accepted_times"])
    result = in_process_sweep(spec, 20.0, sweeps_dir=root / "sweeps")
    return {"result": result, "billed": emulator.billed - billed,
            "times": emulator.counters["accepted_times"][seen:]}


def test_a_sweep_pays_through_one_wallet_and_reports_its_trials(reference: dict[str, Any]) -> None:
    result = reference["result"]
    assert [r["status"] for r in result.rows] == ["done"] * 4, result.rows
    images, uncertain = ledgers(result.sweep_dir)
    assert images == reference["billed"] > 0 and uncertain == 0  # the ledgers are the truth
    assert result.spent == pytest.approx(images * PRICE) and result.spent <= 20.0
    table = json.loads((result.sweep_dir / "results.json").read_text())
    assert table["spent"] == pytest.approx(table["trials_spent"])  # every lease settled
    best = table["best"]
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in table["trials"])
    header = (result.sweep_dir / "results.csv").read_text().splitlines()[0]
    assert header.startswith("index,name,classes,status,val_accuracy,test_accuracy")
    assert (result.sweep_dir / "accuracy_vs_dollars.png").stat().st_size > 1000
    for row in result.rows:  # ordinary run folders, and Tune saw each trial's reports
        folder = Path(row["run_dir"])
        assert (folder / "summary.json").exists() and (folder / "checkpoint.npz").exists()
        assert row["billed_images"] == read_ledger(folder / "ledger.jsonl").images


def test_the_trials_together_keep_to_the_accounts_rate(reference: dict[str, Any]) -> None:
    times = reference["times"]
    assert len(times) >= 30
    # at most RATE per second over any 2 s, give or take two requests: the times are arrivals
    # at the emulator, and a request the shared limiter let go may reach it late, next to the
    # one after it, when the CPU is busy (the tests run two at a time)
    window = 2.0
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= RATE * window + 2, busiest
    mean = (len(times) - 1) / (times[-1] - times[0])
    assert mean <= RATE * 1.02, mean  # four trials alone would go up to four times as fast


def test_evaluate_works_on_a_trials_run_folder(reference: dict[str, Any],
                                               emulator: Emulator) -> None:
    folder = reference["result"].rows[0]["run_dir"]
    before = read_ledger(Path(folder) / "ledger.jsonl").images
    out = subprocess.run([sys.executable, "-m", "barapi", "evaluate", folder, "--budget", "1",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accuracy"] == reference["result"].rows[0]["test_accuracy"]
    assert read_ledger(Path(folder) / "ledger.jsonl").images == before  # cached: $0


def test_a_budget_stops_the_sweep_midway_and_resume_finishes_it(
        reference: dict[str, Any], emulator: Emulator, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.toml"
    spec.write_text(spec_text(emulator.port, tmp_path / "cache"))  # a cache of its own
    billed = emulator.billed
    budget = round(reference["result"].spent / 2, 2)
    stopped = in_process_sweep(spec, budget, sweeps_dir=tmp_path / "sweeps", progress=False)
    assert stopped.stopped, stopped.rows  # the budget ran out mid-sweep
    images, _ = ledgers(stopped.sweep_dir)
    assert images == emulator.billed - billed
    assert images * PRICE <= budget + 1e-9 and stopped.spent <= budget + 1e-9
    resumed = in_process_sweep(None, 20.0, resume=stopped.sweep_dir, progress=False)
    assert by_trial(resumed.rows) == by_trial(reference["result"].rows)
    images, uncertain = ledgers(resumed.sweep_dir)
    assert images == emulator.billed - billed == reference["billed"]  # nothing twice
    assert uncertain == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


@pytest.fixture
def cluster(tmp_path: Path, emulator: Emulator) -> Iterator[dict[str, Any]]:
    """A Ray head on 127.0.0.1 and a worker node joining it, each one `ray start --block`
    process with its own token; stopped by killing exactly the processes they started."""
    ray = str(Path(sys.executable).parent / "ray")
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    temp = Path(f"/tmp/rb{secrets.token_hex(3)}")
    common = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE), "--block",
              "--disable-usage-stats"]
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(subprocess.Popen(
            [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--include-dashboard=false", "--temp-dir", str(temp), *common], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while subprocess.run([ray, "health-check", "--address", address], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        started.append(subprocess.Popen(
            [ray, "start", "--address", address, *common], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        yield {"address": address, "env": env}
    finally:
        for process in started:  # `ray stop` would stop every Ray of this machine: not ours
            for pid in process_tree(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def barapi(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "barapi", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_of_the_driver_then_resume_on_a_cluster_pays_only_what_was_in_flight(
        reference: dict[str, Any], emulator: Emulator, cluster: dict[str, Any],
        tmp_path: Path) -> None:
    spec = tmp_path / "sweep.toml"
    spec.write_text(spec_text(emulator.port, tmp_path / "cache"))
    billed = emulator.billed
    driver = barapi("sweep", str(spec), "--budget", "20", "--address", cluster["address"],
                    "--no-progress", env=cluster["env"], cwd=tmp_path)
    deadline = time.monotonic() + 150
    while emulator.billed - billed < reference["billed"] * 0.4:
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the sweep did not get going"
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    resumed = barapi("sweep", "--resume", str(sweep_dir), "--address", cluster["address"],
                     "--json", "--no-progress", env=cluster["env"], cwd=tmp_path)
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]
    rows = json.loads(out)["trials"]
    assert by_trial(rows) == by_trial(reference["result"].rows)
    paid = emulator.billed - billed
    images, in_flight = ledgers(sweep_dir)
    assert paid <= reference["billed"] + in_flight  # nothing paid twice beyond what was in flight
    assert paid <= images <= paid + in_flight  # the ledgers count what was in flight as billed
    assert images * PRICE <= 20.0
    assert len({r["node"] for r in rows}) == 2  # trials ran on both nodes
