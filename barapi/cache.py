"""Disk cache of paid answers: SHA-256 key → probability vector.

Key = SHA-256 over the adapter's identity (provider, model, version, output settings), the
image shape and the exact image bytes sent. Paid answers are never evicted. diskcache is
blocking, so each batch is one hop to a worker thread, not one per image.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import diskcache
import numpy as np
from numpy.typing import NDArray


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "barapi"


def image_keys(identity: str, images: NDArray[np.uint8]) -> list[str]:
    """One hex SHA-256 key per image of a (N, H, W, 3) uint8 batch."""
    prefix = hashlib.sha256(f"{identity}|{images.shape[1:]}".encode()).digest()
    return [hashlib.sha256(prefix + np.ascontiguousarray(im).tobytes()).hexdigest()
            for im in images]


class ProbabilityCache:
    """Shareable on-disk cache (a folder); files are created user-only."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        old = os.umask(0o077)
        try:
            self._cache = diskcache.Cache(str(self.directory), eviction_policy="none",
                                          size_limit=2**62)
        finally:
            os.umask(old)

    def _get_many(self, keys: list[str]) -> list[NDArray[np.float32] | None]:
        return [self._cache.get(k) for k in keys]

    def _set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        with self._cache.transact():
            for key, value in zip(keys, values, strict=True):
                self._cache.set(key, np.array(value, dtype=np.float32))

    async def get_many(self, keys: list[str]) -> list[NDArray[np.float32] | None]:
        return await asyncio.to_thread(self._get_many, keys)

    async def set_many(self, keys: list[str], values: NDArray[np.float32]) -> None:
        await asyncio.to_thread(self._set_many, keys, values)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
