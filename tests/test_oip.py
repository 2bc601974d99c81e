"""barapi's Open Inference Protocol adapter against a real server: MLServer (from PyPI, in its own
virtual environment: it pins a protobuf that clarifai-grpc's cannot share), serving scikit-learn
models on 127.0.0.1, started by these tests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from barapi.adapters.oip import OIPAdapter, create, infer_geometry, parse_spec, read_labels
from barapi.budget import Budget
from barapi.config import make_config
from barapi.emulate import Faults, OIPEmulator
from barapi.errors import ConfigError, FatalProviderError, TransientError
from barapi.query import QueryService
from barapi.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
TRAIN = """
import sys, joblib
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
X, y = load_digits(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=3000).fit(X, y), sys.argv[1])
"""


def mlserver_executable() -> str | None:
    """MLServer's `mlserver` command: $BARAPI_MLSERVER, else .venv-mlserver/bin/mlserver in the
    repository (what the README's test command and .ci/run install)."""
    found = os.environ.get("BARAPI_MLSERVER") or str(ROOT / ".venv-mlserver" / "bin" / "mlserver")
    return found if Path(found).is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT of a running MLServer with models "digits" (metadata declared,
    version v1) and "bare" (no metadata: scikit-learn's defaults), both a logistic regression on
    scikit-learn's 8×8 digits (64 values 0..16, row by row)."""
    executable = mlserver_executable()
    if executable is None:
        if os.environ.get("BARAPI_REQUIRE_MLSERVER"):
            pytest.fail("MLServer is required (BARAPI_REQUIRE_MLSERVER) but not installed: "
                        "python3 -m venv .venv-mlserver && .venv-mlserver/bin/pip install "
                        "mlserver==1.7.1 mlserver-sklearn==1.7.1")
        pytest.skip("MLServer not installed (.venv-mlserver or $BARAPI_MLSERVER; see README)")
    root = tmp_path_factory.mktemp("mlserver")
    python = str(Path(executable).with_name("python"))
    (root / "digits").mkdir()
    subprocess.run([python, "-c", TRAIN, str(root / "digits" / "model.joblib")], check=True,
                   timeout=120)
    (root / "bare").mkdir()
    shutil.copy(root / "digits" / "model.joblib", root / "bare" / "model.joblib")
    sklearn_model = "mlserver_sklearn.SKLearnModel"
    (root / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": sklearn_model,
        "parameters": {"uri": "./model.joblib", "version": "v1"},
        "inputs": [{"name": "pixels", "datatype": "FP64", "shape": [-1, 64]}],
        "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}]}))
    (root / "bare" / "model-settings.json").write_text(json.dumps({
        "name": "bare", "implementation": sklearn_model, "parameters": {"uri": "./model.joblib"}}))
    port = free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 0}))
    log = open(root / "log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([executable, "start", str(root)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (root / "log").read_text()[-2000:]
            time.sleep(0.3)
        else:
            pytest.fail(f"MLServer did not get ready: {(root / 'log').read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def digit_images(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8, 3) uint8 renderings of scikit-learn's digits (0..16 → 0..255) and their labels."""
    digits = load_digits()
    pick = np.random.default_rng(seed).choice(len(digits.target), n, replace=False)
    grey = np.rint(digits.images[pick] * 255 / 16).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3), digits.target[pick]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def checked_answers(a: OIPAdapter, images: np.ndarray) -> np.ndarray:
    """`a`'s free check, then its answers to `images`; its client closed after."""
    await a.check()
    try:
        return await a.predict_proba(images)
    finally:
        await a.aclose()


def test_the_metadata_says_the_input_and_output_and_the_user_states_the_range(server: str) -> None:
    a = create(model="digits", endpoint=server)
    with pytest.raises(ConfigError, match=r"does not say what values input 'pixels' \(FP64\).*"
                                          r"range=LO\.\.HI"):
        run(a.check())
    a = create(model="digits@v1", endpoint=server, oip_input="range=0..16")
    images, labels = digit_images()
    probs = run(checked_answers(a, images))
    assert a.spec is not None and (a.spec.name, a.spec.layout, a.spec.channels) == ("pixels", "FLAT", 1)
    assert a.labels == [str(i) for i in range(10)] and a.version == "v1"
    assert probs.shape == (120, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the image reached the model as the digits it was trained on: its own accuracy
    assert (probs.argmax(axis=1) == labels).mean() > 0.9


def test_a_model_without_metadata_takes_the_users_spec_and_says_what_is_missing(server: str) -> None:
    with pytest.raises(ConfigError, match=r"lists no inputs.*name=INPUT"):
        run(create(model="bare", endpoint=server).check())
    with pytest.raises(ConfigError, match="does not say the image's size: add shape="):
        run(create(model="bare", endpoint=server, oip_input="name=x,datatype=FP64").check())
    spec = "name=x,datatype=FP64,shape=8x8,layout=FLAT,range=0..16"
    images, labels = digit_images(40)
    # the scikit-learn runtime's default output is class ids: refused with the fix, billed
    a = create(model="bare", endpoint=server, oip_input=spec, labels=",".join("abcdefghij"))
    with pytest.raises(FatalProviderError, match="output=predict_proba") as refused:
        run(a.predict_proba(images))
    assert refused.value.billed
    # with the probability output named, the labels (none given) are learned from one answer
    a = create(model="bare", endpoint=server, oip_input=spec + ",output=predict_proba")
    service = QueryService(a, Budget(0.0, 0.0))

    async def go() -> np.ndarray:
        await a.ensure_checked()
        assert a.paid_labels  # no output metadata: K is told by the first answer
        a.use_labels(await service.discover_labels(images[0]))
        return await service.predict_proba(images)

    probs = run(go())
    assert a.labels == [str(i) for i in range(10)]
    assert (probs.argmax(axis=1) == labels).mean() > 0.9


def test_server_errors_are_barapis_kinds_with_the_servers_text(server: str) -> None:
    with pytest.raises(ConfigError, match=r"no such model.*404 Model nope not found"):
        run(create(model="nope", endpoint=server).check())
    with pytest.raises(ConfigError, match="version v9 not found"):
        run(create(model="digits@v9", endpoint=server, oip_input="range=0..1").check())
    with pytest.raises(ConfigError, match=r"holds 49 values, but .* takes \[-1, 64\]"):
        run(create(model="digits", endpoint=server, oip_input="range=0..1,shape=7x7").check())
    images, _ = digit_images(3)
    # 4xx: a refused request (an output the runtime does not have), not retried
    a = create(model="bare", endpoint=server,
               oip_input="name=x,datatype=FP64,shape=8x8,layout=FLAT,range=0..16,output=nope")
    with pytest.raises(FatalProviderError, match="400: SKLearnModel only supports"):
        run(a.predict_proba(images))
    # 5xx (a shape the model cannot take): retried, counted as billed (the body had left)
    a = create(model="bare", endpoint=server,
               oip_input="name=x,datatype=FP64,shape=4x4,layout=FLAT,range=0..16,"
                         "output=predict_proba", labels=",".join("abcdefghij"))
    service = QueryService(a, Budget(1.0, 1.0), retry=RetryPolicy(attempts=2, base=0.01, cap=0.02))
    with pytest.raises(TransientError, match="500"):
        run(service.predict_proba(images))
    assert service.stats.attempts == 2 and service.budget.spent == pytest.approx(2 * 3 / 1000)


def test_a_model_unloaded_mid_run_stops_the_run(server: str) -> None:
    a = create(model="digits", endpoint=server, oip_input="range=0..16")
    images, _ = digit_images(2)

    async def go() -> None:
        await a.check()
        await a.predict_proba(images)
        async with httpx.AsyncClient(base_url=server) as client:
            assert (await client.post("/v2/repository/models/digits/unload")).status_code == 200
            try:
                with pytest.raises(FatalProviderError, match="404: Model digits not found"):
                    await a.predict_proba(images)
            finally:
                assert (await client.post("/v2/repository/models/digits/load")).status_code == 200

    run(go())


def test_a_bar_run_reprograms_the_served_model_through_the_cli(server: str, tmp_path: Path) -> None:
    run_ = subprocess.run(
        [sys.executable, "-m", "barapi", "run", "--provider", "oip", "--endpoint", server,
         "--model", "digits", "--oip-input", "range=0..16", "--dataset", "digits", "--classes",
         "0,1", "--canvas", "16", "--window", "8", "--resolution", "4", "--per-class", "20",
         "--q", "2", "--epochs", "1", "--m", "1", "--batch", "10", "--runs-dir", "runs",
         "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run_.returncode == 0, run_.stderr
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["billed_images"] > 0 and summary["dollars"] == 0
    assert summary["test_accuracy"] is not None
    assert "input 'pixels': FP64 FLAT 64" in run_.stderr  # says what the model is sent


def test_spec_parsing_and_shape_inference_fail_with_one_line() -> None:
    assert parse_spec("name=x, range=0..1") == {"name": "x", "range": "0..1"}
    for bad, said in [("size=3", "KEY one of"), ("name", "KEY=VALUE"), ("name=a,name=b", "twice")]:
        with pytest.raises(ConfigError, match=said):
            parse_spec(bad)
    assert infer_geometry([-1, 224, 224, 3]) == (224, 224, 3, "NHWC")
    assert infer_geometry([-1, 3, 32, 32]) == (32, 32, 3, "NCHW")
    assert infer_geometry([-1, 28, 28]) == (28, 28, 1, "NHW")
    assert infer_geometry([-1, 784]) == (28, 28, 1, "FLAT")
    assert infer_geometry([-1, 3 * 16 * 16]) == (16, 16, 3, "FLAT")
    assert infer_geometry([-1, 10]) is None and infer_geometry([-1, -1, -1, 3]) is None
    with pytest.raises(ConfigError, match="needs --endpoint"):
        create(model="m")
    with pytest.raises(ConfigError, match="needs --model"):
        create(endpoint="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="plaintext http to another host needs --insecure"):
        create(model="m", endpoint="http://10.0.0.1:8080")
    with pytest.raises(ValueError, match="only --provider oip takes it"):
        make_config(provider="local", oip_input="range=0..1")
    assert isinstance(create(model="m", endpoint="http://10.0.0.1:8080", insecure=True), OIPAdapter)


def test_labels_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("zero\none\n\n")
    assert read_labels(f"@{tmp_path / 'labels.txt'}") == ["zero", "one"]
    (tmp_path / "twice.txt").write_text("a\na\n")
    with pytest.raises(ConfigError, match="'a' is named twice"):
        read_labels(f"@{tmp_path / 'twice.txt'}")
    with pytest.raises(ConfigError, match="labels file"):
        read_labels(f"@{tmp_path / 'missing.txt'}")


# ---- barapi's own OIP emulator (the rehearsal's server): an image model, UINT8 NHWC ----

def emulated(faults: Faults | None = None, side: int = 16) -> OIPEmulator:
    from conftest import LinearSoftmaxAdapter

    return OIPEmulator({"box": LinearSoftmaxAdapter(n_sources=5)}, side, faults)


def noise(n: int, side: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_an_image_model_needs_no_spec_and_answers_what_the_box_answers() -> None:
    from conftest import LinearSoftmaxAdapter

    with emulated() as emulator:
        a = create(model="box", endpoint=f"http://127.0.0.1:{emulator.port}")
        images = noise(5)
        probs = run(checked_answers(a, images))
    assert a.spec is not None and (a.spec.datatype, a.spec.layout, a.spec.output) == (
        "UINT8", "NHWC", "probabilities")
    assert a.labels == ["0", "1", "2", "3", "4"] and a.label_note is not None
    expected = run(LinearSoftmaxAdapter(n_sources=5).predict_proba(images))
    np.testing.assert_allclose(probs, expected, atol=1e-6)  # the same pixels reached the box
    assert emulator.counters.billed_images == 5


def test_throttling_is_retried_unbilled_and_outages_and_lost_answers_are_billed() -> None:
    retry = RetryPolicy(attempts=6, base=0.01, cap=0.05)
    with emulated(Faults(unavailable_every=2, drop_every=3)) as emulator:
        a = create(model="box", endpoint=f"http://127.0.0.1:{emulator.port}")
        service = QueryService(a, Budget(1.0, 10.0), retry=retry, max_batch=1)
        probs = run(service.predict_proba(noise(4)))
    assert probs.shape == (4, 5) and emulator.counters.unavailable and emulator.counters.dropped
    # every attempt that reached the model or failed after sending (503, a lost answer) is
    # counted as billed: more than the server billed, never less
    assert service.stats.attempts == emulator.counters.requests > 4
    assert service.budget.spent == pytest.approx(service.stats.attempts / 1000)
    with emulated(Faults(max_rps=2.0)) as emulator:
        a = create(model="box", endpoint=f"http://127.0.0.1:{emulator.port}")
        service = QueryService(a, Budget(1.0, 10.0), retry=retry, max_batch=1)
        run(service.predict_proba(noise(3)))
    assert emulator.counters.throttled > 0  # 429s happened, were retried, were not billed
    assert service.budget.spent == pytest.approx(emulator.counters.billed_images / 1000)


def test_the_rehearsal_runs_through_barapi_emulate_oip(tmp_path: Path) -> None:
    from conftest import run_with_emulator

    summary, billed, _ = run_with_emulator(
        ["oip", "--box", "modk", "--input-size", "32"],
        ["--provider", "oip", "--endpoint", "{url}", "--model", "modk-nsfw", "--dataset", "digits",
         "--classes", "0,1", "--canvas", "32", "--window", "16", "--resolution", "4",
         "--per-class", "10", "--q", "2", "--epochs", "1", "--m", "1", "--batch", "10",
         "--runs-dir", "runs"], tmp_path)
    assert billed == summary["billed_images"] > 0 and summary["dollars"] == 0


def test_logits_are_refused_with_the_fix() -> None:
    from conftest import LinearSoftmaxAdapter

    class Logits(LinearSoftmaxAdapter):
        async def predict_proba(self, images: np.ndarray) -> np.ndarray:
            return np.log(await super().predict_proba(images)) + 3.0

    with OIPEmulator({"box": Logits(n_sources=5)}, 16) as emulator:
        a = create(model="box", endpoint=f"http://127.0.0.1:{emulator.port}")
        with pytest.raises(FatalProviderError, match=r"outside \[0, 1\] \(logits\?\)"):
            run(a.predict_proba(noise(2)))
