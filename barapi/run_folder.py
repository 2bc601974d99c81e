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

Every record of spend in the folder is a witness the ledger must not be below (DESIGN.md,
money invariant 2): budget.json, the checkpoint's ledger totals, the dollars of every
metrics.jsonl record and summary.json. A ledger that records less stops the run (see
`RunFolder.budget`), even when every other record is gone but one. Every file is written
through barapi.checkpoint's safe writes: a full disk raises WriteFailed, and
`RunFolder.write_failure` turns it into the one line that says what is kept and how to go on.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from barapi.budget import NANO, Budget, format_dollars, read_ledger
from barapi.checkpoint import append_line, replace_atomically
from barapi.config import RunConfig, one_line
from barapi.errors import ConfigError, LedgerDamaged, RunFolderBusy, WriteFailed
from barapi.files import check_regular
from barapi.ratelimit import UNLIMITED_START, recovered_rate

PACKAGES = ("barapi", "numpy", "torch", "efficientnet-lite-pytorch", "scikit-learn", "pillow",
            "diskcache", "tenacity", "clarifai-grpc", "azure-cognitiveservices-vision-customvision")


RECORD_FIELDS: dict[str, tuple[str, bool]] = {
    "limit": ("amount", True), "spent_nanodollars": ("count", False),
    "billed_images": ("count", False), "uncertain_images": ("count", False),
    "uncertain_nanodollars": ("count", False), "uncertain_requests": ("count", False),
    "uncertain_reasons": ("reasons", False), "wall_seconds": ("amount", False),
    "requests_per_second": ("amount", True), "rate_saved_at": ("amount", True),
    "throttled_requests": ("count", False), "labels": ("labels", False)}
"""budget.json's fields: (kind, may be null). Kinds: "amount" a finite number ≥ 0, "count"
an integer ≥ 0, "labels" a list of strings, "reasons" an object of counts."""
_KIND_TEXT = {"amount": "a finite number ≥ 0", "count": "an integer ≥ 0",
              "labels": "a list of strings", "reasons": "an object of reason: count"}


def _fits(kind: str, value: Any) -> bool:
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if kind == "count":
        return count(value)
    if kind == "amount":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value >= 0)
    if kind == "labels":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and all(count(v) for v in value.values())


def check_record(path: Path, data: Any) -> dict[str, Any]:
    """budget.json's content, checked: a JSON object whose known fields have their kind
    (RECORD_FIELDS). Raises LedgerDamaged naming the file and the field otherwise."""
    advice = ("restore it from a backup, or delete it to keep only the ledger's figures (the "
              "run's budget is then given again with --budget)")
    if not isinstance(data, dict):
        raise LedgerDamaged(f"{path}: expected a JSON object such as {{\"limit\": 20.0, "
                            f"\"spent_nanodollars\": 0, ...}}, found {type(data).__name__}; "
                            f"{advice}")
    for name, (kind, nullable) in RECORD_FIELDS.items():
        value = data.get(name)
        if name in data and not (value is None and nullable) and not _fits(kind, value):
            raise LedgerDamaged(f"{path}: field {name!r} must be {_KIND_TEXT[kind]}"
                                f"{' or null' if nullable else ''}, found {value!r:.60}; {advice}")
    return data


def dollars_nano(value: Any) -> int | None:
    """A record's dollars (a finite number ≥ 0) in nanodollars; None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and value >= 0:
        return round(value * NANO)
    return None


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


RECORDS = ("config.json", "metrics.jsonl", "checkpoint.npz", "ledger.jsonl", "budget.json",
           ".lock", "summary.json")
"""The files of a run folder that barapi reads back: each, where present, must be a regular
file (checked by `RunFolder.open` before anything is read)."""


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
        try:
            folder.lock()
            folder.write_json("config.json", {"config": config.model_dump(), "session": session,
                                              "versions": package_versions()})
        except (ConfigError, WriteFailed) as exc:  # nothing was paid: no half-made folder
            folder.discard()
            reason = exc.reason if isinstance(exc, WriteFailed) else str(exc)
            raise ConfigError(f"runs folder {root}: cannot create a run folder in it "
                              f"({reason}); nothing was sent") from None
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
        """budget.json (empty before the first write): {"limit": dollars or null,
        "spent_nanodollars", "billed_images", "uncertain_nanodollars", "uncertain_images",
        "uncertain_requests", "uncertain_reasons": {reason: requests}, "wall_seconds",
        "requests_per_second" (learned) and "rate_saved_at" (Unix time), ...}. Raises
        LedgerDamaged when it is unreadable or not of that shape (see `check_record`)."""
        if not self.record_path.exists():
            return {}
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError) as exc:
            raise LedgerDamaged(f"{self.record_path}: unreadable ({one_line(exc)}); restore it "
                                f"from a backup or delete it to keep only the ledger's "
                                f"figures") from exc
        return check_record(self.record_path, data)

    def write_record(self, **fields: Any) -> None:
        """Update budget.json atomically (temp file, fsync, rename); WriteFailed if it
        cannot be written (the old one stays)."""
        text = json.dumps({**self.record(), **fields}, indent=2) + "\n"
        replace_atomically(self.record_path, lambda handle: handle.write(text.encode()))

    def record_spend(self, budget: Budget, **fields: Any) -> None:
        """Write `budget`'s spend into budget.json (with `fields`): its totals as the ledger
        has them, uncertain spend with its reasons included."""
        self.write_record(spent_nanodollars=budget.spent_nano, billed_images=budget.spent_images,
                          uncertain_nanodollars=budget.uncertain_nano,
                          uncertain_images=budget.uncertain_images,
                          uncertain_requests=budget.uncertain_requests,
                          uncertain_reasons=dict(budget.uncertain_reasons), **fields)

    def learned_rate(self, ceiling: float) -> float | None:
        """The request rate (per second) a resumed use starts at: the rate learned from the
        provider's throttling, recovered towards `ceiling` (the card's) for the time since it
        was saved (`ratelimit.recovered_rate`); None when none was learned."""
        record = self.record()
        rate = record.get("requests_per_second")
        if not rate:
            return None
        saved = record.get("rate_saved_at")
        if saved is None:  # saved before the field: budget.json's time is the latest save
            saved = self.record_path.stat().st_mtime
        top = ceiling or max(rate, UNLIMITED_START)  # a card without a limit: see Pacer
        return recovered_rate(rate, top, time.time() - saved)

    def write_failure(self, exc: WriteFailed, budget: Budget) -> WriteFailed:
        """The one line for a file of this folder that could not be written during a run:
        what, why, that the spend so far stays counted, and the command that continues."""
        path = Path(str(exc.path))
        name = path.name if path.parent == self.path else str(path)
        return WriteFailed(exc.path, exc.reason, (
            f"{self.path}: could not write {name} ({exc.reason}); the "
            f"{format_dollars(budget.spent_nano, nano=True)} spent so far stays counted in its "
            f"ledger (a request whose outcome could not be written counts as billed) and the "
            f"last checkpoint is intact. Free some space, then continue with: barapi run "
            f"--resume {self.path}"))

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

    def witnesses(self) -> list[tuple[int, int, str]]:
        """Every record of spend outside the ledger: (nanodollars, billed images or 0, where)
        from budget.json, the checkpoint's ledger totals, metrics.jsonl (each record's
        dollars) and summary.json. Unreadable records raise LedgerDamaged / ConfigError."""
        found: list[tuple[int, int, str]] = []
        def count(value: Any) -> int:
            return int(value) if _fits("count", value) else 0

        record = self.record()
        if "spent_nanodollars" in record:
            found.append((count(record["spent_nanodollars"]), count(record.get("billed_images")),
                          "budget.json"))
        if self.checkpoint.exists():
            from barapi.checkpoint import load_checkpoint

            ledger = load_checkpoint(self.checkpoint)[1].get("ledger")
            if isinstance(ledger, dict):
                found.append((count(ledger.get("spent_nanodollars")),
                              count(ledger.get("billed_images")), "checkpoint.npz"))
        dollars = [d for r in self.metrics() if (d := dollars_nano(r.get("dollars"))) is not None]
        if dollars:
            found.append((max(dollars), 0, "metrics.jsonl"))
        summary = self.path / "summary.json"
        if summary.exists():
            try:
                data = json.loads(summary.read_text())
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict) and (spent := dollars_nano(data.get("dollars"))) is not None:
                found.append((spent, count(data.get("billed_images")), "summary.json"))
        return found

    def recorded_spend(self) -> tuple[int, str]:
        """The largest spend recorded outside the ledger (nanodollars) and where (see
        `witnesses`); (0, "nothing") when there is none."""
        return max(((spent, where) for spent, _, where in self.witnesses()),
                   key=lambda pair: pair[0], default=(0, "nothing"))

    def repair_ledger(self) -> int:
        """Make the ledger agree with the spend recorded beside it: missing lines are
        accepted, and the difference is appended as billed, uncertain spend (never less than
        any record). Returns the nanodollars added."""
        totals = read_ledger(self.ledger, allow_gaps=True)
        witnesses = self.witnesses()
        recorded = max((spent for spent, _, _ in witnesses), default=0)
        missing = max(0, recorded - totals.spent_nano)
        images = max(0, max((n for _, n, _ in witnesses), default=0) - totals.images)
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
        for name in RECORDS:  # a FIFO or device in a record's place would block or never end
            record = Path(path) / name
            if os.path.lexists(record):
                check_regular(record, "run folder file")
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
        """Write NAME in the folder atomically; WriteFailed if it cannot be written."""
        text = json.dumps(payload, indent=2) + "\n"
        replace_atomically(self.path / name, lambda handle: handle.write(text.encode()))

    def read_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name).read_text())
        return data

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl, whole or not at all (WriteFailed)."""
        append_line(self.metrics_path, (json.dumps(record) + "\n").encode())

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records; lines that are not a JSON object (torn by a crash or a
        full disk) are skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop records after `step` (written after the last checkpoint of a crashed run);
        atomically, so that a full disk leaves the file as it was."""
        kept = "".join(json.dumps(r) + "\n" for r in self.metrics()
                       if not isinstance(r.get("step", 0), (int, float)) or r.get("step", 0) <= step)
        replace_atomically(self.metrics_path, lambda handle: handle.write(kept.encode()))
