from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LinearSoftmaxAdapter, tiny_config

from barapi import api
from barapi.errors import ConfigError
from barapi.keys import Secret, read_key

KEY = "sk-test-5f2b9c0d7e1a4b3c"


def test_secret_never_shows_its_value() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret) and KEY not in str(secret) and KEY not in f"{secret}"
    assert secret.reveal() == KEY
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_keys_come_from_the_environment_or_a_named_file(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.delenv("BARAPI_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable BARAPI_TEST_KEY"):
        read_key("BARAPI_TEST_KEY")
    monkeypatch.setenv("BARAPI_TEST_KEY", KEY)
    assert read_key("BARAPI_TEST_KEY").reveal() == KEY
    (tmp_path / "key").write_text("from-file\n")
    assert read_key("BARAPI_TEST_KEY", tmp_path / "key").reveal() == "from-file"


class KeyedAdapter(LinearSoftmaxAdapter):
    """An adapter holding a key, as cloud adapters do."""

    def __init__(self) -> None:
        super().__init__()
        self.key = read_key("BARAPI_TEST_KEY")

    async def predict_proba(self, images: np.ndarray) -> np.ndarray:
        assert self.key.reveal() == KEY
        return await super().predict_proba(images)


def test_no_file_a_run_writes_contains_the_key(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("BARAPI_TEST_KEY", KEY)
    session = api.prepare(tiny_config(epochs=1), adapter=KeyedAdapter(), runs_root=tmp_path / "runs",
                          card_fields={"price_per_1000": 1.0}, cache_dir=tmp_path / "cache",
                          budget=10.0)
    session.run()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "ledger.jsonl" for p in written) and any("cache" in str(p) for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
        if path.name in ("ledger.jsonl", "checkpoint.npz") or "cache" in str(path):
            assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("provider", [
    ["--provider", "clarifai", "--model", "nsfw-recognition"],
    ["--provider", "azure", "--model", "proj/iter", "--labels", "a,b",
     "--endpoint", "https://example.cognitiveservices.azure.com"],
])
def test_estimate_needs_no_key_and_sends_nothing(provider: list[str], tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("CLARIFAI_PAT", "AZURE_CV_PREDICTION_KEY")}
    out = subprocess.run([sys.executable, "-m", "barapi", "estimate", *provider, "--classes", "0,1",
                          "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["phases"][-1]["dollars"] > 0
    run = subprocess.run([sys.executable, "-m", "barapi", "run", *provider, "--classes", "0,1",
                          "--budget", "100"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and "no API key" in run.stderr  # a run that would send: asked
    assert not (tmp_path / "runs").exists()


# --- malformed keys: refused where they are read, never shown -----------------------------------

PARTS = ("sk-first-half-7Q2", "second-half-9Z4")
"""A key's two halves: neither may appear in any message or file when the key is refused."""


@pytest.mark.parametrize(("value", "problem"), [
    (f"{PARTS[0]}\n{PARTS[1]}", "a line break"), (f"{PARTS[0]}\r{PARTS[1]}", "a line break"),
    (f"{PARTS[0]} {PARTS[1]}", "a space or tab"), (f"{PARTS[0]}\x07{PARTS[1]}", "a control"),
    (f"{PARTS[0]}é{PARTS[1]}", "not ASCII"),
])
def test_a_malformed_key_is_refused_in_one_line_that_shows_none_of_it(
        value: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BARAPI_TEST_KEY", value)
    with pytest.raises(ConfigError, match=f"environment variable BARAPI_TEST_KEY: the key holds "
                                          f".*{problem}") as from_env:
        read_key("BARAPI_TEST_KEY")
    lazy = read_key("BARAPI_TEST_KEY", lazy=True)  # what adapters hold: refused when first used
    with pytest.raises(ConfigError, match="environment variable BARAPI_TEST_KEY"):
        lazy.reveal()
    key_file = tmp_path / "key.txt"
    key_file.write_bytes(value.encode() + b"\n")
    with pytest.raises(ConfigError, match=f"key file {key_file}: ") as from_file:
        read_key("BARAPI_TEST_KEY", key_file)
    for message in (str(from_env.value), str(from_file.value)):
        assert "\n" not in message and not any(part in message for part in PARTS), message


def test_key_files_that_are_not_small_text_files_are_refused_without_reading_them(
        tmp_path: Path) -> None:
    """A FIFO would block for ever and /dev/zero never end: neither is read."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "big").write_text("k" * 5000)
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
    for path, message in [(fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                          (tmp_path, "not a regular file"), (tmp_path / "big", "larger than"),
                          (tmp_path / "none", "cannot read it")]:
        with pytest.raises(ConfigError, match=f"key file {path}: {message}"):
            read_key("BARAPI_TEST_KEY", path)
    assert read_key("BARAPI_TEST_KEY", tmp_path / "bom").reveal() == KEY  # a Windows editor's


def emulated(provider: str, key: str) -> Any:
    """(context manager serving `provider` on 127.0.0.1 with `key`, its run options)."""
    from conftest import LinearSoftmaxAdapter

    from barapi.emulate import AzureEmulator, ClarifaiEmulatorThread

    box = LinearSoftmaxAdapter(n_sources=20)
    if provider == "azure":
        server: Any = AzureEmulator(box, key, ["no", "yes"])
        return server, ["--provider", "azure", "--model", "proj/iter", "--labels", "no,yes",
                        "--endpoint", f"127.0.0.1:{server.port}", "--insecure"]
    thread = ClarifaiEmulatorThread(box, key)
    return thread, ["--provider", "clarifai", "--insecure", "--endpoint", f"127.0.0.1:{thread.port}"]


@pytest.mark.parametrize("provider", ["clarifai", "azure"])
def test_a_key_holding_a_newline_is_never_printed_or_written(provider: str, tmp_path: Path) -> None:
    """It was printed (`Illegal header value b'…'`) and, on a resume, written into
    metrics.jsonl and the ledger. Refused in one line, from the environment or a file, on a
    new run and on a resume; none of its characters reach the output or the run folder."""
    import gc

    from click.testing import CliRunner

    from barapi.cli import main

    good = "emulator-key-0123"
    env_var = "AZURE_CV_PREDICTION_KEY" if provider == "azure" else "CLARIFAI_PAT"
    bad = f"{PARTS[0]}\n{PARTS[1]}"
    (tmp_path / "bad.txt").write_text(bad + "\n")
    run = ["run", "--dataset", "digits", "--classes", "0,1", "--canvas", "16", "--window", "8",
           "--resolution", "4", "--per-class", "4", "--q", "1", "--epochs", "1", "--m", "1",
           "--batch", "4", "--patience", "0", "--runs-dir", "runs", "--no-cache"]
    server, options = emulated(provider, good)
    with server, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv(env_var, good)
        first = CliRunner().invoke(main, [*run, *options, "--budget", "0.05", "--yes"])
        assert first.exit_code == 3, first.output  # stopped by its budget: a resume sends more
        (folder,) = (tmp_path / "runs").iterdir()
        for how in ("env", "file"):
            mp.setenv(env_var, bad if how == "env" else good)
            key_file = ["--key-file", str(tmp_path / "bad.txt")] if how == "file" else []
            source = (f"environment variable {env_var}" if how == "env"
                      else f"key file {tmp_path / 'bad.txt'}")
            for args in ([*run, *options, "--budget", "5", *key_file],
                         ["run", "--resume", str(folder), "--budget", "5", *key_file]):
                gc.collect()  # a refused command's folder lock goes with its traceback
                result = CliRunner().invoke(main, args)
                assert result.exit_code == 2, (result.output, result.exception)
                lines = result.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith(f"barapi: error: {source}: "), lines
                assert not any(part in result.output for part in PARTS), result.output
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [folder.name]  # no new folder
    for path in folder.rglob("*"):
        if path.is_file():
            assert not any(part.encode() in path.read_bytes() for part in PARTS), path
