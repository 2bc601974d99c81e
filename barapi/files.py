"""Opening files a user names (card and key files, datasets, images, sweep specs) safely.

A path can name something that is not a file: a folder, a FIFO (reading blocks until a writer
comes, forever), a character device (`/dev/zero` and `/dev/urandom` never end), a socket. Its
type is checked on the open file descriptor (no race between the check and the read), the
open itself never blocks (O_NONBLOCK), and small text files are read up to a cap. Every
problem is a one-line ConfigError naming the file and what was expected.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from barapi.errors import ConfigError

SMALL_TEXT_BYTES = 1 << 20
"""Most bytes a small text file (a card, a key, a sweep spec) may hold: 1 MiB."""

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """"a folder", "a FIFO (named pipe)", ... for an `os.stat` mode that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: Path | str, what: str) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file (symbolic links followed).

    `what` names the file in errors ("card file", "key file", ...). Raises ConfigError when it
    does not exist, cannot be opened, or is a folder, FIFO, device or socket (never blocks)."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path}: is a folder, expected a file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot open it ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{what} {path}: is {kind_of(mode)}, expected a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: Path | str, what: str) -> None:
    """Raise ConfigError unless `path` is a regular file (see `open_regular`)."""
    open_regular(path, what).close()


def read_small_text(path: Path | str, what: str, max_bytes: int = SMALL_TEXT_BYTES) -> str:
    """The UTF-8 text of the small regular file at `path` (a byte-order mark dropped).

    Raises ConfigError (one line naming `what` and the file) when it is not a regular file,
    holds more than `max_bytes` bytes, is binary (a NUL byte) or is not UTF-8."""
    path = Path(path).expanduser()
    with open_regular(path, what) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path}: larger than {max_bytes:,} bytes; expected a small "
                          f"text file")
    if b"\x00" in data:
        raise ConfigError(f"{what} {path}: binary data (a NUL byte); expected a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                          f"offset {exc.start})") from None
