"""Atomic checkpoints: arrays and JSON metadata in one .npz, replaced in a single rename."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.errors import ConfigError


def save_checkpoint(path: Path, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> None:
    """Write `arrays` and JSON-serialisable `meta` to `path` atomically (temp file, fsync,
    rename): a crash leaves either the previous checkpoint or the new one, never a torn file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            payload: dict[str, Any] = {"__meta__": np.array(json.dumps(meta)), **arrays}
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
