from __future__ import annotations

import pickle
from pathlib import Path

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
