"""Disk cache of paid answers: SHA-256 key → probability vector.

Key = SHA-256 over a key-format version, the adapter's identity (provider, endpoint, model
and version, output settings; a local model's weights digest and input size), its class
names in column order, the image shape and the exact image bytes sent. Keys made before the
endpoint and labels were part of them (format 1) are never looked up again. Paid answers are
never evicted. diskcache is blocking, so each batch is one hop to a worker thread, not one per
image.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import diskcache
import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.errors import ConfigError


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


KEY_FORMAT = 2
CACHE_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)
"""Failures of the cache itself (locked past its timeout, disk full): never fatal to a run."""
T = TypeVar("T")


def cache_identity(adapter: Adapter) -> str:
    """What, besides the image, determines an adapter's answer row."""
    labels = "\x1f".join(adapter.labels)
    return f"v{KEY_FORMAT}|{adapter.identity}|{labels}"


def image_keys(identity: str, images: NDArray[np.uint8]) -> list[str]:
    """One hex SHA-256 key per image of a (N, H, W, 3) uint8 batch."""
    prefix = hashlib.sha256(f"{identity}|{images.shape[1:]}".encode()).digest()
    return [hashlib.sha256(prefix + np.ascontiguousarray(im).tobytes()).hexdigest()
            for im in images]


class ProbabilityCache:
    """Shareable on-disk cache (a folder); files are created user-only, on first use.

    Raises ConfigError when the folder cannot be used (a file in its place, not writable)."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
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

    @property
    def _cache(self) -> diskcache.Cache:
        if self._opened is None:
            old = os.umask(0o077)
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._opened = diskcache.Cache(str(self.directory), eviction_policy="none",
                                               size_limit=2**62)
            except OSError as exc:
                raise ConfigError(f"cache folder {self.directory}: cannot use it "
                                  f"({exc.strerror or exc})") from exc
            finally:
                os.umask(old)
        return self._opened

    def _get_many(self, keys: list[str]) -> list[NDArray[np.float32] | None]:
        try:
            return [self._cache.get(k) for k in keys]
        except CACHE_ERRORS as exc:  # answers not found are asked for (and paid) again
            self._warn("read", exc)
            return [None] * len(keys)

    def _set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        try:
            with self._cache.transact():
                for key, value in zip(keys, values, strict=True):
                    self._cache.set(key, np.array(value, dtype=np.float32))
        except CACHE_ERRORS as exc:  # the run goes on with its answers; they are not kept
            self._warn("write", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        warnings.warn(f"answer cache {self.directory}: {what} failed ({type(exc).__name__}: "
                      f"{exc}); the run goes on without it", RuntimeWarning, stacklevel=3)

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run a blocking diskcache call on the cache's one worker thread: calls of one
        process never contend for SQLite's write lock with each other."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="barapi-cache")
        return self._worker.submit(fn, *args)

    def store(self, keys: list[str], values: NDArray[np.float32]) -> Future[None]:
        """Queue paid answers for writing, without waiting: called the moment they arrive,
        so that no cancellation can come between an answer and its write; `close` waits."""
        return self._submit(self._set_many, list(keys), np.array(values, dtype=np.float32))

    async def get_many(self, keys: list[str]) -> list[NDArray[np.float32] | None]:
        return await asyncio.wrap_future(self._submit(self._get_many, keys))

    async def set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        await asyncio.shield(asyncio.wrap_future(self.store(keys, values)))

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
