"""barapi.files: a path that names a FIFO, a device, a folder, or a huge or binary file is
refused with one line, never read (issue 29, item 9: /dev/zero, /dev/urandom and FIFOs as key,
card or dataset files hung or exhausted memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import not_a_regular_file

from barapi.errors import ConfigError
from barapi.files import check_regular, open_regular, read_small_text

pytestmark = pytest.mark.timeout(20)  # reading a FIFO blocks forever


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_bytes("\ufeffprice = 1\n".encode())
    assert read_small_text(path, "card file") == "price = 1\n"
    with open_regular(path, "x") as handle:
        assert handle.read(3) == b"\xef\xbb\xbf"
    link = tmp_path / "link.toml"
    link.symlink_to(path)
    check_regular(link, "card file")  # a link to a regular file is one


@pytest.mark.parametrize(("kind", "says"), [("/dev/zero", "is a character device"),
                                            ("/dev/urandom", "is a character device"),
                                            ("fifo", r"is a FIFO \(named pipe\)"),
                                            ("folder", "is a folder"),
                                            ("missing", "no such file"),
                                            ("link to /dev/zero", "is a character device")])
def test_what_is_not_a_regular_file_is_refused_without_reading(tmp_path: Path, kind: str,
                                                               says: str) -> None:
    path = not_a_regular_file(tmp_path / "x", kind)
    with pytest.raises(ConfigError, match=rf"^key file {path}: {says}"):
        read_small_text(path, "key file")
    with pytest.raises(ConfigError, match=rf"^dataset {path}: {says}"):
        open_regular(path, "dataset")


@pytest.mark.parametrize(("data", "says"), [(b"x" * 101, "larger than 100 bytes"),
                                            (b"a = 1\x00", r"binary data \(a NUL byte\)"),
                                            (b"caf\xe9", "not UTF-8 text")])
def test_a_large_binary_or_non_utf8_file_is_refused(tmp_path: Path, data: bytes,
                                                   says: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"^sweep spec {path}: {says}"):
        read_small_text(path, "sweep spec", max_bytes=100)
