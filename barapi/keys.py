"""API keys: read from the environment or a file the user names, never from argv or config.

A `Secret` hides its value from repr/str/format, so it cannot leak into logs, run folders,
checkpoints or cache keys by accident; adapters call `reveal()` only to build a request. A
lazy secret (`read_key(..., lazy=True)`) reads the key on first `reveal()`: commands that
send nothing (`barapi estimate`) never need one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from barapi.errors import ConfigError


class Secret:
    __slots__ = ("_load", "_value")

    def __init__(self, value: str | None = None, load: Callable[[], str] | None = None) -> None:
        if value is None and load is None:
            raise ValueError("a Secret needs a value or a way to load it")
        self._value, self._load = value, load

    def reveal(self) -> str:
        """The key; raises ConfigError when a lazy secret cannot find it."""
        if self._value is None:
            assert self._load is not None
            self._value = self._load()
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled or written anywhere")


def read_key(env_var: str, key_file: Path | str | None = None, lazy: bool = False) -> Secret:
    """The key in `key_file` (first line) if given, else in the environment variable; with
    `lazy`, read on first use. Raises ConfigError when there is none (at once, or then)."""
    if lazy:
        return Secret(load=lambda: read_key(env_var, key_file).reveal())
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise ConfigError(f"key file {path}: cannot read it ({exc.strerror})") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"key file {path}: not text (UTF-8); its first line must be the "
                              f"key") from None
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"key file {path}: empty; its first line must be the key")
    else:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise ConfigError(f"no API key: set the environment variable {env_var} "
                              f"(keys are never taken from command-line arguments)")
    return Secret(value)
