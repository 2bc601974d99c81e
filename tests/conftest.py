from __future__ import annotations

import asyncio
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one compute thread each (torch, BLAS, and the barapi processes
    # the tests start inherit it), not two apiece fighting over the cores.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")
from pathlib import Path

import numpy as np
import pytest

from barapi.adapters.base import Adapter
from barapi.config import RunConfig, make_config


class LinearSoftmaxAdapter(Adapter):
    """A deterministic numpy black box: softmax(A · mean colour of 4×4 cells); no torch."""

    card = "local"

    def __init__(self, n_sources: int = 20, seed: int = 0, max_batch: int = 64) -> None:
        self.labels = [f"s{i}" for i in range(n_sources)]
        self.max_batch = max_batch
        self.identity = f"test/linear-{n_sources}-{seed}"
        self.matrix = np.random.default_rng(seed).standard_normal((n_sources, 48)) * 4
        self.calls: list[int] = []

    async def predict_proba(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.ndim == 4
        self.calls.append(len(images))
        n, s = len(images), images.shape[1]
        cells = images.reshape(n, 4, s // 4, 4, s // 4, 3).mean(axis=(2, 4)) / 255.0 - 0.5
        logits = cells.reshape(n, -1) @ self.matrix.T
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def linear_adapter() -> LinearSoftmaxAdapter:
    return LinearSoftmaxAdapter()


@pytest.fixture(scope="session")
def lite0_32():
    """The real EfficientNet-Lite0 black box, run at 32 px to keep tests fast."""
    from barapi.adapters.local import create

    return create(model="efficientnet-lite0", device="cpu", input_size=32)


@pytest.fixture(scope="session")
def lite0_64():
    from barapi.adapters.local import create

    return create(model="efficientnet-lite0", device="cpu", input_size=64)


def tiny_config(**overrides: object) -> RunConfig:
    """Small, fast settings on digits (a few seconds on 2 cores)."""
    values: dict[str, object] = dict(canvas=32, window=16, input_size=32, resolution=4,
                                     per_class=20, q=4, batch=20, epochs=2, m=2, device="cpu",
                                     patience=0)
    values.update(overrides)
    return make_config(**values)


def run(coro):
    return asyncio.run(coro)


def not_a_regular_file(path: Path, kind: str) -> Path:
    """A path that is not a regular file, of `kind`: "/dev/zero" or another device path (itself),
    "fifo", "folder" or "link to /dev/zero" made at `path`; any other kind: `path` untouched."""
    import os

    if kind.startswith("/dev/"):
        return Path(kind)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    return path


def run_with_emulator(emulate: list[str], run: list[str], cwd: Path,
                      env: dict[str, str] | None = None) -> tuple[dict[str, object], int, str]:
    """`barapi emulate *emulate` in the background, then `barapi run *run --json` with "{url}"
    in `run` replaced by the emulator's http://127.0.0.1:PORT; the run must succeed. Returns
    its summary, the emulator's own count of billed images (said when it stops, on SIGTERM)
    and the run's stdout + stderr."""
    import json
    import signal
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-m", "barapi", "emulate", *emulate], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline() if server.stderr else ""
        assert "http://127.0.0.1:" in line, line
        url = line.split()[-1]
        done = subprocess.run([sys.executable, "-m", "barapi", "run",
                               *[a.replace("{url}", url) for a in run], "--json"],
                              env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
    finally:
        server.send_signal(signal.SIGTERM)
        _, tail = server.communicate(timeout=30)
    billed = int(next(x for x in tail.splitlines() if x.startswith("billed images:")).split(":")[1])
    return summary, billed, done.stdout + done.stderr


SERIAL = {"test_sweep.py", "test_sweep_driver.py", "test_sweep_progress.py", "test_sweep_spec.py",
          "test_reaper.py", "test_docs.py"}
"""Test files that start Ray or reap processes (docs/sweep.md runs a sweep): with pytest-xdist
they share one worker, one after another."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--dist loadgroup` (pyproject's addopts), each test file runs on one worker (its
    module fixtures, e.g. a started MLServer, set up once), and the SERIAL files on one."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("serial" if name in SERIAL else name))
