"""The run folder: everything a run leaves behind, and how to read it back.

    config.json     resolved configuration, seeds and package versions
    metrics.jsonl   one JSON object per step / validation / event
    checkpoint.npz  W, best W, optimiser state, label map, step (atomic, every step)
    ledger.jsonl    every request sent and its outcome (see budget.py)
    budget.json     the run's budget, and its spend, billed images and wall time as of the
                    last checkpoint (cross-checked against the ledger on every open)
    .lock           held (flock) by the one process using the folder
    program.png     the learned program on the canvas
    curves.png      training loss and validation accuracy
    summary.json    final numbers
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from barapi.budget import Budget, format_dollars, read_ledger
from barapi.config import RunConfig, one_line
from barapi.errors import ConfigError, LedgerDamaged, RunFolderBusy

PACKAGES = ("barapi", "numpy", "torch", "efficientnet-lite-pytorch", "scikit-learn", "pillow",
            "diskcache", "tenacity", "clarifai-grpc", "azure-cognitiveservices-vision-customvision")


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def new_folder(base: Path, failure: str) -> Path:
    """Create `base` (or `base-2`, `base-3`, … when taken), private (0700); ConfigError
    "`failure` (reason)" when it cannot be made."""
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    try:
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"{failure} ({exc.strerror})") from exc
    return path


def lock_folder(folder: Path, rule: str) -> IO[str]:
    """An exclusive flock on FOLDER/.lock, held while the returned file stays open (the
    kernel releases it when the process dies); the file holds the holder's PID. Raises
    RunFolderBusy naming that PID and `rule` when another process holds it, ConfigError
    when the lock file cannot be opened."""
    path = folder / ".lock"
    try:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the folder's lock ({exc.strerror})") from exc
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read(64).strip() or "another process"
        handle.close()
        raise RunFolderBusy(f"{folder}: in use by process {holder} ({rule})") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class RunFolder:
    """A run's folder. `lock()` makes this process its only user (an OS lock, released when
    the process ends, however it ends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None  # closed (lock released) with this object
        self.created = False

    @classmethod
    def create(cls, root: Path, config: RunConfig, name: str | None = None,
               **session: Any) -> RunFolder:
        """A new folder under `root` (named `name`, default: time, dataset and method);
        `session` (card, cache settings) is stored beside the config so that a resumed run
        pays the same prices and uses the same cache."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = root / (name or f"{stamp}-{Path(config.dataset).stem}-{config.method}")
        path = new_folder(base, f"runs folder {root}: cannot create a run folder in it")
        folder = cls(path)
        folder.created = True
        folder.lock()
        folder.write_json("config.json", {"config": config.model_dump(), "session": session,
                                          "versions": package_versions()})
        return folder

    def lock(self) -> None:
        """Take the folder's lock; raises RunFolderBusy when another process holds it."""
        if self._lock_file is None:
            self._lock_file = lock_folder(self.path, "one process at a time per run folder; "
                                                     "wait for it to finish")

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def discard(self) -> None:
        """Remove a folder this process created, when nothing in it was paid for."""
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def record_path(self) -> Path:
        return self.path / "budget.json"

    def record(self) -> dict[str, Any]:
        """budget.json: {"limit": dollars or null, "spent_nanodollars", "billed_images",
        "wall_seconds", "requests_per_second"} (empty before the first write)."""
        if not self.record_path.exists():
            return {}
        try:
            data: dict[str, Any] = json.loads(self.record_path.read_text())
        except (OSError, ValueError) as exc:
            raise LedgerDamaged(f"{self.record_path}: unreadable ({exc}); restore it from a "
                                f"backup or delete it to keep only the ledger's figures") from exc
        return data

    def write_record(self, **fields: Any) -> None:
        """Update budget.json atomically (temp file, fsync, rename)."""
        data = {**self.record(), **fields}
        tmp = self.record_path.with_name(".budget.json.tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.record_path)

    def budget(self, price_per_1000: float, limit: float | None) -> Budget:
        """The run's Budget on its ledger, after checking the ledger against the spend
        recorded in budget.json and the checkpoint: a ledger that records less (cut, deleted)
        raises LedgerDamaged, with how to repair it."""
        budget = Budget(price_per_1000, limit, self.ledger)
        recorded, where = self.recorded_spend()
        if budget.spent_nano < recorded:
            raise LedgerDamaged(
                f"{self.ledger}: records {format_dollars(budget.spent_nano, nano=True)} spent but "
                f"{where} records {format_dollars(recorded, nano=True)}: the ledger is damaged. "
                f"Restore it from a backup, or run `barapi repair-ledger {self.path}` to count the "
                f"difference as spent; nothing is sent until then")
        return budget

    def recorded_spend(self) -> tuple[int, str]:
        """The largest spend recorded outside the ledger (nanodollars) and where."""
        best, where = 0, "nothing"
        record = self.record().get("spent_nanodollars")
        if record is not None:
            best, where = int(record), "budget.json"
        if self.checkpoint.exists():
            from barapi.checkpoint import load_checkpoint

            _, meta = load_checkpoint(self.checkpoint)
            spent = int(meta.get("ledger", {}).get("spent_nanodollars", 0))
            if spent > best:
                best, where = spent, "checkpoint.npz"
        return best, where

    def repair_ledger(self) -> int:
        """Make the ledger agree with the spend recorded beside it: missing lines are
        accepted, and the difference is appended as billed, uncertain spend (never less than
        either record). Returns the nanodollars added."""
        totals = read_ledger(self.ledger, allow_gaps=True)
        recorded, _ = self.recorded_spend()
        missing = max(0, recorded - totals.spent_nano)
        images = max(0, int(self.record().get("billed_images", 0)) - totals.images)
        budget = Budget()
        budget.ledger = self.ledger
        budget.add_uncertain(images if missing else 0, missing,
                             "repair: spend recorded beside the ledger", totals.last_id)
        return missing

    @classmethod
    def open(cls, path: Path, lock: bool = True) -> RunFolder:
        """The run folder at `path`, locked for this process unless `lock` is False."""
        if not Path(path).is_dir():
            raise ConfigError(f"{path}: no such run folder")
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{path}: not a barapi run folder (no config.json)")
        folder = cls(Path(path))
        try:
            folder.config()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}/config.json: unreadable or not barapi's "
                              f"({one_line(exc)})") from exc
        if lock:
            folder.lock()
        return folder

    def config(self) -> RunConfig:
        stored = self.read_json("config.json")["config"]
        stored.setdefault("head_refit", False)  # made before the field: what it ran with
        return RunConfig(**stored)

    def session(self) -> dict[str, Any]:
        """Card and cache settings the run was started with."""
        stored: dict[str, Any] = self.read_json("config.json").get("session", {})
        return stored

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.npz"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        (self.path / name).write_text(json.dumps(payload, indent=2) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name).read_text())
        return data

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def truncate_metrics(self, step: int) -> None:
        """Drop records after `step` (written after the last checkpoint of a crashed run)."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
