"""A table of bad inputs, each tried as a real `barapi` process (issue 29, item 9).

Every case is one command a new user could type with one thing wrong in it: an option, a card
field, a key or card file that is a device or a FIFO, a dataset of another shape, a damaged
run folder, a sweep spec. Each runs as its own `python -m barapi` process in a fresh working
folder (its answer cache inside it), with a timeout, and is classified:

- `error`: a non-zero exit whose last line is its one error line (`barapi: error: ...`, or
  click's `Error: ...`), nothing after it — what every case must give;
- `traceback`: a Python traceback was printed;
- `hang`: still running at the timeout (its process group is killed);
- `exit 0`: the bad input was accepted;
- `unclear`: a non-zero exit without one clean error line.

Beside it: the dollars spent before the error (the growth of every ledger in the working
folder; runs are priced at $1 an image through `--card-set`, so that $0 means something),
the images the loopback Clarifai emulator billed (cases that talk to it get their own), a
run or sweep folder left behind, whether the error line names what is wrong (`expect`), and
the seconds it took. Cases whose fix belongs to code outside the input layer say so (`owner`).

    python -m benchmarks.bad_inputs [--jobs 2] [--timeout 60] [--only REGEX]

Prints the table and writes benchmarks/results/bad_inputs.json. The aim: 0 tracebacks,
0 hangs, 0 accepted, $0 before every error, no folder left. `tests/test_bad_inputs.py` runs a
representative subset (`QUICK`) through the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TINY = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--per-class", "5", "--q", "1", "--epochs", "1", "--m", "2", "--device", "cpu",
        "--patience", "0", "--classes", "0,1"]
PRICE = ["--card-set", "price_per_1000=1000"]
PRICED = [*PRICE, "--budget", "100000", "--yes"]
PAID = [*TINY, "--budget", "100000", "--yes"]
"""A paid provider's run (its own card's price) with a budget: what reaches its key."""
DUMMY_KEY = "dummy-key-never-sent"
EMULATOR_KEY = "bad-inputs-emulator-key"  # the loopback emulator's own key, not a secret
NOT_UTF8 = b"\xff\xfe\x00\x01\x80\x81garbage\xc3\x28"
OUTCOMES = ("error", "traceback", "hang", "exit 0", "unclear")
SPEC = """[run]
classes = "0,1"
canvas = 32
window = 16
input_size = 32
resolution = 4
per_class = 5
q = 1
epochs = 1
m = 2
device = "cpu"
patience = 0
[card]
price_per_1000 = 1000
"""


class Finished:
    """A finished, priced tiny run ($1 an image, no cache) to copy and damage, made on first
    use under `root`."""

    def __init__(self, root: Path, timeout: float = 300) -> None:
        self.root, self.timeout = root, timeout
        self._path: Path | None = None
        self._lock = threading.Lock()

    def path(self) -> Path:
        with self._lock:
            if self._path is None:
                work = self.root / "finished"
                work.mkdir()
                env = {**os.environ, "XDG_CACHE_HOME": str(work / "xdg"), "OMP_NUM_THREADS": "1"}
                done = subprocess.run(
                    [sys.executable, "-m", "barapi", "run", *TINY, *PRICED, "--no-cache",
                     "--no-progress", "--runs-dir", "runs", "--json"], cwd=work, env=env,
                    capture_output=True, text=True, timeout=self.timeout)
                if done.returncode != 0:
                    raise RuntimeError(f"the finished run failed:\n{done.stderr[-3000:]}")
                (self._path,) = (work / "runs").iterdir()
            return self._path


class Work:
    """One case's working folder `root` (its current directory) and the inputs built in it."""

    def __init__(self, root: Path, finished: Finished) -> None:
        self.root = root
        self._finished = finished
        self.emulator: Any = None

    def path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def file(self, name: str, data: bytes | str) -> str:
        path = self.path(name)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        return str(path)

    def fifo(self, name: str) -> str:
        path = self.path(name)
        os.mkfifo(path)
        return str(path)

    def link(self, name: str, target: str) -> str:
        path = self.path(name)
        path.symlink_to(target)
        return str(path)

    def folder(self, name: str) -> str:
        self.path(name).mkdir(parents=True, exist_ok=True)
        return str(self.root / name)

    def npz(self, name: str, **arrays: Any) -> str:
        np.savez(self.path(name), **arrays)
        return str(self.root / name)

    def png(self, name: str, side: int = 8, value: int = 0) -> str:
        Image.fromarray(np.full((side, side), value, np.uint8)).save(self.path(name))
        return str(self.root / name)

    def images(self, name: str, per_class: int, side: int = 8) -> str:
        for cls in ("a", "b"):
            for i in range(per_class):
                self.png(f"{name}/{cls}/{i}.png", side, 40 * i)
        return str(self.root / name)

    def spec(self, text: str, name: str = "sweep.toml") -> str:
        return self.file(name, text)

    def run_copy(self, name: str = "copy") -> str:
        """A copy of a finished, priced run folder."""
        shutil.copytree(self._finished.path(), self.root / name)
        return str(self.root / name)

    def damaged(self, name: str, data: bytes | str | None) -> str:
        """A run copy whose file `name` is replaced by `data` (None: deleted; a FIFO: "FIFO")."""
        folder = Path(self.run_copy())
        path = folder / name
        path.unlink()
        if data == "FIFO":
            os.mkfifo(path)
        elif isinstance(data, bytes):
            path.write_bytes(data)
        elif data is not None:
            path.write_text(data)
        return str(folder)

    def edited(self, edit: Callable[[dict[str, Any]], None]) -> str:
        """A run copy whose config.json is changed by `edit`."""
        folder = Path(self.run_copy())
        stored = json.loads((folder / "config.json").read_text())
        edit(stored)
        (folder / "config.json").write_text(json.dumps(stored))
        return str(folder)

    def emulator_port(self) -> int:
        """A loopback Clarifai emulator (numpy model) of this case alone."""
        from barapi.emulate import ClarifaiEmulatorThread
        from benchmarks.loopback import NumpyModel

        self.emulator = ClarifaiEmulatorThread(NumpyModel(5), EMULATOR_KEY)
        return int(self.emulator.port)


Args = list[str] | Callable[[Work], list[str]]


@dataclass(frozen=True)
class Case:
    """One bad input. `args` follow the command's base options (`command_line`); `expect` is
    a regex the error line should match (what it names); `owner`: the module the fix
    belongs to, when outside the input layer."""

    id: str
    command: str  # run | estimate | evaluate | predict | repair-ledger | sweep
    args: Args
    expect: str = ""
    base: bool = True  # run/estimate: the tiny priced settings first; sweep: --budget 100000
    env: dict[str, str | None] = field(default_factory=dict)
    owner: str = ""


def clarifai(*extra: str) -> list[str]:
    return ["--provider", "clarifai", "--model", "moderation-recognition", *extra]


def emulated(w: Work, *extra: str) -> list[str]:
    return clarifai("--endpoint", f"127.0.0.1:{w.emulator_port()}", "--insecure", *extra)


def set_config(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(stored: dict[str, Any]) -> None:
        stored["config"].update(fields)
    return edit


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def npy_folder(w: Work, x: bytes | str) -> str:
    """A folder of X.npy (`x`: its bytes, or "FIFO") and a valid y.npy."""
    if x == "FIFO":
        w.fifo("arrays/X.npy")
    else:
        w.file("arrays/X.npy", x)
    np.save(w.path("arrays/y.npy"), np.arange(12) % 2)
    return str(w.root / "arrays")


def csv_naming(w: Work, image: str) -> str:
    """A CSV of one row naming `image` (class a)."""
    return w.file("list.csv", f"path,label\n{image},a\n")


def image_folder_with(make: Callable[[Work], object]) -> Callable[[Work], list[str]]:
    """Arguments naming a folder of classes a and b, 4 PNGs each, plus what `make` adds."""
    def args(w: Work) -> list[str]:
        folder = w.images("imgs", 4)
        make(w)
        return ["--dataset", folder, "--classes", "a,b"]
    return args


RUN = [
    # --- budgets (items 7, 9)
    Case("budget nan", "run", ["--budget", "nan"], r"budget"),
    Case("budget inf", "run", ["--budget", "inf"], r"budget"),
    Case("budget -1", "run", ["--budget", "-1"], r"budget"),
    Case("budget 1e308", "run", ["--budget", "1e308"], r"budget"),
    Case("budget abc", "run", ["--budget", "abc"], r"budget"),
    Case("budget empty", "run", ["--budget", ""], r"budget"),
    Case("budget missing on a priced card", "run", [*TINY, *PRICE], r"budget", base=False),
    Case("budget 0.001 cannot pay the smallest run", "run",
         [*TINY, *PRICE, "--budget", "0.001"], r"cannot pay.*\$\d", base=False),
    # --- card fields (item 7)
    Case("card-set price 1e-7 rounds to $0", "run", ["--card-set", "price_per_1000=0.0000001"],
         r"price_per_1000"),
    Case("card-set price true", "run", ["--card-set", "price_per_1000=true"], r"price_per_1000"),
    Case("card-set price 1e300", "run", ["--card-set", "price_per_1000=1e300"], r"price_per_1000"),
    Case("card-set price -1", "run", ["--card-set", "price_per_1000=-1"], r"price_per_1000"),
    Case("card-set price nan", "run", ["--card-set", "price_per_1000=nan"], r"price_per_1000"),
    Case("card-set price inf", "run", ["--card-set", "price_per_1000=inf"], r"price_per_1000"),
    Case("card-set price a TOML string", "run", ["--card-set", 'price_per_1000="1.5"'],
         r"price_per_1000"),
    Case("card-set price abc", "run", ["--card-set", "price_per_1000=abc"], r"price_per_1000"),
    Case("card-set price empty", "run", ["--card-set", "price_per_1000="], r"price_per_1000"),
    Case("card-set name=x", "run", ["--card-set", "name=x"], r"\bname\b"),
    Case("card-set unknown field", "run", ["--card-set", "price_per_100=5"], r"price_per_100\b"),
    Case("card-set rate 1e-9", "run", ["--card-set", "requests_per_second=1e-9"],
         r"requests_per_second"),
    Case("card-set rate -1", "run", ["--card-set", "requests_per_second=-1"],
         r"requests_per_second"),
    Case("card-set rate true", "run", ["--card-set", "requests_per_second=true"],
         r"requests_per_second"),
    Case("card-set batch 0", "run", ["--card-set", "max_images_per_request=0"],
         r"max_images_per_request"),
    Case("card-set batch 1.5", "run", ["--card-set", "max_images_per_request=1.5"],
         r"max_images_per_request"),
    Case("card-set batch true", "run", ["--card-set", "max_images_per_request=true"],
         r"max_images_per_request"),
    Case("card-set free_images -1", "run", ["--card-set", "free_images=-1"], r"free_images"),
    Case("card-set min_image_side above the canvas", "run", ["--card-set", "min_image_side=64"],
         r"min_image_side"),
    Case("card-set max_image_bytes 10", "run", ["--card-set", "max_image_bytes=10"],
         r"max_image_bytes"),
    Case("card-set max_bytes_per_request 0", "run", ["--card-set", "max_bytes_per_request=0"],
         r"max_bytes_per_request"),
    Case("card-set sources=1", "run", ["--card-set", "sources=1"], r"sources"),
    Case("card-set without =", "run", ["--card-set", "price_per_1000"], r"card-set"),
    Case("card-set empty", "run", ["--card-set", ""], r"card-set"),
    Case("card-set =5", "run", ["--card-set", "=5"], r"card-set"),
    Case("card-set price 0 on a paid provider", "run",
         [*TINY, *clarifai("--card-set", "price_per_1000=0")], r"price_per_1000.*free", base=False),
    # --- card files (items 7, 9)
    Case("card-file missing", "run", ["--card-file", "nope.toml"], r"nope\.toml"),
    Case("card-file empty string", "run", ["--card-file", ""], r"card-file"),
    Case("card-file /dev/zero", "run", ["--card-file", "/dev/zero"], r"/dev/zero"),
    Case("card-file /dev/urandom", "run", ["--card-file", "/dev/urandom"], r"/dev/urandom"),
    Case("card-file a FIFO", "run", lambda w: ["--card-file", w.fifo("card.toml")], r"card\.toml"),
    Case("card-file a folder", "run", lambda w: ["--card-file", w.folder("cards")], r"cards"),
    Case("card-file 2 MB", "run",
         lambda w: ["--card-file", w.file("card.toml", "# x\n" * 500_000)], r"card\.toml"),
    Case("card-file binary", "run",
         lambda w: ["--card-file", w.file("card.toml", b"price_per_1000 = 1\x00\x00")],
         r"card\.toml"),
    Case("card-file not UTF-8", "run", lambda w: ["--card-file", w.file("card.toml", NOT_UTF8)],
         r"card\.toml"),
    Case("card-file not TOML", "run",
         lambda w: ["--card-file", w.file("card.toml", "price_per_1000 = = 3\n")], r"card\.toml"),
    Case("card-file price -1", "run",
         lambda w: ["--card-file", w.file("card.toml", "price_per_1000 = -1\n")],
         r"price_per_1000"),
    Case("card-file price true", "run",
         lambda w: ["--card-file", w.file("card.toml", "price_per_1000 = true\n")],
         r"price_per_1000"),
    Case("card-file name", "run",
         lambda w: ["--card-file", w.file("card.toml", 'name = "local"\n')], r"\bname\b"),
    Case("card-file unknown field", "run",
         lambda w: ["--card-file", w.file("card.toml", "cost = 1\n")], r"\bcost\b"),
    Case("card-file price 0 on a paid provider", "run",
         lambda w: [*TINY, *clarifai("--card-file", w.file("card.toml", "price_per_1000 = 0\n"))],
         r"price_per_1000.*free", base=False),
    # --- empty text (item 6)
    Case("classes empty", "run", ["--classes", ""], r"classes"),
    Case("classes blank", "run", ["--classes", "  "], r"classes"),
    Case("classes a lone comma", "run", ["--classes", ","], r"classes"),
    Case("classes with an empty name", "run", ["--classes", "0,,1"], r"classes"),
    Case("classes a name twice", "run", ["--classes", "0,0"], r"classes|0"),
    Case("classes unknown", "run", ["--classes", "0,99"], r"99"),
    Case("classes one class", "run", ["--classes", "5"], r"class"),
    Case("model empty", "run", ["--model", ""], r"model"),
    Case("model unknown", "run", ["--model", "nosuch"], r"nosuch"),
    Case("provider empty", "run", ["--provider", ""], r"provider"),
    Case("provider unknown", "run", ["--provider", "nosuch"], r"nosuch"),
    Case("dataset empty", "run", ["--dataset", ""], r"dataset"),
    Case("labels empty", "run", [*TINY, *clarifai("--labels", "")], r"labels", base=False),
    Case("labels a name twice", "run", [*TINY, *clarifai("--labels", "safe,safe")], r"labels",
         base=False),
    Case("labels with an empty name", "run", [*TINY, *clarifai("--labels", "safe,")], r"labels",
         base=False),
    Case("endpoint empty", "run", [*TINY, *clarifai("--endpoint", "")], r"endpoint", base=False),
    Case("key-file empty string", "run", [*TINY, *clarifai("--key-file", "")], r"key[_-]file",
         base=False),
    Case("weights empty", "run", ["--weights", ""], r"weights"),
    Case("surrogate empty", "run", ["--surrogate", ""], r"surrogate"),
    Case("device empty", "run", ["--device", ""], r"device"),
    Case("runs-dir empty", "run", ["--runs-dir", ""], r"runs-dir"),
    Case("cache-dir empty", "run", ["--cache-dir", ""], r"cache-dir"),
    # --- hyperparameters
    Case("q 100000", "run", ["--q", "100000"], r"\bq\b"),
    Case("q 0", "run", ["--q", "0"], r"\bq\b"),
    Case("q abc", "run", ["--q", "abc"], r"'--q'"),
    Case("batch 10000000", "run", ["--batch", "10000000"], r"batch|q"),
    Case("epochs 0", "run", ["--epochs", "0"], r"epochs"),
    Case("lr nan", "run", ["--lr", "nan"], r"\blr\b"),
    Case("lr -1", "run", ["--lr", "-1"], r"\blr\b"),
    Case("beta 0", "run", ["--beta", "0"], r"beta"),
    Case("gamma -1", "run", ["--gamma", "-1"], r"gamma"),
    Case("decay 2", "run", ["--decay", "2"], r"decay"),
    Case("m 0", "run", ["--m", "0"], r"\bm\b"),
    Case("head map with m 600", "run", ["--head", "map", "--m", "600"], r"\bm\b"),
    Case("head-l2 -1", "run", ["--head-l2", "-1"], r"head_l2"),
    Case("per-class 0", "run", ["--per-class", "0"], r"per_class"),
    Case("val-fraction 1", "run", ["--val-fraction", "1"], r"val_fraction"),
    Case("val-size 0", "run", ["--val-size", "0"], r"val_size"),
    Case("max-steps 0", "run", ["--max-steps", "0"], r"max_steps"),
    Case("eval-every -1", "run", ["--eval-every", "-1"], r"eval_every"),
    Case("patience -1", "run", ["--patience", "-1"], r"patience"),
    Case("seed -1", "run", ["--seed", "-1"], r"seed"),
    Case("window 0", "run", ["--window", "0"], r"window"),
    Case("window above the canvas", "run", ["--window", "64"], r"window"),
    Case("window-top 100", "run", ["--window-top", "100"], r"window_top"),
    Case("canvas 1", "run", ["--canvas", "1", "--window", "1"], r"canvas"),
    Case("canvas 100000", "run", ["--canvas", "100000"], r"canvas"),
    Case("input-size -5", "run", ["--input-size", "-5"], r"input_size"),
    Case("input-size 100000", "run", ["--input-size", "100000"], r"input_size"),
    Case("resolution abc", "run", ["--resolution", "abc"], r"resolution"),
    Case("resolution above the canvas", "run", ["--resolution", "64"], r"resolution"),
    Case("surrogate with q 1", "run", ["--surrogate", "efficientnet-lite0", "--q", "1"],
         r"surrogate"),
    Case("nudenet box with input-size 64", "run", ["--model", "nudenet-nsfw", "--input-size", "64"],
         r"input_size"),
    Case("method ar on a black box", "run", [*TINY, *clarifai("--method", "ar")],
         r"--method ar|white-box", base=False),
    # --- datasets (item 9)
    Case("dataset missing", "run", ["--dataset", "nope/data.npz"], r"nope/data\.npz"),
    Case("dataset empty .npz", "run",
         lambda w: ["--dataset", w.npz("empty.npz", X=np.zeros((0, 8, 8)), y=np.zeros(0))],
         r"empty\.npz"),
    Case("dataset .npz of empty images", "run",
         lambda w: ["--dataset", w.npz("flat.npz", X=np.zeros((12, 0, 8)), y=np.arange(12) % 2)],
         r"flat\.npz"),
    Case("dataset .npz X a single value", "run",
         lambda w: ["--dataset", w.npz("one.npz", X=np.array(5.0), y=np.arange(12) % 2)],
         r"one\.npz"),
    Case("dataset .npz without X", "run",
         lambda w: ["--dataset", w.npz("noX.npz", y=np.arange(12) % 2)], r"noX\.npz"),
    Case("dataset .npz y of another length", "run",
         lambda w: ["--dataset", w.npz("len.npz", X=np.zeros((12, 6, 6)), y=np.arange(5) % 2)],
         r"len\.npz"),
    Case("dataset .npz y 2-D", "run",
         lambda w: ["--dataset", w.npz("y2.npz", X=np.zeros((12, 6, 6)), y=np.zeros((12, 2)))],
         r"y2\.npz"),
    Case("dataset .npz with NaN", "run",
         lambda w: ["--dataset", w.npz("nan.npz", X=np.full((12, 6, 6), np.nan),
                                       y=np.arange(12) % 2)], r"nan\.npz"),
    Case("dataset .npz of objects", "run",
         lambda w: ["--dataset", w.npz("obj.npz", X=np.array([None] * 12, dtype=object),
                                       y=np.arange(12) % 2)], r"obj\.npz"),
    Case("dataset .npz of complex numbers", "run",
         lambda w: ["--dataset", w.npz("cx.npz", X=np.zeros((12, 6, 6), complex),
                                       y=np.arange(12) % 2)], r"cx\.npz"),
    Case("dataset .npz one class", "run",
         lambda w: ["--dataset", w.npz("one.npz", X=np.zeros((12, 6, 6)), y=np.zeros(12)),
                    "--classes", "0.0"], r"class"),
    Case("dataset .npz not a zip", "run",
         lambda w: ["--dataset", w.file("fake.npz", b"not a zip file at all")], r"fake\.npz"),
    Case("dataset a FIFO .npz", "run", lambda w: ["--dataset", w.fifo("data.npz")], r"data\.npz"),
    Case("dataset a FIFO .csv", "run", lambda w: ["--dataset", w.fifo("data.csv")], r"data\.csv"),
    Case("dataset /dev/zero as .npz", "run",
         lambda w: ["--dataset", w.link("zero.npz", "/dev/zero")], r"zero\.npz"),
    Case("dataset /dev/urandom as .csv", "run",
         lambda w: ["--dataset", w.link("random.csv", "/dev/urandom")], r"random\.csv"),
    Case("dataset /dev/zero", "run", ["--dataset", "/dev/zero"], r"/dev/zero"),
    Case("dataset a .txt file", "run", lambda w: ["--dataset", w.file("data.txt", "x")],
         r"data\.txt"),
    Case("dataset X.npy a FIFO", "run", lambda w: ["--dataset", npy_folder(w, "FIFO")],
         r"X\.npy"),
    Case("dataset corrupt X.npy", "run", lambda w: ["--dataset", npy_folder(w, b"\x93NUMPY junk")],
         r"arrays|X\.npy"),
    Case("dataset empty folder", "run", lambda w: ["--dataset", w.folder("nothing")], r"nothing"),
    Case("dataset folder of 2 images a class", "run",
         lambda w: ["--dataset", w.images("few", 2), "--classes", "a,b"], r"few|'a'"),
    Case("dataset folder with a FIFO image", "run",
         image_folder_with(lambda w: w.fifo("imgs/a/fifo.png")), r"fifo\.png"),
    Case("dataset folder with /dev/zero as an image", "run",
         image_folder_with(lambda w: w.link("imgs/b/zero.png", "/dev/zero")), r"zero\.png"),
    Case("dataset folder with a folder named x.png", "run",
         image_folder_with(lambda w: w.folder("imgs/a/x.png")), r"x\.png"),
    Case("dataset folder with a corrupt PNG", "run",
         image_folder_with(lambda w: w.file("imgs/a/bad.png", b"\x89PNG junk")), r"bad\.png"),
    Case("dataset folder of images of two sizes", "run",
         image_folder_with(lambda w: w.png("imgs/a/big.png", 16)), r"size"),
    Case("dataset CSV naming missing images", "run",
         lambda w: ["--dataset", w.file("list.csv", "path,label\nthere/a.png,a\n")],
         r"there/a\.png"),
    Case("dataset CSV of one column", "run",
         lambda w: ["--dataset", w.file("one.csv", "a.png\n")], r"one\.csv"),
    Case("dataset CSV empty", "run", lambda w: ["--dataset", w.file("none.csv", "")],
         r"none\.csv"),
    Case("dataset CSV not UTF-8", "run", lambda w: ["--dataset", w.file("bin.csv", NOT_UTF8)],
         r"bin\.csv"),
    Case("dataset CSV naming a FIFO", "run",
         lambda w: ["--dataset", csv_naming(w, w.fifo("f.png"))], r"f\.png"),
    # --- key files (item 9; read in barapi/keys.py)
    Case("key missing", "run", [*PAID, *clarifai()], r"CLARIFAI_PAT", base=False,
         env={"CLARIFAI_PAT": None}),
    Case("key-file missing", "run", [*PAID, *clarifai("--key-file", "nokey.txt")], r"nokey\.txt",
         base=False),
    Case("key-file /dev/zero", "run", [*PAID, *clarifai("--key-file", "/dev/zero")],
         r"/dev/zero", base=False),
    Case("key-file /dev/urandom", "run", [*PAID, *clarifai("--key-file", "/dev/urandom")],
         r"/dev/urandom", base=False),
    Case("key-file a FIFO", "run", lambda w: [*PAID, *clarifai("--key-file", w.fifo("key"))],
         r"key", base=False),
    Case("key-file a folder", "run", lambda w: [*PAID, *clarifai("--key-file", w.folder("keys"))],
         r"keys", base=False),
    Case("key-file 1 MB", "run",
         lambda w: [*PAID, *clarifai("--key-file", w.file("key.txt", "k" * 1_000_000))],
         r"key\.txt", base=False),
    Case("key-file binary", "run",
         lambda w: [*PAID, *clarifai("--key-file", w.file("key.txt", b"abc\x00def"))],
         r"key\.txt", base=False),
    Case("key-file not UTF-8", "run",
         lambda w: [*PAID, *clarifai("--key-file", w.file("key.txt", NOT_UTF8))], r"key\.txt",
         base=False),
    Case("key-file of two lines", "run",
         lambda w: [*PAID, *clarifai("--key-file", w.file("key.txt", "abc\ndef\n"))], r"key\.txt",
         base=False),
    # --- endpoints and the emulator
    Case("endpoint localhost without a port", "run", [*TINY, *clarifai("--endpoint", "localhost")],
         r"endpoint", base=False),
    Case("endpoint a closed port", "run",
         lambda w: [*TINY, *PRICED, *clarifai("--endpoint", f"127.0.0.1:{closed_port()}",
                                              "--insecure")], r"127\.0\.0\.1", base=False),
    Case("emulator: wrong key", "run", lambda w: [*TINY, *PRICED, *emulated(w)], r"key|11009",
         base=False, env={"CLARIFAI_PAT": "wrong-key"}),
    Case("emulator: labels it lacks", "run",
         lambda w: [*TINY, *PRICED, *emulated(w, "--labels", "x,y")], r"x", base=False,
         env={"CLARIFAI_PAT": EMULATOR_KEY}),
    Case("azure without endpoint", "run",
         [*TINY, "--provider", "azure", "--model", "p/i", "--labels", "a,b"], r"endpoint",
         base=False),
    # --- folders
    Case("runs-dir a file", "run", lambda w: ["--runs-dir", w.file("afile", "x")], r"afile"),
    Case("runs-dir /sys", "run", ["--runs-dir", "/sys/barapi-runs"], r"/sys/barapi-runs"),
    Case("cache-dir under a file", "run",
         lambda w: ["--cache-dir", str(Path(w.file("afile", "x")) / "c")], r"afile"),
    # --- resume: damaged run folders
    Case("resume an empty folder", "run", lambda w: ["--resume", w.folder("empty")], r"empty",
         base=False),
    Case("resume a garbage config.json", "run",
         lambda w: ["--resume", w.damaged("config.json", "{not json")], r"config\.json",
         base=False, owner="run_folder.py"),
    Case("resume a config.json with lr -1", "run",
         lambda w: ["--resume", w.edited(set_config(lr=-1))], r"config\.json|lr", base=False),
    Case("resume a config.json with classes empty", "run",
         lambda w: ["--resume", w.edited(set_config(classes=""))], r"classes", base=False),
    Case("resume a config.json that is a FIFO", "run",
         lambda w: ["--resume", w.damaged("config.json", "FIFO")], r"config\.json", base=False,
         owner="run_folder.py"),
    Case("resume a deleted ledger", "run",
         lambda w: ["--resume", w.damaged("ledger.jsonl", None), "--budget", "100000"],
         r"ledger", base=False),
    Case("resume a ledger that is a FIFO", "run",
         lambda w: ["--resume", w.damaged("ledger.jsonl", "FIFO")], r"ledger", base=False,
         owner="budget.py"),
    Case("resume a budget.json that is a list", "run",
         lambda w: ["--resume", w.damaged("budget.json", "[1, 2]")], r"budget\.json", base=False,
         owner="run_folder.py"),
    Case("resume a corrupt budget.json", "run",
         lambda w: ["--resume", w.damaged("budget.json", "{oops")], r"budget\.json", base=False),
    Case("resume a corrupt checkpoint", "run",
         lambda w: ["--resume", w.damaged("checkpoint.npz", b"garbage")], r"checkpoint",
         base=False),
    Case("resume a checkpoint from another config", "run",
         lambda w: ["--resume", w.edited(set_config(resolution=8))], r"checkpoint|resolution",
         base=False, owner="checkpoint.py/run_state.py"),
    Case("resume with --epochs", "run",
         lambda w: ["--resume", w.run_copy(), "--epochs", "9"], r"--epochs", base=False),
    Case("resume budget 1e308", "run",
         lambda w: ["--resume", w.run_copy(), "--budget", "1e308"], r"budget", base=False),
    Case("resume card-set name=x", "run",
         lambda w: ["--resume", w.run_copy(), "--card-set", "name=x"], r"\bname\b", base=False),
    Case("resume empty string", "run", ["--resume", ""], r"resume", base=False),
]

OTHERS = [
    Case("estimate budget 1e308", "estimate", ["--budget", "1e308"], r"budget"),
    Case("estimate card-set price true", "estimate", ["--card-set", "price_per_1000=true"],
         r"price_per_1000"),
    Case("estimate card-set rate 1e-9", "estimate", ["--card-set", "requests_per_second=1e-9"],
         r"requests_per_second"),
    Case("estimate card-file /dev/urandom", "estimate", ["--card-file", "/dev/urandom"],
         r"/dev/urandom"),
    Case("estimate classes empty", "estimate", ["--classes", ""], r"classes"),
    Case("estimate train-size 0", "estimate", ["--train-size", "0"], r"train-size"),
    Case("evaluate a missing folder", "evaluate", ["nope"], r"nope"),
    Case("evaluate a non-run folder", "evaluate", lambda w: [w.folder("plain")], r"plain"),
    Case("evaluate budget 1e308", "evaluate", lambda w: [w.run_copy(), "--budget", "1e308"],
         r"budget"),
    Case("evaluate budget -1", "evaluate", lambda w: [w.run_copy(), "--budget", "-1"], r"budget"),
    Case("evaluate a corrupt checkpoint", "evaluate",
         lambda w: [w.damaged("checkpoint.npz", b"garbage")], r"checkpoint"),
    Case("evaluate a checkpoint from another config", "evaluate",
         lambda w: [w.edited(set_config(resolution=8))], r"checkpoint|resolution",
         owner="checkpoint.py/run_state.py"),
    Case("evaluate a budget.json that is a list", "evaluate",
         lambda w: [w.damaged("budget.json", "[]")], r"budget\.json", owner="run_folder.py"),
    Case("evaluate a stored card with price true", "evaluate",
         lambda w: [w.edited(lambda s: s["session"]["card"].update(price_per_1000=True))],
         r"price_per_1000"),
    Case("predict a FIFO image", "predict", lambda w: [w.run_copy(), w.fifo("x.png")], r"x\.png"),
    Case("predict /dev/zero as an image", "predict",
         lambda w: [w.run_copy(), w.link("zero.png", "/dev/zero")], r"zero\.png"),
    Case("predict a corrupt image", "predict",
         lambda w: [w.run_copy(), w.file("broken.png", b"\x89PNG junk")], r"broken\.png"),
    Case("predict budget nan", "predict",
         lambda w: [w.run_copy(), w.png("x.png"), "--budget", "nan"], r"budget"),
    Case("repair-ledger a non-run folder", "repair-ledger", lambda w: [w.folder("plain")],
         r"plain"),
    # --- sweeps (item 9)
    Case("sweep budget 0 on a priced card", "sweep",
         lambda w: [w.spec(SPEC), "--budget", "0"], r"budget", base=False),
    Case("sweep budget 1e308", "sweep", lambda w: [w.spec(SPEC), "--budget", "1e308"], r"budget",
         base=False),
    Case("sweep budget nan", "sweep", lambda w: [w.spec(SPEC), "--budget", "nan"], r"budget",
         base=False),
    Case("sweep without a budget", "sweep", lambda w: [w.spec(SPEC)], r"budget", base=False),
    Case("sweep an empty spec", "sweep", lambda w: [w.spec("")], r"sweep\.toml"),
    Case("sweep a spec of comments", "sweep", lambda w: [w.spec("# nothing\n")], r"sweep\.toml"),
    Case("sweep a spec with only [sweep]", "sweep", lambda w: [w.spec("[sweep]\nsamples = 2\n")],
         r"sweep\.toml"),
    Case("sweep a spec that is a FIFO", "sweep", lambda w: [w.fifo("s.toml")], r"s\.toml"),
    Case("sweep /dev/zero as the spec", "sweep", ["/dev/zero"], r"/dev/zero"),
    Case("sweep a binary spec", "sweep", lambda w: [w.spec("[run]\x00\x00")], r"sweep\.toml"),
    Case("sweep a spec not TOML", "sweep", lambda w: [w.spec("[run\n")], r"sweep\.toml"),
    Case("sweep unknown table", "sweep", lambda w: [w.spec(SPEC + "[runs]\nq = 1\n")], r"runs"),
    Case("sweep [run] unknown field", "sweep", lambda w: [w.spec(SPEC.replace("q = 1", "qq = 1"))],
         r"qq"),
    Case("sweep [run] classes empty", "sweep",
         lambda w: [w.spec(SPEC.replace('classes = "0,1"', 'classes = ""'))], r"classes"),
    Case("sweep [run] q 100000", "sweep",
         lambda w: [w.spec(SPEC.replace("q = 1", "q = 100000"))], r"\bq\b"),
    Case("sweep [grid] empty list", "sweep", lambda w: [w.spec(SPEC + "[grid]\nseed = []\n")],
         r"seed"),
    Case("sweep [grid] not a list", "sweep", lambda w: [w.spec(SPEC + "[grid]\nseed = 3\n")],
         r"seed"),
    Case("sweep [card] name", "sweep", lambda w: [w.spec(SPEC + 'name = "x"\n')], r"\bname\b"),
    Case("sweep [card] price true", "sweep",
         lambda w: [w.spec(SPEC.replace("price_per_1000 = 1000", "price_per_1000 = true"))],
         r"price_per_1000"),
    Case("sweep [card] price 1e-7", "sweep",
         lambda w: [w.spec(SPEC.replace("price_per_1000 = 1000", "price_per_1000 = 1e-7"))],
         r"price_per_1000"),
    Case("sweep [sweep] samples 0", "sweep", lambda w: [w.spec(SPEC + "[sweep]\nsamples = 0\n")],
         r"samples"),
    Case("sweep --address unreachable", "sweep",
         lambda w: [w.spec(SPEC), "--address", f"127.0.0.1:{closed_port()}"], r"address"),
    Case("sweep --address empty", "sweep", lambda w: [w.spec(SPEC), "--address", ""],
         r"address"),
    Case("sweep --max-concurrent 0", "sweep", lambda w: [w.spec(SPEC), "--max-concurrent", "0"],
         r"max-concurrent"),
    Case("sweep resume a non-sweep folder", "sweep", lambda w: ["--resume", w.folder("plain")],
         r"plain", base=False),
    Case("sweep resume a garbage sweep.json", "sweep",
         lambda w: ["--resume", str(Path(w.file("sw/sweep.json", "{oops")).parent)],
         r"sweep\.json", base=False),
    Case("sweep resume a sweep.json that is a list", "sweep",
         lambda w: ["--resume", str(Path(w.file("sw/sweep.json", "[]")).parent)],
         r"sweep\.json", base=False),
]

CASES = [*RUN, *OTHERS]

QUICK = ("budget 1e308", "card-set name=x", "card-set price true", "card-set price 1e-7 rounds to $0",
         "card-set rate 1e-9", "card-file /dev/zero", "card-file a FIFO", "key-file a FIFO",
         "classes empty", "model empty", "labels a name twice", "q 100000",
         "dataset empty .npz", "dataset a FIFO .npz", "sweep an empty spec",
         "nudenet box with input-size 64")
"""The representative subset tests/test_bad_inputs.py runs (one or two of each kind)."""


def command_line(case: Case, work: Work) -> list[str]:
    args = case.args(work) if callable(case.args) else list(case.args)
    if case.command == "run":
        return ["run", *((TINY + PRICED) if case.base else []), "--no-progress", "--runs-dir",
                "runs", *args]
    if case.command == "estimate":
        return ["estimate", *(TINY if case.base else []), *args]
    if case.command == "sweep":
        extra = ["--budget", "100000"] if case.base else []
        return ["sweep", *args, *extra, "--no-progress", "--sweeps-dir", "sweeps"]
    return [case.command, *args]


# --- measuring one case ---------------------------------------------------------------------

def ledger_totals(root: Path) -> dict[str, int]:
    """Every ledger under `root` → its billed nanodollars (-1 when unreadable)."""
    from barapi.budget import read_ledger

    totals = {}
    for path in root.rglob("ledger.jsonl"):
        if not path.is_file():  # a case's FIFO or device: never read
            continue
        try:
            totals[str(path)] = read_ledger(path, allow_gaps=True).spent_nano
        except Exception:  # a damaged ledger is a case's input: its size is compared instead
            totals[str(path)] = -1
    return totals


def folders(root: Path) -> set[str]:
    """Run and sweep folders under `root` (runs/*, sweeps/*)."""
    return {str(p) for name in ("runs", "sweeps") for p in (root / name).glob("*") if p.is_dir()}


def classify(returncode: int | None, out: str, err: str) -> tuple[str, str]:
    """(outcome, the error line or the last line printed)."""
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else (out.strip().splitlines() or [""])[-1]
    if returncode is None:
        return "hang", last
    if "Traceback (most recent call last)" in out + err:
        return "traceback", last
    if returncode == 0:
        return "exit 0", last
    errors = [line for line in lines if line.startswith(("barapi: error:", "Error:"))]
    if len(errors) == 1 and lines[-1] == errors[0]:
        return "error", errors[0]
    return "unclear", last


def run_case(case: Case, root: Path, finished: Finished, timeout: float) -> dict[str, Any]:
    """Run `case` in a fresh folder under `root`; its row of the table."""
    work_dir = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    work = Work(work_dir, finished)
    env = {**os.environ, "XDG_CACHE_HOME": str(work_dir / "xdg"), "CLARIFAI_PAT": DUMMY_KEY,
           "AZURE_CV_PREDICTION_KEY": DUMMY_KEY, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    try:
        try:
            argv = command_line(case, work)
        except Exception as exc:  # the case's own set-up failed: not barapi's outcome
            return {"id": case.id, "outcome": "setup failed", "error": repr(exc)}
        ledgers, runs = ledger_totals(work_dir), folders(work_dir)
        sizes = {p: Path(p).stat().st_size for p in ledgers}
        billed = work.emulator.emulator.counters.billed_images if work.emulator else 0
        start = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "barapi", *argv], cwd=work_dir,
                                   env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, errors="replace",
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the case's own process group
            out, err = process.communicate()
            code = None
        seconds = time.monotonic() - start
        outcome, line = classify(code, out, err)
        after = ledger_totals(work_dir)
        spent = sum(max(0, total - ledgers.get(path, 0)) for path, total in after.items()
                    if total >= 0 and (path not in sizes or Path(path).stat().st_size != sizes[path]))
        server = (work.emulator.emulator.counters.billed_images - billed) if work.emulator else 0
        left = sorted(Path(p).name for p in folders(work_dir) - runs)
        names = bool(re.search(case.expect, line, re.IGNORECASE)) if case.expect else None
        return {"id": case.id, "command": case.command, "argv": argv, "outcome": outcome,
                "exit_code": code, "seconds": round(seconds, 1), "error": line[:400],
                "names_it": names, "dollars": spent / 1e9, "server_images": server,
                "folder_left": left, "owner": case.owner,
                "stderr_tail": "" if outcome == "error" else err[-1500:]}
    finally:
        if work.emulator is not None:
            work.emulator.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


def run_cases(cases: list[Case], jobs: int = 2, timeout: float = 60, root: Path | None = None,
              progress: bool = False) -> list[dict[str, Any]]:
    """The rows of `cases` (in their order), run `jobs` at a time, each within `timeout`
    seconds; `progress`: one line on stderr as each ends."""
    with tempfile.TemporaryDirectory(prefix="bad-inputs-", dir=root) as tmp:
        base = Path(tmp)
        finished = Finished(base)
        with ThreadPoolExecutor(jobs) as pool:
            futures = [pool.submit(run_case, c, base, finished, timeout) for c in cases]
            if progress:
                for done, future in enumerate(as_completed(futures), start=1):
                    row = future.result()
                    print(f"[{done}/{len(cases)}] {row['id']}: {row['outcome']} "
                          f"({row.get('seconds', 0)} s)", file=sys.stderr, flush=True)
            return [f.result() for f in futures]


def failures(row: dict[str, Any]) -> list[str]:
    """What is wrong with a row's outcome (empty: one error line, $0, no folder left)."""
    wrong = [] if row["outcome"] == "error" else [row["outcome"]]
    if row.get("dollars", 0) > 0 or row.get("server_images", 0) > 0:
        wrong.append("spent")
    if row.get("folder_left"):
        wrong.append("folder left")
    return wrong


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in rows)
    return {"cases": len(rows), **{k: counts.get(k, 0) for k in OUTCOMES},
            "spent_before_error": sum(1 for r in rows if r.get("dollars", 0) > 0
                                      or r.get("server_images", 0) > 0),
            "dollars": round(sum(r.get("dollars", 0) for r in rows), 9),
            "folders_left": sum(1 for r in rows if r.get("folder_left")),
            "not_named": sum(1 for r in rows if r.get("names_it") is False)}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'case':<48} {'outcome':<9} {'$':>8} {'srv':>4} {'dir':>3} {'s':>5}  error line")
    for r in rows:
        flag = "" if r.get("names_it") is not False else " [does not name it]"
        owner = f" [fix: {r['owner']}]" if r.get("owner") and failures(r) else ""
        print(f"{r['id'][:48]:<48} {r['outcome']:<9} {r.get('dollars', 0):>8.3f} "
              f"{r.get('server_images', 0):>4} {'yes' if r.get('folder_left') else 'no':>3} "
              f"{r.get('seconds', 0):>5.1f}  {r.get('error', '')[:110]}{flag}{owner}")
    s = summary(rows)
    print(f"\n{s['cases']} cases: {s['error']} one-line errors, {s['traceback']} tracebacks, "
          f"{s['hang']} hangs, {s['exit 0']} accepted, {s['unclear']} unclear; "
          f"{s['spent_before_error']} spent before the error (${s['dollars']:.3f}), "
          f"{s['folders_left']} left a folder; {s['not_named']} error lines do not name the "
          f"culprit")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases at a time")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per case")
    parser.add_argument("--only", default=None, help="regex: run the cases whose id matches")
    parser.add_argument("--quick", action="store_true", help="the subset the tests run")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if (not args.quick or c.id in QUICK)
             and (args.only is None or re.search(args.only, c.id))]
    start = time.monotonic()
    rows = run_cases(cases, args.jobs, args.timeout, progress=True)
    print_table(rows)
    if args.only is None and not args.quick:
        from benchmarks.common import write_results

        path = write_results("bad_inputs", rows, "python -m benchmarks.bad_inputs",
                             summary=summary(rows), wall_seconds=round(time.monotonic() - start))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
