"""Disk cache of paid answers: SHA-256 key → probability row, stored as numbers.

Key = SHA-256 over a key-format version, the adapter's identity (provider, endpoint, model
and version, output settings; a local model's weights digest and input size), its class
names in column order, the image shape and the exact image bytes sent. Keys of older formats
(1: the identity alone; 2: answers stored as pickles) are never looked up again. Paid answers
are never evicted. diskcache is blocking, so each batch is one hop to a worker thread, not one
per image.

Trust: a cache folder may be shared, copied or tampered with. An answer is stored as a byte
record (`encode_row`: a tag, the row length K as uint32 and K little-endian float32), kept
inside cache.db; `AnswerDisk` never unpickles, never reads or deletes a file a row names. A
stored row that is not such a record of the adapter's width is a bad entry, read as a miss
(QueryService then validates the rows that decode exactly like fresh answers).

Failures of the cache itself (cache.db damaged, disk full, locked past its timeout): on a
priced provider (`priced`) the run stops before its next paid request (`ready_to_pay`,
CacheUnusable, one line naming the folder and --no-cache); on a free one the cache is turned
off with one warning and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import struct
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import numpy as np
from diskcache.core import MODE_RAW, UNKNOWN
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.errors import CacheUnusable, ConfigError

log = logging.getLogger(__name__)


def check_writable(path: Path, what: str) -> Path:
    """The nearest existing folder at or above `path`; raises ConfigError unless `path` is
    (or can be made inside it) a writable folder. `what` names it in the message."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: not writable")
    return probe


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "barapi"


KEY_FORMAT = 3
T = TypeVar("T")
TAG = b"BPf4"
"""First bytes of a stored answer: barapi probabilities, float32 little-endian."""
_HEADER = struct.Struct("<4sI")


def cache_identity(adapter: Adapter) -> str:
    """What, besides the image, determines an adapter's answer row."""
    labels = "\x1f".join(adapter.labels)
    return f"v{KEY_FORMAT}|{adapter.identity}|{labels}"


def image_keys(identity: str, images: NDArray[np.uint8]) -> list[str]:
    """One hex SHA-256 key per image of a (N, H, W, 3) uint8 batch."""
    prefix = hashlib.sha256(f"{identity}|{images.shape[1:]}".encode()).digest()
    return [hashlib.sha256(prefix + np.ascontiguousarray(im).tobytes()).hexdigest()
            for im in images]


def encode_row(row: NDArray[np.floating[Any]]) -> bytes:
    """The stored form of one (K,) answer row: TAG, K (uint32 LE), K float32 LE."""
    values = np.ascontiguousarray(row, dtype="<f4").reshape(-1)
    return _HEADER.pack(TAG, len(values)) + values.tobytes()


def decode_row(data: object, width: int | None = None) -> NDArray[np.float32] | None:
    """The (K,) float32 row `data` holds, or None unless it is exactly an `encode_row` record
    (of K = `width` values, when given). Values are not checked here (see
    `barapi.query.invalid_rows`)."""
    if not isinstance(data, bytes) or len(data) < _HEADER.size:
        return None
    tag, k = _HEADER.unpack_from(data)
    if tag != TAG or k == 0 or len(data) != _HEADER.size + 4 * k or (width is not None and k != width):
        return None
    return np.frombuffer(data, dtype="<f4", offset=_HEADER.size).astype(np.float32)


class BadEntry:
    """What `AnswerDisk.fetch` gives for a row barapi did not write: read as a miss."""


BAD_ENTRY = BadEntry()


class AnswerDisk(diskcache.Disk):
    """diskcache's serialisation narrowed to what barapi writes: bytes, kept in cache.db.

    A row stored any other way (a pickle, whose loading runs code; a file, whose name could
    point anywhere) is never loaded: `fetch` gives BAD_ENTRY. Nothing is ever written to or
    deleted from files, so a planted row's file name is never touched."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory)  # disk_* settings stored in cache.db are not trusted

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, None, memoryview]:
        if read or type(value) is not bytes:
            raise TypeError(f"the answer cache stores bytes only, not {type(value).__name__}")
        return 0, MODE_RAW, None, sqlite3.Binary(value)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and filename is None and isinstance(value, bytes) and not read:
            return value
        return BAD_ENTRY

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("the answer cache holds a pickled key; it is not loaded")
        return super().get(key, raw)

    def remove(self, file_path: str) -> None:
        """Never delete: barapi writes no files, and a tampered row may name any path."""


STOPPED = {"read": "before paying for answers it may hold: repair or move the folder",
           "write": "before the next paid request (what was paid is in the ledger; answers "
                    "that could not be kept are bought again on a resume): free space or "
                    "repair the folder"}
_warned: set[str] = set()
"""Warnings already given in this process (one per folder and kind of failure)."""


class ProbabilityCache:
    """Shareable on-disk cache (a folder); files are created user-only, on first use.

    `priced`: the answers are paid for, so a cache that fails stops the run before its next
    paid request (see `ready_to_pay`) instead of paying again; on a free provider a failure turns
    the cache off with one warning. Raises ConfigError when the folder cannot be used (a
    file in its place, not writable). `bad_entries` counts stored rows read as misses."""

    def __init__(self, directory: Path | str | None = None, priced: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.priced = priced
        self.bad_entries = 0
        probe = check_writable(self.directory, "cache folder")
        if probe != self.directory:  # try to make it, then leave nothing behind until used
            try:
                self.directory.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cache folder {self.directory}: cannot create it "
                                  f"({exc.strerror or exc})") from exc
            made = self.directory
            while made != probe:
                made.rmdir()
                made = made.parent
        self._opened: diskcache.Cache | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._failure: CacheUnusable | None = None
        self._off = False
        self._last_write: Future[None] | None = None  # one worker: the others are done before it

    @property
    def _cache(self) -> diskcache.Cache:
        if self._opened is None:
            old = os.umask(0o077)
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._opened = diskcache.Cache(str(self.directory), disk=AnswerDisk,
                                               eviction_policy="none", size_limit=2**62,
                                               statistics=0)
            finally:
                os.umask(old)
        return self._opened

    def preflight(self) -> None:
        """Free check before anything is paid: an existing cache.db opens and passes SQLite's
        quick_check (a folder without one is left alone until used). Raises CacheUnusable on
        a priced provider; on a free one, warns once and turns the cache off."""
        database = self.directory / "cache.db"
        if not os.path.lexists(database):
            return
        try:
            with contextlib.closing(sqlite3.connect(str(database), timeout=60)) as con:
                rows = con.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise sqlite3.DatabaseError(f"integrity check: {rows[0][0] if rows else 'no answer'}")
            _ = self._cache
        except Exception as exc:  # any failure of an untrusted file: unusable
            self._fail("read", exc)
        self.check()

    def check(self) -> None:
        """Raise CacheUnusable if the cache failed on a priced provider."""
        if self._failure is not None:
            raise self._failure

    async def ready_to_pay(self) -> None:
        """Called just before each paid request: on a priced provider, wait for the writes
        already queued (those of requests that returned), then `check`; so that nothing more
        is paid once answers can no longer be kept. No wait when nothing is queued."""
        last = self._last_write
        if self.priced and last is not None and not last.done():
            await asyncio.shield(asyncio.wrap_future(last))  # (a cancel must not drop a write)
        self.check()

    def _fail(self, what: str, exc: BaseException) -> None:
        """Record a failure to `what` ("read" or "write") the cache (see `priced`)."""
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        where = f"answer cache {self.directory}: cannot {what} it ({reason})"
        self._off = True
        if self.priced:
            if self._failure is None:
                self._failure = CacheUnusable(f"{where}; stopped {STOPPED[what]}, choose another "
                                              f"--cache-dir, or run with --no-cache")
        elif where not in _warned:
            _warned.add(where)
            log.warning("%s; going on without the cache", where)

    def _get_many(self, keys: list[str], width: int | None
                  ) -> tuple[list[NDArray[np.float32] | None], int]:
        """The decoded rows (None: absent or bad) and how many stored rows were bad."""
        if self._off:
            return [None] * len(keys), 0
        try:
            stored = [self._cache.get(k) for k in keys]
        except Exception as exc:  # damaged, locked, unreadable: see _fail
            self._fail("read", exc)
            return [None] * len(keys), 0
        rows = [decode_row(v, width) if v is not None else None for v in stored]
        return rows, sum(r is None and v is not None for r, v in zip(rows, stored, strict=True))

    def _set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        if self._off:
            return
        try:
            with self._cache.transact():
                for key, value in zip(keys, values, strict=True):
                    self._cache.set(key, encode_row(value))
        except Exception as exc:  # disk full, locked, damaged: see _fail
            self._fail("write", exc)

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run a blocking diskcache call on the cache's one worker thread: calls of one
        process never contend for SQLite's write lock with each other."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="barapi-cache")
        return self._worker.submit(fn, *args)

    def store(self, keys: list[str], values: NDArray[np.float32]) -> Future[None]:
        """Queue paid (N, K) answers for writing, without waiting: called the moment they
        arrive, so that no cancellation can come between an answer and its write; `close`
        waits. A failed write does not raise here: see `ready_to_pay`."""
        self._last_write = self._submit(self._set_many, list(keys), np.array(values, dtype=np.float32))
        return self._last_write

    async def get_many(self, keys: list[str], width: int | None = None
                       ) -> list[NDArray[np.float32] | None]:
        """The stored (K,) row of each key, None where there is none or it is not a record of
        `width` values (counted in `bad_entries`). Raises CacheUnusable (priced) when the
        cache cannot be read: before anything of the batch is paid."""
        rows, bad = await asyncio.wrap_future(self._submit(self._get_many, keys, width))
        self.check()
        self.report_bad(bad)
        return rows

    async def set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        await asyncio.shield(asyncio.wrap_future(self.store(keys, values)))

    def report_bad(self, count: int) -> None:
        """Note `count` more stored answers read as misses (damaged or tampered): they are
        asked again, within the budget, and replaced. Warns once per cache."""
        if not count:
            return
        first = self.bad_entries == 0
        self.bad_entries += count
        if first:
            log.warning("answer cache %s: %d stored answer(s) are not valid answers (damaged or "
                        "tampered); they are asked again, within the budget, and replaced",
                        self.directory, count)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Wait for pending writes, then close the files (reopened on next use)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._opened is not None:
            self._opened.close()
            self._opened = None
