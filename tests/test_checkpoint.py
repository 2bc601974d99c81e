"""Safe writes (barapi.checkpoint): a full disk never leaves a torn file in place of a good
one, and is reported as WriteFailed naming the file. Tried on a real full filesystem (a
small tmpfs, where this machine lets root mount one) and with ENOSPC injected at fsync."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from barapi.checkpoint import append_line, load_checkpoint, replace_atomically, save_checkpoint
from barapi.errors import WriteFailed


@contextlib.contextmanager
def tiny_filesystem(size_kib: int) -> Iterator[Path]:
    """A fresh tmpfs of `size_kib` KiB, mounted for the block; skips the test where mounting
    is not allowed (not root, or a container without CAP_SYS_ADMIN)."""
    where = Path("/tmp") / f"barapi-tinyfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    mounted = shutil.which("mount") is not None and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
        capture_output=True).returncode == 0
    if not mounted:
        where.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem of `folder` up to `leave_bytes` free bytes (a filler file)."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    room = stat.f_bavail * stat.f_frsize - leave_bytes
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, room))
    return filler


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one_on_a_full_disk() -> None:
    with tiny_filesystem(256) as disk:
        path = disk / "checkpoint.npz"
        good = {"weights": np.arange(12, dtype=np.float32).reshape(3, 2, 2)}
        save_checkpoint(path, good, {"step": 3})
        fill(disk)
        with pytest.raises(WriteFailed, match=f"^{path}: cannot write \\(No space left on "
                                              f"device\\)$"):
            save_checkpoint(path, {"weights": np.zeros((3, 64, 64), np.float32)}, {"step": 4})
        arrays, meta = load_checkpoint(path)
        assert meta == {"step": 3} and np.array_equal(arrays["weights"], good["weights"])
        assert sorted(p.name for p in disk.iterdir()) == ["checkpoint.npz", "filler"]  # no temp


def test_a_line_that_does_not_fit_is_not_left_torn_on_a_full_disk() -> None:
    with tiny_filesystem(64) as disk:
        path = disk / "ledger.jsonl"
        append_line(path, b'{"images": 1}\n')
        fill(disk)
        size = path.stat().st_size
        with pytest.raises(WriteFailed, match="No space left on device"):
            for _ in range(10_000):  # the page the file has fills, then the disk refuses
                append_line(path, b'{"images": 128, "nanodollars": 153600000, "id": 7}\n')
        assert path.read_bytes().endswith(b"}\n") and path.stat().st_size >= size


def test_an_error_at_fsync_keeps_the_old_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Some filesystems report a full disk only at fsync (delayed allocation)."""
    import barapi.checkpoint as safe

    path = tmp_path / "budget.json"
    replace_atomically(path, lambda handle: handle.write(b'{"limit": 1.0}\n'))

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe.os, "fsync", fsync)
    with pytest.raises(WriteFailed, match=r"budget\.json: cannot write"):
        replace_atomically(path, lambda handle: handle.write(b'{"limit": 2.0}\n'))
    assert path.read_bytes() == b'{"limit": 1.0}\n' and os.listdir(tmp_path) == ["budget.json"]
    with pytest.raises(WriteFailed, match=r"ledger\.jsonl: cannot write"):
        append_line(tmp_path / "ledger.jsonl", b"{}\n", sync=True)
    assert (tmp_path / "ledger.jsonl").read_bytes() == b""  # cut back: nothing half-kept
