"""The run folder reads back only regular files: a FIFO or a device in a record's place would
block the resume forever (a FIFO) or never end (/dev/zero)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from barapi.errors import ConfigError
from barapi.run_folder import RECORDS, RunFolder


@pytest.mark.parametrize("name", RECORDS)
def test_a_record_that_is_a_fifo_is_one_line_naming_it_not_a_hang(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    if name != "config.json":
        (folder / "config.json").write_text("{}")
    os.mkfifo(folder / name)
    found: list[BaseException] = []

    def open_it() -> None:
        try:
            RunFolder.open(folder, lock=False)
        except BaseException as exc:  # handed to the test's thread
            found.append(exc)

    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader, then fail
        with open(folder / name, "wb"):
            pass
        pytest.fail(f"RunFolder.open blocked on {name} as a FIFO")
    assert len(found) == 1 and isinstance(found[0], ConfigError)
    message = str(found[0])
    assert name in message and "\n" not in message
    assert "FIFO" in message or "not a barapi run folder" in message
