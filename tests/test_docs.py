"""Every code block of the README and docs/ runs, so that no example can rot.

Blocks are run in document order, in one scratch folder per document, with tiny settings:
`bash` blocks through a `barapi` on PATH that appends TINY to `run` and `estimate` (click
keeps the last value of an option, so TINY wins), `python` blocks after a prelude that
gives `make_config` and `BARClassifier` tiny defaults (what a block passes explicitly still
wins). The set-up commands' installs are what `.ci/run` itself does (checked below), so of
those blocks only what follows the installs runs here. `text` blocks are sample output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TINY = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--per-class", "5", "--q", "1", "--epochs", "1", "--m", "2", "--device", "cpu",
        "--patience", "0"]
PRELUDE = """
import inspect
import barapi
from barapi import config as _config

TINY = dict(canvas=32, window=16, input_size=32, resolution=4, q=1, epochs=1, m=2,
            device="cpu", per_class=5)
_make = _config.make_config
barapi.make_config = lambda preset=None, **kw: _make(preset, **{**TINY, **kw})
_names = [p for p in inspect.signature(barapi.BARClassifier.__init__).parameters if p != "self"]
_defaults = list(barapi.BARClassifier.__init__.__defaults__)
for _k, _v in TINY.items():
    if _k in _names:
        _defaults[_names.index(_k) - (len(_names) - len(_defaults))] = _v
barapi.BARClassifier.__init__.__defaults__ = tuple(_defaults)
"""
SHIM = """#!/usr/bin/env bash
case "$1" in
  run|estimate)
    for a in "$@"; do [ "$a" = --resume ] && exec "{python}" -m barapi "$@"; done
    # Rekognition refuses images under 80 px (its card's min_image_side)
    case " $* " in *" rekognition "*) exec "{python}" -m barapi "$@" {tiny} --canvas 80 --window 40 ;; esac
    exec "{python}" -m barapi "$@" {tiny} ;;
  *) exec "{python}" -m barapi "$@" ;;
esac
"""
SETUP = re.compile(r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install torch==2\.13\.0 "
                   r"&& pip install -e '\.\[([a-z,]+)\]' && "
                   r"(?:pip install --no-deps 'onnx2torch[^']*' && )?"
                   r"(?:python3 -m venv \.venv-mlserver && \.venv-mlserver/bin/pip install "
                   r"(mlserver==[\d.]+ mlserver-sklearn==[\d.]+) && )?(.+)$")


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_readme_is_a_guide_of_at_most_250_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_option_has_its_row_in_the_method_doc() -> None:
    from barapi.config import RunConfig

    text = (ROOT / "docs" / "method.md").read_text()
    missing = [n for n in RunConfig.model_fields if f"`--{n.replace('_', '-')}`" not in text]
    assert not missing


def test_the_set_up_commands_are_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    found = [SETUP.match(code.strip()) for lang, code in blocks(ROOT / "README.md")
             if lang == "bash" and "pip install" in code]
    assert len(found) == 2 and all(found)
    (run_extras, _, run_cmd), (test_extras, server, test_cmd) = (m.groups() for m in found if m)
    assert run_cmd == "barapi run" and run_extras == "local"
    # the test command installs MLServer (tests/test_oip.py) as .ci/run does, and CI requires it
    assert server and f".venv-mlserver/bin/pip install -q {server}" in ci
    assert "export BARAPI_REQUIRE_MLSERVER=1" in ci
    assert test_cmd == "python -m pytest -q" and "python -m pytest -q" in ci
    assert "pip install -q torch==2.13.0" in ci and f"-e '.[{test_extras}]'" in ci
    if "nudenet" in test_extras:  # its onnx2torch without torchvision, as README says
        from barapi.adapters.base import ONNX2TORCH

        readme = (ROOT / "README.md").read_text()
        assert f"pip install --no-deps '{ONNX2TORCH}'" in readme
        assert f"pip install -q --no-deps '{ONNX2TORCH}'" in ci and "2.13.0+cpu" in ci


@pytest.mark.timeout(900)  # the README's blocks run one after another: five emulators, three runs
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_block_runs(doc: Path, tmp_path: Path) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "barapi").write_text(SHIM.format(python=sys.executable, tiny=" ".join(TINY)))
    (shim / "barapi").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(work / "my_digit.png")  # the user's image
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "XDG_CACHE_HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    ran = 0
    for lang, code in blocks(doc):
        if lang == "bash":
            setup = SETUP.match(code.strip())
            if setup and setup.group(3) != "barapi run":
                continue  # the test command: it is this very test run (see above)
            # background jobs (an emulator) end with the block, whatever happens in it
            script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + (
                setup.group(3) if setup else code)
            out = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=600)
        elif lang == "python":
            out = subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=600)
        else:
            continue
        assert out.returncode == 0, f"{doc.name} block:\n{code}\nstderr:\n{out.stderr[-3000:]}"
        ran += 1
    if doc.name == "README.md":
        assert ran >= 5
