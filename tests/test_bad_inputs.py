"""Issue 15, kind 18: a table of bad inputs and options for `run`, `estimate`, `evaluate`,
`predict` and `repair-ledger`. Every row must end with exit code 2, no traceback, one error line
naming the offending option, field or file (barapi's "barapi: error: ..." or click's own usage
error for a malformed option value), and nothing created or spent before the error: no run
folder, no ledger, no answer cache, no ledger that grew, no image billed by the emulator.

Runs are priced (`price_per_1000=1000`, so that $0 spent means something) and tiny, so that a row
that wrongly passes validation fails fast instead of hanging. The CLI runs in this process
(click's CliRunner) in a fresh working folder per row; barapi's default answer cache is pointed
inside that folder (XDG_CACHE_HOME), so it is part of "nothing created".
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from barapi.cli import main

pytestmark = pytest.mark.timeout(120)

TINY = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--per-class", "5", "--q", "1", "--epochs", "1", "--m", "2", "--device", "cpu",
        "--patience", "0", "--classes", "0,1"]
BUDGET = ["--budget", "100000", "--yes"]
PRICED = ["--card-set", "price_per_1000=1000", *BUDGET]
EMULATOR_KEY = "bad-inputs-emulator-key"  # the loopback emulator's own key, not a secret
DUMMY_KEY = "dummy-key-never-sent"


# --- the working folder of one row ----------------------------------------------------------

class Ctx:
    """Builds a row's inputs in its working folder `root` (the current directory)."""

    def __init__(self, root: Path, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.request = request
        self.emulator: BackgroundEmulator | None = None

    def file(self, name: str, data: bytes | str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return str(path)

    def folder(self, name: str) -> str:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return str(self.root / name)

    def npz(self, name: str, **arrays: Any) -> str:
        np.savez(self.root / name, **arrays)
        return str(self.root / name)

    def png(self, name: str, side: int = 8, value: int = 0) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((side, side), value, np.uint8)).save(path)
        return str(path)

    def image_folder(self, name: str, per_class: int, classes: tuple[str, ...] = ("a", "b")) -> str:
        for cls in classes:
            for i in range(per_class):
                self.png(f"{name}/{cls}/{i}.png", value=40 * i)
        return str(self.root / name)

    def run_copy(self, name: str = "copy") -> Path:
        """A copy of a finished, priced run folder."""
        source: Path = self.request.getfixturevalue("finished_run")
        target = self.root / name
        shutil.copytree(source, target)
        return target

    def damaged(self, file: str, data: bytes | str | None) -> str:
        """A run copy whose `file` is replaced by `data` (None: deleted)."""
        folder = self.run_copy()
        path = folder / file
        if data is None:
            path.unlink()
        elif isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return str(folder)

    def edited_config(self, edit: Callable[[dict[str, Any]], None]) -> str:
        """A run copy whose config.json is changed by `edit`."""
        folder = self.run_copy()
        stored = json.loads((folder / "config.json").read_text())
        edit(stored)
        (folder / "config.json").write_text(json.dumps(stored))
        return str(folder)

    def corrupt_arrays(self, name: str) -> str:
        """A folder of X.npy and y.npy that are not .npy files."""
        for array in ("X.npy", "y.npy"):
            self.file(f"{name}/{array}", b"\x93NUMPY garbage")
        return str(self.root / name)

    def emulator_port(self) -> int:
        self.emulator = self.request.getfixturevalue("emulator")
        return self.emulator.port

    @staticmethod
    def closed_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return port


def rgb(value: int) -> dict[str, Any]:
    return {"X": np.full((12, 6, 6), value, np.uint8), "y": np.arange(12) % 2}


def set_config(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(stored: dict[str, Any]) -> None:
        stored["config"].update(fields)
    return edit


def set_card(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(stored: dict[str, Any]) -> None:
        stored["session"]["card"].update(fields)
    return edit


def drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(stored: dict[str, Any]) -> None:
        del stored[key]
    return edit


# --- the table --------------------------------------------------------------------------------

Args = list[str] | Callable[[Ctx], list[str]]


@dataclass
class Row:
    id: str
    command: str  # run | estimate | evaluate | predict | repair-ledger
    args: Args
    expect: str  # regex (case-insensitive) the error line must match: the option, field or file
    priced: bool = True  # run: add PRICED before the row's own options (later options win)
    tiny: bool = True  # run, estimate: add TINY before the row's own options
    prelude: bool = False  # the estimate or cost lines may come before the error line
    started: bool = False  # failed at the provider: runs/ and the cache may exist, no run folder
    env: dict[str, str | None] = field(default_factory=dict)
    needs_no_gpu: bool = False  # skipped where torch sees a CUDA GPU


def clarifai(c: Ctx, *extra: str, endpoint: str | None = None) -> list[str]:
    return ["--provider", "clarifai", "--model", "moderation-recognition",
            *(["--endpoint", endpoint] if endpoint else []), *extra]


def emulated(c: Ctx, *extra: str) -> list[str]:
    return clarifai(c, "--insecure", *extra, endpoint=f"127.0.0.1:{c.emulator_port()}")


AZURE = ["--provider", "azure", "--model", "project/iteration", "--labels", "a,b"]
CSV_MISSING = "path,label\nthere/a.png,a\nthere/b.png,b\n"
NOT_UTF8 = b"\xff\xfe\x00\x01\x80\x81garbage\xc3\x28"

RUN_ROWS = [
    # money
    Row("budget nan", "run", ["--budget", "nan"], r"budget"),
    Row("budget inf", "run", ["--budget", "inf"], r"budget"),
    Row("budget -1", "run", ["--budget", "-1"], r"budget"),
    Row("budget missing for a priced card", "run",
        ["--card-set", "price_per_1000=1000"], r"budget", priced=False),
    Row("estimate over budget without --yes", "run",
        ["--card-set", "price_per_1000=1000", "--budget", "1"], r"cannot pay for",
        priced=False, prelude=True),
    # hyperparameters that make no sense
    Row("lr nan", "run", ["--lr", "nan"], r"\blr\b"),
    Row("beta inf", "run", ["--beta", "inf"], r"beta"),
    Row("gamma nan", "run", ["--gamma", "nan"], r"gamma"),
    Row("head-l2 nan", "run", ["--head-l2", "nan"], r"head[_-]l2"),
    Row("decay nan", "run", ["--decay", "nan"], r"decay"),
    Row("per-class 0", "run", ["--per-class", "0"], r"per[_-]class"),
    Row("per-class -3", "run", ["--per-class", "-3"], r"per[_-]class"),
    Row("q abc", "run", ["--q", "abc"], r"'--q'"),
    Row("epochs 0", "run", ["--epochs", "0"], r"epochs"),
    Row("patience -1", "run", ["--patience", "-1"], r"patience"),
    Row("val-fraction nan", "run", ["--val-fraction", "nan"], r"val[_-]fraction"),
    Row("device cuda without a GPU", "run", ["--device", "cuda"], r"cuda", needs_no_gpu=True),
    # geometry
    Row("window 0", "run", ["--window", "0"], r"window"),
    Row("window-top 100", "run", ["--window-top", "100"], r"window[_-]top"),
    Row("canvas 1", "run", ["--canvas", "1", "--window", "1"], r"canvas"),
    Row("local input-size -5", "run", ["--input-size", "-5"], r"input[_-]size"),
    Row("resolution abc", "run", ["--resolution", "abc"], r"resolution"),
    Row("resolution above the canvas", "run", ["--resolution", "64"], r"resolution"),
    # card fields
    Row("card-set price_per_1000=-1", "run", ["--card-set", "price_per_1000=-1"],
        r"price_per_1000"),
    Row("card-set price_per_1000=nan", "run", ["--card-set", "price_per_1000=nan"],
        r"price_per_1000"),
    Row("card-set price_per_1000=inf", "run", ["--card-set", "price_per_1000=inf"],
        r"price_per_1000"),
    Row("card-set requests_per_second=abc", "run", ["--card-set", "requests_per_second=abc"],
        r"requests_per_second"),
    Row("card-set without =", "run", ["--card-set", "price_per_1000"], r"card[_-]set"),
    Row("card-set unknown field (typo)", "run", ["--card-set", "price_per_100=5"],
        r"price_per_100\b"),
    Row("card-set min_image_side above the canvas", "run", ["--card-set", "min_image_side=64"],
        r"min_image_side"),
    Row("card-set max_image_bytes too small", "run", ["--card-set", "max_image_bytes=10"],
        r"max_image_bytes"),
    # card file
    Row("card-file missing", "run", ["--card-file", "nope.toml"], r"nope\.toml"),
    Row("card-file not TOML", "run",
        lambda c: ["--card-file", c.file("card.toml", "price_per_1000 = = 3\n[[[")],
        r"card\.toml"),
    Row("card-file not UTF-8", "run", lambda c: ["--card-file", c.file("card.toml", NOT_UTF8)],
        r"card\.toml"),
    Row("card-file price_per_1000 = -1", "run",
        lambda c: [*BUDGET, "--card-file", c.file("card.toml", "price_per_1000 = -1\n")],
        r"price_per_1000", priced=False),
    # dataset and classes
    Row("dataset missing path", "run", ["--dataset", "nope/data.npz"], r"nope/data\.npz"),
    Row("dataset npz without X", "run",
        lambda c: ["--dataset", c.npz("noX.npz", y=np.arange(12) % 2)], r"noX\.npz"),
    Row("dataset npz not a zip", "run",
        lambda c: ["--dataset", c.file("fake.npz", b"not a zip file at all")], r"fake\.npz"),
    Row("dataset folder with X.npy but no y.npy", "run",
        lambda c: ["--dataset", str(Path(c.file("arrays/X.npy", b"")).parent)], r"y\.npy"),
    Row("dataset corrupt X.npy", "run", lambda c: ["--dataset", c.corrupt_arrays("arrays")],
        r"arrays|X\.npy"),
    Row("dataset CSV naming missing images", "run",
        lambda c: ["--dataset", c.file("list.csv", CSV_MISSING)], r"there/a\.png"),
    Row("dataset CSV with a row of one column", "run",
        lambda c: ["--dataset", c.file("onecol.csv", "a.png\n")], r"onecol\.csv"),
    Row("dataset empty folder", "run", lambda c: ["--dataset", c.folder("nothing")],
        r"nothing"),
    Row("dataset folder with 2 images per class", "run",
        lambda c: ["--dataset", c.image_folder("few", 2), "--classes", "a,b"], r"few|'a'"),
    Row("classes naming an unknown class", "run", ["--classes", "0,99"], r"99"),
    Row("classes naming one class", "run", ["--classes", "5"], r"class"),
    Row("classes naming a class twice", "run", ["--classes", "0,0"],
        r"'?0'?.*(twice|more than once|duplicate|repeated)"),
    # provider, model, device
    Row("head map needs more labels than the model has", "run",
        ["--head", "map", "--m", "600"], r"\bm\b"),
    Row("method ar on a black box", "run",
        lambda c: [*clarifai(c), "--method", "ar"], r"--method ar|white-box"),
    Row("clarifai head map of 2 x 3 labels on 5 concepts", "run",
        lambda c: [*clarifai(c), "--head", "map", "--m", "3"], r"\bm\b"),
    Row("clarifai unknown model without labels", "run",
        lambda c: [*clarifai(c), "--model", "nosuch"], r"nosuch"),
    # endpoints
    Row("clarifai endpoint localhost", "run",
        lambda c: clarifai(c, endpoint="localhost"), r"endpoint.*localhost|localhost.*endpoint"),
    Row("clarifai endpoint a URL", "run",
        lambda c: clarifai(c, endpoint="http://127.0.0.1:50051"), r"endpoint"),
    Row("clarifai insecure to a non-loopback host", "run",
        lambda c: clarifai(c, "--insecure", endpoint="203.0.113.1:50051"), r"insecure",
        prelude=True, started=True),
    Row("clarifai closed port", "run",
        lambda c: clarifai(c, "--insecure", endpoint=f"127.0.0.1:{c.closed_port()}"),
        r"127\.0\.0\.1:\d+", prelude=True, started=True),
    Row("clarifai wrong key (emulator)", "run",
        lambda c: emulated(c), r"11009|key", prelude=True, started=True,
        env={"CLARIFAI_PAT": "wrong-key"}),
    Row("clarifai model unknown to the server (emulator)", "run",
        lambda c: emulated(c, "--model", "nosuch", "--labels", "a,b"), r"21200|model",
        prelude=True, started=True, env={"CLARIFAI_PAT": EMULATOR_KEY}),
    Row("azure without endpoint", "run", [*AZURE], r"endpoint"),
    Row("azure endpoint not a URL", "run", [*AZURE, "--endpoint", "http://[::1"],
        r"endpoint"),
    # keys
    Row("clarifai without a key", "run", lambda c: clarifai(c), r"CLARIFAI_PAT",
        env={"CLARIFAI_PAT": None}),
    Row("key-file missing", "run", lambda c: [*clarifai(c), "--key-file", "nokey.txt"],
        r"nokey\.txt"),
    Row("key-file empty", "run", lambda c: [*clarifai(c), "--key-file", c.file("key.txt", "")],
        r"key\.txt"),
    Row("key-file a directory", "run",
        lambda c: [*clarifai(c), "--key-file", c.folder("keys")], r"keys"),
    Row("key-file not UTF-8", "run",
        lambda c: [*clarifai(c), "--key-file", c.file("key.txt", NOT_UTF8)], r"key\.txt"),
    Row("key-file non-ASCII key", "run",
        lambda c: [*clarifai(c), "--key-file", c.file("key.txt", "clé-secrète\n")],
        r"key"),
    # folders
    Row("runs-dir is a file", "run", lambda c: ["--runs-dir", c.file("afile", "x")], r"afile"),
    Row("runs-dir under a file", "run",
        lambda c: ["--runs-dir", str(Path(c.file("afile", "x")) / "runs")], r"afile"),
    Row("runs-dir unwritable (/sys)", "run", ["--runs-dir", "/sys/barapi-runs"],
        r"/sys/barapi-runs", prelude=True, started=True),
    Row("cache-dir under a file", "run",
        lambda c: ["--cache-dir", str(Path(c.file("afile", "x")) / "cache")], r"afile"),
    Row("cache-dir unwritable (/sys)", "run", ["--cache-dir", "/sys/barapi-cache"],
        r"/sys/barapi-cache"),
    # resume
    Row("resume an empty folder", "run", lambda c: ["--resume", c.folder("empty")],
        r"empty", priced=False, tiny=False),
    Row("resume a folder with garbage config.json", "run",
        lambda c: ["--resume", c.damaged("config.json", "{not json")], r"config\.json",
        priced=False, tiny=False),
    Row("resume a config.json with lr -1", "run",
        lambda c: ["--resume", c.edited_config(set_config(lr=-1))], r"config\.json",
        priced=False, tiny=False),
    Row("resume budget nan", "run", lambda c: ["--resume", str(c.run_copy()), "--budget", "nan"],
        r"budget", priced=False, tiny=False),
    Row("resume with a deleted ledger", "run",
        lambda c: ["--resume", c.damaged("ledger.jsonl", None), "--budget", "100000"],
        r"ledger", priced=False, tiny=False),
    Row("resume with a corrupt budget.json", "run",
        lambda c: ["--resume", c.damaged("budget.json", "{oops"), "--budget", "100000"],
        r"budget\.json", priced=False, tiny=False),
    Row("resume with a corrupt checkpoint", "run",
        lambda c: ["--resume", c.damaged("checkpoint.npz", b"garbage"), "--budget", "100000"],
        r"checkpoint", priced=False, tiny=False),
    Row("resume with --epochs (a learned setting)", "run",
        lambda c: ["--resume", str(c.run_copy()), "--epochs", "9"], r"--epochs.*config\.json",
        priced=False, tiny=False),
    Row("resume with --preset paper", "run",
        lambda c: ["--resume", str(c.run_copy()), "--preset", "paper"], r"--preset.*config\.json",
        priced=False, tiny=False),
    Row("resume with card-set price_per_1000=-1", "run",
        lambda c: ["--resume", str(c.run_copy()), "--card-set", "price_per_1000=-1"],
        r"price_per_1000", priced=False, tiny=False),
]

ESTIMATE_ROWS = [
    Row("estimate window-top 100", "estimate", ["--window-top", "100"], r"window[_-]top"),
    Row("estimate train-size -5", "estimate", ["--train-size", "-5"], r"train[_-]size"),
    Row("estimate train-size abc", "estimate", ["--train-size", "abc"], r"train[_-]size"),
    Row("estimate card-set price_per_1000=-1", "estimate", ["--card-set", "price_per_1000=-1"],
        r"price_per_1000"),
    Row("estimate card-file not TOML", "estimate",
        lambda c: ["--card-file", c.file("card.toml", "= nope")], r"card\.toml"),
    Row("estimate dataset missing", "estimate", ["--dataset", "nope.npz"], r"nope\.npz"),
    Row("estimate clarifai endpoint localhost", "estimate",
        lambda c: clarifai(c, endpoint="localhost"), r"endpoint"),
]

EVALUATE_ROWS = [
    Row("evaluate a missing folder", "evaluate", ["nope"], r"nope"),
    Row("evaluate a non-run folder", "evaluate", lambda c: [c.folder("plain")], r"plain"),
    Row("evaluate budget nan", "evaluate", lambda c: [str(c.run_copy()), "--budget", "nan"],
        r"budget"),
    Row("evaluate budget -1", "evaluate", lambda c: [str(c.run_copy()), "--budget", "-1"],
        r"budget"),
    Row("evaluate budget 0 (costs more)", "evaluate",
        lambda c: [str(c.run_copy()), "--budget", "0"], r"budget", prelude=True),
    Row("evaluate without a checkpoint", "evaluate",
        lambda c: [c.damaged("checkpoint.npz", None)], r"checkpoint"),
    Row("evaluate a corrupt checkpoint", "evaluate",
        lambda c: [c.damaged("checkpoint.npz", b"garbage")], r"checkpoint"),
    Row("evaluate a garbage config.json", "evaluate",
        lambda c: [c.damaged("config.json", "[1, 2")], r"config\.json"),
    Row("evaluate a config.json with lr -1", "evaluate",
        lambda c: [c.edited_config(set_config(lr=-1))], r"config\.json"),
    Row("evaluate a stored card with price -1", "evaluate",
        lambda c: [c.edited_config(set_card(price_per_1000=-1))], r"price_per_1000"),
    Row("evaluate a run whose dataset is gone", "evaluate",
        lambda c: [c.edited_config(set_config(dataset="/nonexistent/data.npz"))],
        r"/nonexistent/data\.npz"),
    Row("evaluate a corrupt budget.json", "evaluate",
        lambda c: [c.damaged("budget.json", "{oops")], r"budget\.json"),
    Row("evaluate a deleted ledger", "evaluate",
        lambda c: [c.damaged("ledger.jsonl", None)], r"ledger"),
    Row("evaluate a ledger line of wrong types", "evaluate",
        lambda c: [c.damaged("ledger.jsonl", '{"id": "x", "images": "many"}\n')], r"ledger"),
]

PREDICT_ROWS = [
    Row("predict a non-run folder", "predict", lambda c: [c.folder("plain"), c.png("x.png")],
        r"plain"),
    Row("predict a missing image", "predict", lambda c: [str(c.run_copy()), "nope.png"],
        r"nope\.png"),
    Row("predict a corrupt image", "predict",
        lambda c: [str(c.run_copy()), c.file("broken.png", b"\x89PNG garbage")],
        r"broken\.png"),
    Row("predict a text file", "predict",  # not Pillow's "<_io.BufferedReader name=3>"
        lambda c: [str(c.run_copy()), c.file("notes.txt", b"a shopping list")],
        r"notes\.txt is not an image file Pillow can read \(expected one of \.bmp"),
    Row("predict budget nan", "predict",
        lambda c: [str(c.run_copy()), c.png("x.png"), "--budget", "nan"], r"budget"),
    Row("predict budget 0 (costs more)", "predict",
        lambda c: [str(c.run_copy()), c.png("x.png"), "--budget", "0"], r"budget",
        prelude=True),
    Row("predict a corrupt checkpoint", "predict",
        lambda c: [c.damaged("checkpoint.npz", b"garbage"), c.png("x.png")], r"checkpoint"),
]

REPAIR_ROWS = [
    Row("repair-ledger a non-run folder", "repair-ledger", lambda c: [c.folder("plain")],
        r"plain"),
    Row("repair-ledger a garbage config.json", "repair-ledger",
        lambda c: [c.damaged("config.json", "{")], r"config\.json"),
    Row("repair-ledger a corrupt budget.json", "repair-ledger",
        lambda c: [c.damaged("budget.json", "{oops")], r"budget\.json"),
    Row("repair-ledger a corrupt checkpoint", "repair-ledger",
        lambda c: [c.damaged("checkpoint.npz", b"garbage")], r"checkpoint"),
    Row("repair-ledger a ledger line of wrong types", "repair-ledger",
        lambda c: [c.damaged("ledger.jsonl", '{"id": "x", "images": "many"}\n')], r"ledger"),
]

def fifo(c: Ctx, name: str) -> str:
    import os

    path = c.root / name
    os.mkfifo(path)
    return str(path)


# Issue 29, items 6, 7, 9 and 14: empty text, money settings, files that are not files, a step
# that cannot be held or paid, a NudeNet box's input size.
ISSUE_29_ROWS = [
    Row("classes empty (an unset shell variable)", "run", ["--classes", ""],
        r"^barapi: error: classes: empty"),
    Row("classes with an empty name", "run", ["--classes", "0,,1"], r"classes: an empty name"),
    Row("model empty", "run", ["--model", ""], r"model: empty"),
    Row("labels a name twice", "run", lambda c: [*clarifai(c), "--labels", "safe,safe"],
        r"labels: 'safe' given more than once"),
    Row("runs-dir empty", "run", ["--runs-dir", ""], r"runs-dir.*empty"),
    Row("budget 1e308", "run", ["--budget", "1e308"], r"budget.*10,000,000"),
    Row("card-set name=x", "run", ["--card-set", "name=x"], r"--card-set: name: .*cannot be overridden"),
    Row("card-set price true", "run", ["--card-set", "price_per_1000=true"],
        r"price_per_1000: .*got True"),
    Row("card-set price 1e-7 (rounds to $0 an image)", "run",
        ["--card-set", "price_per_1000=0.0000001"], r"price_per_1000: 1e-07 is above 0"),
    Row("card-set price 1e300", "run", ["--card-set", "price_per_1000=1e300"], r"price_per_1000"),
    Row("card-set rate 1e-9", "run", ["--card-set", "requests_per_second=1e-9"],
        r"requests_per_second: 1e-09"),
    Row("card-file /dev/zero", "run", ["--card-file", "/dev/zero"],
        r"card file /dev/zero: is a character device"),
    Row("card-file /dev/urandom", "run", ["--card-file", "/dev/urandom"], r"/dev/urandom"),
    Row("card-file a FIFO", "run", lambda c: ["--card-file", fifo(c, "card.toml")],
        r"card\.toml: is a FIFO"),
    Row("card-file price 0 on a paid provider", "run",
        lambda c: [*clarifai(c), *BUDGET, "--card-file", c.file("card.toml", "price_per_1000 = 0\n")],
        r"price_per_1000 = 0.*free = true", priced=False),
    Row("q 100000 (a step of 2 million images)", "run", ["--q", "100000"], r"\bq: one training step"),
    Row("dataset empty .npz", "run",
        lambda c: ["--dataset", c.npz("e.npz", X=np.zeros((0, 8, 8)), y=np.zeros(0))],
        r"e\.npz: X holds no samples"),
    Row("dataset a FIFO .npz", "run", lambda c: ["--dataset", fifo(c, "d.npz")], r"d\.npz: is a FIFO"),
    Row("nudenet box with input-size 64", "run", ["--model", "nudenet-nsfw", "--input-size", "64"],
        r"input_size: nudenet-nsfw runs at 320 px"),
    Row("resume card-set name=x", "run",
        lambda c: ["--resume", str(c.run_copy()), "--card-set", "name=x"], r"\bname\b",
        priced=False, tiny=False),
    Row("estimate card-set price true", "estimate", ["--card-set", "price_per_1000=true"],
        r"price_per_1000"),
    Row("estimate classes empty", "estimate", ["--classes", ""], r"classes: empty"),
    Row("evaluate budget 1e308", "evaluate", lambda c: [str(c.run_copy()), "--budget", "1e308"],
        r"budget"),
]

ROWS = [*RUN_ROWS, *ESTIMATE_ROWS, *EVALUATE_ROWS, *PREDICT_ROWS, *REPAIR_ROWS, *ISSUE_29_ROWS]


# --- fixtures ---------------------------------------------------------------------------------

class BackgroundEmulator:
    """The Clarifai emulator (numpy model) serving from its own thread and event loop."""

    def __init__(self) -> None:
        from barapi.emulate import ClarifaiEmulator
        from benchmarks.loopback import NumpyModel

        self.emulator = ClarifaiEmulator(NumpyModel(), EMULATOR_KEY)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.emulator.start(0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the emulator did not start"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def emulator() -> Any:
    server = BackgroundEmulator()
    yield server
    server.close()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, priced run ($1 an image, $100,000 budget, no cache) to copy and damage."""
    cwd = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("XDG_CACHE_HOME", str(cwd / "xdg"))
        result = CliRunner().invoke(main, ["run", *TINY, *PRICED, "--no-cache", "--runs-dir",
                                           str(cwd / "runs"), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    (folder,) = (cwd / "runs").iterdir()
    assert (folder / "checkpoint.npz").is_file() and (folder / "ledger.jsonl").is_file()
    return folder


# --- checks -----------------------------------------------------------------------------------

def command_line(row: Row, ctx: Ctx) -> list[str]:
    args = row.args(ctx) if callable(row.args) else list(row.args)
    if row.command == "run":
        return ["run", *(TINY if row.tiny else []), *(PRICED if row.priced else []),
                "--runs-dir", "runs", *args]
    if row.command == "estimate":
        return ["estimate", *(TINY if row.tiny else []), *args]
    return [row.command, *args]


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root` → its size (-1 for a folder); lock files are left out."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size if p.is_file() else -1)
            for p in root.rglob("*") if p.name != ".lock"}


def describe(result: Result) -> str:
    text = f"exit code {result.exit_code}\n--- stderr ---\n{result.stderr}--- stdout ---\n{result.stdout}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        text += "--- traceback ---\n" + "".join(traceback.format_exception(result.exception))
    return text


def check_error_output(row: Row, result: Result) -> None:
    err = result.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error message"
    assert "Traceback" not in result.output
    assert "validation error for" not in err and "errors.pydantic.dev" not in err, \
        "a pydantic dump, not a one-line message"
    if lines[0].startswith("Usage:"):  # click's own usage error: usage, hint, one error line
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], "click's error is not one line"
        error = errors[0]
    else:
        errors = [line for line in lines if line.startswith("barapi: error:")]
        assert len(errors) == 1, "not exactly one 'barapi: error:' line"
        assert lines[-1] == errors[0], "the error is not the last line"
        if not row.prelude:
            assert len(lines) == 1, "more than the error line"
        error = errors[0]
    assert re.search(row.expect, error, re.IGNORECASE), \
        f"the error does not name {row.expect!r}: {error}"


def check_nothing_left(row: Row, root: Path, before: dict[str, int]) -> None:
    after = snapshot(root)
    new = sorted(set(after) - set(before))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p])
    if not row.started:
        assert not new and not changed, f"created {new}, changed {changed}"
        return
    # failed at the provider: at most an empty runs/ and the answer cache; a run folder left
    # behind must say that it failed; no new ledger, no ledger that grew
    assert not changed, f"changed {changed}"
    stray = [p for p in new if p.split("/")[0] not in ("runs", "xdg")]
    assert not stray, f"created {stray}"
    runs = root / "runs"
    for folder in (runs.iterdir() if runs.is_dir() else []):
        events = [json.loads(line).get("event") for line in
                  (folder / "metrics.jsonl").read_text().splitlines() if line.strip()] \
            if (folder / "metrics.jsonl").is_file() else []
        assert "failed" in events, f"run folder {folder.name} left behind, not marked failed"
    ledgers = [p for p in new if p.endswith("ledger.jsonl")]
    assert not ledgers or all((root / p).stat().st_size == 0 for p in ledgers), \
        f"ledger written: {ledgers}"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_spent(row: Row, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       request: pytest.FixtureRequest) -> None:
    if row.needs_no_gpu:
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(work / "xdg"))
    monkeypatch.setenv("CLARIFAI_PAT", DUMMY_KEY)
    monkeypatch.setenv("AZURE_CV_PREDICTION_KEY", DUMMY_KEY)
    for name, value in row.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    ctx = Ctx(work, request)
    args = command_line(row, ctx)
    server = ctx.emulator
    billed = server.emulator.counters.billed_images if server is not None else 0
    requests = (server.emulator.counters.requests + server.emulator.counters.model_calls
                if server is not None else 0)
    before = snapshot(work)

    result = CliRunner().invoke(main, args, catch_exceptions=True)

    report = f"barapi {' '.join(args)}\n{describe(result)}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"traceback\n{report}"
    assert result.exit_code == 2, report
    try:
        check_error_output(row, result)
        check_nothing_left(row, work, before)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{report}") from None
    if server is not None:
        assert server.emulator.counters.billed_images == billed, f"the emulator billed\n{report}"
        # the row is about a refusal by the service: a prediction request or the free model
        # call (which now finds a bad key or an unknown model first) reached the emulator
        counters = server.emulator.counters
        assert counters.requests + counters.model_calls > requests, f"nothing was sent\n{report}"


def test_the_table_is_large_enough() -> None:
    assert len(ROWS) >= 80
    assert {r.command for r in ROWS} == {"run", "estimate", "evaluate", "predict",
                                         "repair-ledger"}
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.timeout(400)
def test_a_representative_subset_of_the_bad_input_table_as_real_processes(tmp_path: Path) -> None:
    """benchmarks/bad_inputs.py's QUICK cases, through the same code as the full table: each a
    real `python -m barapi` process with a timeout. Every one must end with one error line
    naming the culprit, exit non-zero, no traceback, no hang, $0 spent, no folder left."""
    from benchmarks.bad_inputs import CASES, QUICK, failures, run_cases

    cases = [c for c in CASES if c.id in QUICK]
    assert len(cases) == len(QUICK) >= 15
    rows = run_cases(cases, jobs=2, timeout=90, root=tmp_path)
    wrong = {r["id"]: (failures(r), r.get("error"), r.get("stderr_tail", "")[-500:])
             for r in rows if failures(r) or r.get("names_it") is False}
    assert not wrong, wrong
