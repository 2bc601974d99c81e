"""Safe writes for run folders: atomic checkpoints (arrays and JSON metadata in one .npz)
and the helpers every file of a run folder is written through.

A write that fails — a full disk, a read-only or vanished folder — raises WriteFailed naming
the file, never a bare OSError, and never leaves a half-written file in place of a good one:
whole files are written to a temporary file, fsynced, then renamed over the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from barapi.errors import ConfigError, WriteFailed


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into WriteFailed naming `path`."""
    try:
        yield
    except OSError as exc:
        raise WriteFailed(path, exc.strerror or type(exc).__name__) from None


def replace_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` (mode 0600) through `write(handle)` into a temporary file beside it,
    fsync it and rename it over `path`: a crash or a full disk leaves either the previous
    file or the new one, never a torn one. Raises WriteFailed naming `path`."""
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def append_line(path: Path, line: bytes, sync: bool = False) -> None:
    """Append `line` to `path` (created 0600), all of it or none: a write cut short (a full
    disk) is undone by truncating the file back to its length before. Raises WriteFailed."""
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                done = 0
                while done < len(line):
                    written = os.write(fd, line[done:])
                    if written <= 0:
                        raise OSError(28, os.strerror(28))  # ENOSPC
                    done += written
                if sync:
                    os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # if this fails too, the torn line stays
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def save_checkpoint(path: Path, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> None:
    """Write `arrays` and JSON-serialisable `meta` to `path` atomically (see
    `replace_atomically`); raises WriteFailed when it cannot be written."""
    payload: dict[str, Any] = {"__meta__": np.array(json.dumps(meta)), **arrays}
    replace_atomically(path, lambda handle: np.savez(handle, **payload))


def load_checkpoint(path: Path) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """(arrays, meta) of a checkpoint; raises ConfigError naming the file when it is not one
    barapi wrote (damaged, truncated, another program's)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            meta = json.loads(str(data["__meta__"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: damaged or not a barapi checkpoint ({type(exc).__name__}); "
                          f"restore it from a backup, or delete it to start the run's training "
                          f"again (answers already paid for are in the cache)") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not a barapi checkpoint (no metadata)")
    return arrays, meta
