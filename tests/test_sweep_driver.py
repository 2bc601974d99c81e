"""The sweep driver refuses what cannot run before Ray starts or a sweep folder exists
(issue 29, item 9: `sweep --budget 0` on a priced card started Ray, printed its traceback and
left a folder; an unreachable --address retried for minutes; a damaged sweep.json was a
traceback)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from barapi.errors import ConfigError
from barapi.sweep import run_sweep
from benchmarks.bad_inputs import SPEC  # the bad-input table's tiny priced sweep

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(120)


def spec(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SPEC)
    return path


def nothing_started(tmp_path: Path) -> None:
    import ray

    assert not ray.is_initialized()
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(("budget", "message"), [
    (0.0, r"--budget \$0\.00: the sweep's trials pay local's \$1,000\.00 per 1,000 images, and "
          r"its first trial's label mapping alone \(\d+ images\) costs \$\d"),
    (0.5, r"costs \$\d"),
    (1e308, r"^--budget: expected a finite amount of dollars from 0 to 10,000,000"),
    (float("nan"), r"^--budget: expected a finite amount")])
def test_a_budget_that_pays_for_nothing_is_refused_before_ray(tmp_path: Path, budget: float,
                                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_sweep(spec(tmp_path), budget, sweeps_dir=tmp_path / "sweeps", progress=False)
    nothing_started(tmp_path)


def test_an_unreachable_cluster_is_refused_at_once_and_leaves_no_folder(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"--address 127\.0\.0\.1:{port}: cannot reach a Ray "
                                          r"cluster there"):
        run_sweep(spec(tmp_path), 100.0, sweeps_dir=tmp_path / "sweeps",
                  address=f"127.0.0.1:{port}", progress=False)
    with pytest.raises(ConfigError, match="--address nonsense: expected auto or HOST:PORT"):
        run_sweep(spec(tmp_path), 100.0, sweeps_dir=tmp_path / "sweeps", address="nonsense",
                  progress=False)
    nothing_started(tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("{oops", r"sweep\.json: not readable"),
    ("[]", r"sweep\.json: not a barapi sweep record"),
    ('{"id": "x", "spec": {}, "budget": "lots"}', r"sweep\.json: budget: expected a finite"),
])
def test_a_damaged_sweep_record_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        run_sweep(resume=folder, progress=False)
    import ray

    assert not ray.is_initialized()
