"""API keys: read from the environment or a file the user names, never from argv or config.

A `Secret` hides its value from repr/str/format, so it cannot leak into logs, run folders,
checkpoints or cache keys by accident; adapters call `reveal()` only to build a request. A
lazy secret (`read_key(..., lazy=True)`) reads the key on first `reveal()`: commands that
send nothing (`barapi estimate`) never need one.

A key is one line of printable ASCII without spaces (what every provider issues, and what an
HTTP or gRPC header can carry): anything else is refused with one line that names where the
key came from and what is wrong with it, never the key or any part of it. Error text built
from what a provider or a transport said passes through `Secret.scrub` (see `Secret.guard`),
so that a server echoing the key cannot put it into a message, a ledger or a run folder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from barapi.errors import BarapiError, ConfigError, PartialAnswer

MAX_KEY_FILE_BYTES = 4096
"""A key file larger than this is not a key file (API keys are tens of characters)."""

HIDDEN = "********"


def key_problem(value: str) -> str | None:
    """What makes `value` unusable as a key ("holds a line break", …), None when it is one line
    of printable ASCII without spaces (characters 0x21–0x7E). Never quotes the value."""
    if not value:
        return "is empty"
    if any(c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029" for c in value):
        return "holds a line break"
    if any(c in " \t" or c.isspace() for c in value):
        return "holds a space or tab"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "holds a control character"
    if not value.isascii():
        return "holds a character that is not ASCII"
    return None


def check_key(value: str, source: str) -> str:
    """`value` if it is a usable key; ConfigError naming `source` (an environment variable or a
    file) and what is wrong otherwise, without any of the key's characters."""
    problem = key_problem(value)
    if problem is not None:
        raise ConfigError(f"{source}: the key {problem}; a key is one line of printable ASCII "
                          f"without spaces (it is not shown here)")
    return value


class Secret:
    """An API key. `source` says where it came from ("environment variable CLARIFAI_PAT",
    "key file /path"), for messages; the value is checked (`check_key`) when first revealed."""

    __slots__ = ("_checked", "_load", "_value", "source")

    def __init__(self, value: str | None = None, load: Callable[[], str] | None = None,
                 source: str = "the API key") -> None:
        if value is None and load is None:
            raise ValueError("a Secret needs a value or a way to load it")
        self._value, self._load, self.source = value, load, source
        self._checked = False

    def reveal(self) -> str:
        """The key; raises ConfigError when a lazy secret cannot find it, or when it is not a
        usable key (see `check_key`)."""
        if self._value is None:
            assert self._load is not None
            self._value = self._load()
        if not self._checked:
            check_key(self._value, self.source)
            self._checked = True
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the key (as it is, or as Python's repr escapes it)
        replaced by ********. A key not loaded yet cannot be in any text."""
        value = self._value
        if not value:
            return text
        for form in {value, repr(value)[1:-1], repr(value.encode(errors="replace"))[2:-1]}:
            if form:
                text = text.replace(form, HIDDEN)
        return text

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Scrub the key out of the message of any barapi error raised inside the block
        (error text built from what a provider or a transport said), then re-raise it."""
        try:
            yield
        except BarapiError as exc:
            exc.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in exc.args)
            if isinstance(exc, PartialAnswer):
                exc.reasons = [self.scrub(r) for r in exc.reasons]
            raise

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled or written anywhere")


def read_key_file(path: Path) -> str:
    """The key held by the file at `path`: its one line (surrounding whitespace and a final
    line break ignored). Refuses, with ConfigError naming the file, anything that is not a
    small regular text file holding one line: a FIFO or a device (never read: it could block
    or never end), a file over MAX_KEY_FILE_BYTES, bytes that are not UTF-8, no line, or more
    than one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"key file {path}: cannot read it ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"key file {path}: not a regular file (a FIFO, a device or a "
                              f"folder); give a file whose one line is the key")
        raw = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"key file {path}: cannot read it ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"key file {path}: larger than {MAX_KEY_FILE_BYTES:,} bytes, not a key "
                          f"file; its one line must be the key")
    try:
        text = raw.decode("utf-8-sig").strip()  # (a byte-order mark from a Windows editor)
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path}: not text (UTF-8); its one line must be the "
                          f"key") from None
    if not text:
        raise ConfigError(f"key file {path}: empty; its one line must be the key")
    if len(text.splitlines()) > 1:
        raise ConfigError(f"key file {path}: holds more than one line; it must hold the key "
                          f"alone, on one line (it is not shown here)")
    return text


def read_key(env_var: str, key_file: Path | str | None = None, lazy: bool = False) -> Secret:
    """The key in `key_file` (its one line) if given, else in the environment variable; with
    `lazy`, read on first use. Raises ConfigError when there is none, or when it is not a
    usable key (`check_key`), at once or then."""
    if key_file is not None:
        path = Path(key_file).expanduser()
        source = f"key file {path}"
    else:
        source = f"environment variable {env_var}"
    if lazy:
        return Secret(load=lambda: read_key(env_var, key_file).reveal(), source=source)
    if key_file is not None:
        value = read_key_file(path)
    else:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise ConfigError(f"no API key: set the environment variable {env_var} "
                              f"(keys are never taken from command-line arguments)")
    secret = Secret(value, source=source)
    secret.reveal()  # checked now: a malformed key is refused where it is read
    return secret
