"""API keys: read from the environment or a file the user names, never from argv or config.

A `Secret` hides its value from repr/str/format, so it cannot leak into logs, run folders,
checkpoints or cache keys by accident; adapters call `reveal()` only to build a request.
"""

from __future__ import annotations

import os
from pathlib import Path

from barapi.errors import ConfigError


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled or written anywhere")


def read_key(env_var: str, key_file: Path | str | None = None) -> Secret:
    """The key in `key_file` (first line) if given, else in the environment variable."""
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            value = path.read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"key file {path}: cannot read a key from it ({exc})") from exc
    else:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise ConfigError(f"no API key: set the environment variable {env_var} "
                              f"(keys are never taken from command-line arguments)")
    return Secret(value)
