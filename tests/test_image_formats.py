"""Image files that real pipelines meet, read as a viewer shows them (issue 15).

Every row of `CASES` writes one file with Pillow (or, for what Pillow cannot write, by hand) and
states the pixels a viewer shows: transparency over white, 16-bit samples scaled (not clipped),
EXIF orientation applied, the first frame of an animation.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from barapi.data import BACKGROUND, Dataset, load_dataset, read_image, select_classes
from barapi.errors import ConfigError

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
W, H = 32, 16  # left half / right half, 8×8- and 16×16-block aligned for JPEG
LEFT, RIGHT = (8, 8), (8, 24)  # (row, column) at the centre of each half


def halves(mode: str, left: Any, right: Any, size: tuple[int, int] = (W, H)) -> Image.Image:
    im = Image.new(mode, size, right)
    im.paste(left, (0, 0, size[0] // 2, size[1]))
    return im


def palette(left: int, right: int, **save: Any) -> Callable[[Path], None]:
    """A P image of palette indices left|right; palette 0 black, 1 red, 2 green, 3 blue."""
    def write(path: Path) -> None:
        im = halves("P", left, right)
        im.putpalette([*BLACK, *RED, *GREEN, *BLUE])
        im.save(path, **save)
    return write


def png16(array: np.ndarray, colour_type: int, trns: bytes = b"") -> Callable[[Path], None]:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB, RGBA or grey+alpha)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def write(path: Path) -> None:
        h, w = array.shape[:2]
        raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
        header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                         + (chunk(b"tRNS", trns) if trns else b"")
                         + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return write


def halves16(left: tuple[int, ...], right: tuple[int, ...]) -> np.ndarray:
    array = np.empty((H, W, len(left)), dtype=np.uint16)
    array[:, : W // 2], array[:, W // 2:] = left, right
    return array


def grey16(values: list[int], mode: str = "I;16", **save: Any) -> Callable[[Path], None]:
    """A 16-bit greyscale image of vertical stripes, one per value (written from numpy uint16)."""
    def write(path: Path) -> None:
        array = np.tile(np.repeat(np.array(values, dtype=np.uint16), W // len(values)), (H, 1))
        if mode == "I;16B":  # Pillow's convert() to I;16B clips at 255: build it from bytes
            im = Image.frombytes(mode, (W, H), array.astype(">u2").tobytes())
        else:
            im = Image.fromarray(array)
        im.save(path, **save)
    return write


def stripes(values: list[tuple[int, int, int]]) -> dict[tuple[int, int], tuple[int, int, int]]:
    step = W // len(values)
    return {(8, i * step + step // 2): v for i, v in enumerate(values)}


def saved(make: Callable[[], Image.Image], **save: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        make().save(path, **save)
    return write


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    tags[0x010F] = "Camera maker"
    return tags


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def text_chunks() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "slide scanner 2.1")
    info.add_itxt("Description", "café crème", lang="fr")
    return info


def float_image(values: list[float]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        row = np.repeat(np.array(values, dtype=np.float32), W // len(values))
        Image.fromarray(np.tile(row, (H, 1))).save(path)
    return write


def frames(first: tuple[int, int, int], *others: tuple[int, int, int], **save: Any
           ) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        images = [Image.new("RGB", (W, H), c) for c in (first, *others)]
        images[0].save(path, save_all=True, append_images=images[1:], **save)
    return write


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    write: Callable[[Path], None]
    pixels: dict[tuple[int, int], tuple[int, int, int]]
    tolerance: int = 0
    shape: tuple[int, int] = (H, W)


HALF_RED = (255, 127, 127)  # red at alpha 128 over white
HALF_GREEN = (127, 255, 127)

CASES = [
    # PNG, 8 bits
    Case("png-L", ".png", saved(lambda: halves("L", 77, 200)), {LEFT: (77,) * 3, RIGHT: (200,) * 3}),
    Case("png-RGB", ".png", saved(lambda: halves("RGB", RED, BLUE)), {LEFT: RED, RIGHT: BLUE}),
    Case("png-RGBA-opaque", ".png", saved(lambda: halves("RGBA", (*RED, 255), (*BLUE, 255))),
         {LEFT: RED, RIGHT: BLUE}),
    Case("png-RGBA-transparent", ".png", saved(lambda: halves("RGBA", (0, 0, 0, 0), (*RED, 128))),
         {LEFT: WHITE, RIGHT: HALF_RED}),
    Case("png-LA-transparent", ".png", saved(lambda: halves("LA", (0, 0), (0, 255))),
         {LEFT: WHITE, RIGHT: BLACK}),
    Case("png-P", ".png", palette(1, 3), {LEFT: RED, RIGHT: BLUE}),
    Case("png-P-transparent-index", ".png", palette(0, 1, transparency=0), {LEFT: WHITE, RIGHT: RED}),
    Case("png-P-alpha-per-entry", ".png", palette(2, 0, transparency=bytes([0, 255, 128, 255])),
         {LEFT: HALF_GREEN, RIGHT: WHITE}),
    Case("png-L-colour-key", ".png", saved(lambda: halves("L", 0, 200), transparency=0),
         {LEFT: WHITE, RIGHT: (200,) * 3}),
    Case("png-RGB-colour-key", ".png", saved(lambda: halves("RGB", (1, 2, 3), RED), transparency=(1, 2, 3)),
         {LEFT: WHITE, RIGHT: RED}),
    Case("png-1bit", ".png", saved(lambda: halves("1", 0, 1)), {LEFT: BLACK, RIGHT: WHITE}),
    # PNG, 16 bits
    Case("png-I16-known-values", ".png", grey16([0, 255, 256, 32768, 65280, 65535, 32767, 65279]),
         stripes([(v,) * 3 for v in (0, 0, 1, 128, 255, 255, 127, 254)])),
    Case("png-I16-numpy-gradient", ".png", grey16([1000, 12345, 40000, 60000]),
         stripes([(3,) * 3, (48,) * 3, (156,) * 3, (234,) * 3])),
    Case("png-I16-colour-key", ".png", grey16([0, 32768], transparency=0),
         {LEFT: WHITE, RIGHT: (128,) * 3}),
    Case("png-RGB48", ".png", png16(halves16((65535, 0, 32768), (0, 65535, 0)), 2),
         {LEFT: (255, 0, 128), RIGHT: GREEN}),
    Case("png-RGB48-colour-key", ".png",
         png16(halves16((65535, 0, 0), (0, 0, 65535)), 2, struct.pack(">HHH", 65535, 0, 0)),
         {LEFT: WHITE, RIGHT: BLUE}),
    Case("png-RGBA64-transparent", ".png", png16(halves16((0, 0, 0, 0), (65535, 0, 0, 65535)), 6),
         {LEFT: WHITE, RIGHT: RED}),
    Case("png-LA32-transparent", ".png", png16(halves16((0, 0), (0, 65535)), 4),
         {LEFT: WHITE, RIGHT: BLACK}),
    # PNG metadata and frames
    Case("png-icc-and-text", ".png",
         saved(lambda: halves("RGB", RED, BLUE), icc_profile=srgb_icc(), pnginfo=text_chunks(),
               dpi=(300, 300)), {LEFT: RED, RIGHT: BLUE}),
    Case("png-exif-orientation-3", ".png", saved(lambda: halves("RGB", RED, BLUE), exif=exif(3)),
         {LEFT: BLUE, RIGHT: RED}),
    Case("png-animated-first-frame", ".png", frames(RED, GREEN, BLUE, duration=100), {LEFT: RED}),
    # JPEG
    Case("jpeg-RGB", ".jpg", saved(lambda: halves("RGB", RED, BLUE), quality=95),
         {LEFT: RED, RIGHT: BLUE}, tolerance=12),
    Case("jpeg-L", ".jpeg", saved(lambda: halves("L", 50, 200), quality=95),
         {LEFT: (50,) * 3, RIGHT: (200,) * 3}, tolerance=4),
    Case("jpeg-CMYK", ".jpg", saved(lambda: halves("CMYK", (0, 255, 255, 0), (255, 255, 0, 0)),
                                    quality=95), {LEFT: RED, RIGHT: BLUE}, tolerance=12),
    Case("jpeg-exif-orientation-6", ".jpg",
         saved(lambda: halves("RGB", RED, BLUE), quality=95, exif=exif(6), icc_profile=srgb_icc()),
         {(8, 8): RED, (24, 8): BLUE}, tolerance=12, shape=(W, H)),
    Case("jpeg-exif-orientation-8", ".jpg", saved(lambda: halves("RGB", RED, BLUE), quality=95,
                                                  exif=exif(8)),
         {(8, 8): BLUE, (24, 8): RED}, tolerance=12, shape=(W, H)),
    Case("jpeg-progressive", ".jpg", saved(lambda: halves("RGB", RED, BLUE), quality=95,
                                           progressive=True), {LEFT: RED, RIGHT: BLUE}, tolerance=12),
    # TIFF
    Case("tiff-RGB", ".tif", saved(lambda: halves("RGB", RED, BLUE)), {LEFT: RED, RIGHT: BLUE}),
    Case("tiff-RGB-lzw", ".tiff", saved(lambda: halves("RGB", RED, BLUE), compression="tiff_lzw"),
         {LEFT: RED, RIGHT: BLUE}),
    Case("tiff-RGBA-transparent", ".tif", saved(lambda: halves("RGBA", (0, 0, 0, 0), (*RED, 255))),
         {LEFT: WHITE, RIGHT: RED}),
    Case("tiff-I16", ".tif", grey16([0, 32768, 65535, 4096]),
         stripes([(0,) * 3, (128,) * 3, (255,) * 3, (16,) * 3])),
    Case("tiff-I16-big-endian", ".tif", grey16([0, 32768, 65535, 4096], mode="I;16B"),
         stripes([(0,) * 3, (128,) * 3, (255,) * 3, (16,) * 3])),
    Case("tiff-I32-signed", ".tif",
         saved(lambda: Image.fromarray(np.tile(np.repeat(np.array([-5, 0, 2**30, 2**31 - 1], np.int32), 8),
                                               (H, 1)))),
         stripes([(0,) * 3, (0,) * 3, (128,) * 3, (255,) * 3])),
    Case("tiff-F32-unit-range", ".tif", float_image([0.0, 0.25, 0.5, 1.0]),
         stripes([(0,) * 3, (64,) * 3, (128,) * 3, (255,) * 3])),
    Case("tiff-F32-other-range", ".tif", float_image([-1.0, 0.0, 1.0, 3.0]),
         stripes([(0,) * 3, (64,) * 3, (128,) * 3, (255,) * 3])),
    Case("tiff-F32-nan", ".tif", float_image([float("nan"), 0.5]), {LEFT: BLACK, RIGHT: (128,) * 3}),
    Case("tiff-multipage-first-page", ".tif", frames(RED, GREEN, BLUE), {LEFT: RED, RIGHT: RED}),
    Case("tiff-CMYK", ".tif", saved(lambda: halves("CMYK", (0, 255, 255, 0), (0, 0, 0, 255))),
         {LEFT: RED, RIGHT: BLACK}),
    Case("tiff-1bit", ".tif", saved(lambda: halves("1", 1, 0)), {LEFT: WHITE, RIGHT: BLACK}),
    Case("tiff-LAB", ".tif", saved(lambda: halves("LAB", (136, 208, 195), (255, 128, 128))),
         {LEFT: RED, RIGHT: WHITE}, tolerance=12),
    # BMP, GIF, WebP
    Case("bmp-RGB", ".bmp", saved(lambda: halves("RGB", RED, BLUE)), {LEFT: RED, RIGHT: BLUE}),
    Case("bmp-1bit", ".bmp", saved(lambda: halves("1", 0, 1)), {LEFT: BLACK, RIGHT: WHITE}),
    Case("bmp-P", ".bmp", palette(3, 2), {LEFT: BLUE, RIGHT: GREEN}),
    Case("gif-transparent", ".gif", palette(0, 1, transparency=0), {LEFT: WHITE, RIGHT: RED}),
    Case("gif-animated-first-frame", ".gif", frames(RED, GREEN, BLUE, duration=100, loop=0),
         {LEFT: RED, RIGHT: RED}),
    Case("webp-lossless", ".webp", saved(lambda: halves("RGB", RED, BLUE), lossless=True),
         {LEFT: RED, RIGHT: BLUE}),
    Case("webp-lossless-alpha", ".webp",
         saved(lambda: halves("RGBA", (0, 0, 0, 0), (*BLUE, 255)), lossless=True),
         {LEFT: WHITE, RIGHT: BLUE}),
    Case("webp-lossy", ".webp", saved(lambda: halves("RGB", RED, BLUE), quality=90),
         {LEFT: RED, RIGHT: BLUE}, tolerance=16),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_image_is_read_as_a_viewer_shows_it(tmp_path: Path, case: Case) -> None:
    path = tmp_path / f"image{case.suffix}"
    case.write(path)
    image = read_image(path, "table")
    assert image.dtype == np.uint8 and image.shape == (*case.shape, 3)
    for (row, column), expected in case.pixels.items():
        got = image[row, column].astype(int)
        assert np.abs(got - expected).max() <= case.tolerance, (
            f"pixel ({row}, {column}) is {tuple(got)}, expected {expected}")


def test_the_table_covers_what_the_issue_names() -> None:
    assert len(CASES) >= 25 and BACKGROUND == (255, 255, 255)
    assert {c.suffix for c in CASES} >= {".png", ".jpg", ".tif", ".bmp", ".gif", ".webp"}


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey16([0, 32768, 65535, 16384])(tmp_path / "scan.png")
    image = read_image(tmp_path / "scan.png", "scan")
    assert image[0, ::8, 0].tolist() == [0, 128, 255, 64]


def write_rgb(path: Path, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), RED).save(path)


@pytest.mark.parametrize("size", [12, 30], ids=["warning-zone", "error-zone"])
def test_decompression_bomb_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        size: int) -> None:
    # Pillow warns above MAX_IMAGE_PIXELS (144 > 100) and refuses above twice it (900 > 200).
    write_rgb(tmp_path / "a" / "ok.png", size)
    write_rgb(tmp_path / "b" / "huge.png", size)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ConfigError, match=r"huge\.png|ok\.png") as caught:
        load_dataset(str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "decompression-bomb" in message and "resize" in message


def test_truncated_png_is_named(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"cut\.png") as caught:
        read_image(tmp_path / "cut.png", "src")
    assert "\n" not in str(caught.value)


def test_png_with_a_broken_chunk_is_named_not_a_traceback(tmp_path: Path) -> None:
    # IDAT's length field says 27 bytes: the next "chunk" is read from the middle of the data,
    # where Pillow raises SyntaxError (not OSError) while loading the pixels.
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        tmp_path / "full.png")
    data = bytearray((tmp_path / "full.png").read_bytes())
    at = data.index(b"IDAT")
    data[at - 4: at] = struct.pack(">I", 27)
    (tmp_path / "broken.png").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"broken\.png") as caught:
        read_image(tmp_path / "broken.png", "src")
    assert "\n" not in str(caught.value)


def test_file_with_a_huge_stated_size_is_named(tmp_path: Path) -> None:
    # A corrupt header claiming 60000×60000 pixels: Pillow's bomb check, one line, not a traceback.
    Image.new("RGB", (4, 4), RED).save(tmp_path / "small.bmp")
    data = bytearray((tmp_path / "small.bmp").read_bytes())
    data[18:26] = struct.pack("<ii", 60000, 60000)
    (tmp_path / "liar.bmp").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"liar\.bmp.*decompression-bomb"):
        read_image(tmp_path / "liar.bmp", "src")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing\.png does not exist"):
        read_image(tmp_path / "nothing.png", "src")


# Files around the images: CSV encodings, class names, operating-system files.

CAFE, CAFE_DECOMPOSED = "caf\u00e9", "cafe\u0301"  # "café" typed / as macOS writes it


def test_csv_saved_with_a_utf8_bom_loads(tmp_path: Path) -> None:
    rows = ["path,label"] + [f"img/{i}.png,{'thé' if i % 2 else CAFE}" for i in range(4)]
    for i in range(4):
        write_rgb(tmp_path / "img" / f"{i}.png")
    (tmp_path / "list.csv").write_bytes("\r\n".join(rows).encode("utf-8-sig"))
    data = load_dataset(str(tmp_path / "list.csv"))
    assert data.classes == [CAFE, "thé"] and data.labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(("encoding", "found"), [("latin-1", "byte 0xe9"), ("utf-16", "UTF-16")])
def test_csv_that_is_not_utf8_is_named(tmp_path: Path, encoding: str, found: str) -> None:
    write_rgb(tmp_path / "a.png")
    (tmp_path / "list.csv").write_bytes("path,label\na.png,café\n".encode(encoding))
    with pytest.raises(ConfigError, match=rf"list\.csv: not UTF-8 text \({found}") as caught:
        load_dataset(str(tmp_path / "list.csv"))
    assert "\n" not in str(caught.value)


def test_decomposed_class_folder_is_selected_by_its_composed_name(tmp_path: Path) -> None:
    for name in (CAFE_DECOMPOSED, "tea"):
        for i in range(3):
            write_rgb(tmp_path / name / f"{i}.png")
    data = load_dataset(str(tmp_path))
    assert data.classes == [CAFE, "tea"]
    chosen = select_classes(data, ["tea", CAFE])
    assert chosen.classes == ["tea", CAFE] and chosen.labels.tolist() == [1, 1, 1, 0, 0, 0]


def test_decomposed_csv_labels_match_composed_names(tmp_path: Path) -> None:
    rows = ["path,label"]
    for i in range(4):
        write_rgb(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{CAFE_DECOMPOSED if i < 2 else CAFE}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = load_dataset(str(tmp_path / "list.csv"))
    assert data.classes == [CAFE] and data.labels.tolist() == [0, 0, 0, 0]


def test_select_classes_compares_names_after_normalisation() -> None:
    data = Dataset(np.zeros((4, 2, 2, 3), dtype=np.uint8), np.array([0, 1, 0, 1]),
                   [CAFE_DECOMPOSED, "tea"], "toy")
    chosen = select_classes(data, [CAFE])
    assert chosen.classes == [CAFE] and len(chosen.labels) == 2
    with pytest.raises(ConfigError, match="no class named 'milk'"):
        select_classes(data, ["milk"])


APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


@pytest.mark.parametrize(("name", "content"), [
    (".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(64)),
    ("._0.png", APPLE_DOUBLE),
    ("._photo.JPG", APPLE_DOUBLE),
    ("Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64)),
    ("desktop.ini", b"[.ShellClassInfo]\r\n"),
    (".hidden.png", b"not an image"),
], ids=[".DS_Store", "._0.png", "._photo.JPG", "Thumbs.db", "desktop.ini", ".hidden.png"])
def test_operating_system_files_in_class_folders_are_skipped(tmp_path: Path, name: str,
                                                              content: bytes) -> None:
    for label in ("cat", "dog"):
        for i in range(2):
            write_rgb(tmp_path / label / f"{i}.png")
        (tmp_path / label / name).write_bytes(content)
    (tmp_path / name).write_bytes(content)
    data = load_dataset(str(tmp_path))
    assert data.classes == ["cat", "dog"] and len(data.labels) == 4


@pytest.mark.parametrize("folder", [".ipynb_checkpoints", "__MACOSX", ".thumbnails", "@eaDir"])
def test_hidden_and_system_folders_are_not_classes(tmp_path: Path, folder: str) -> None:
    for label in ("cat", "dog"):
        write_rgb(tmp_path / label / "0.png")
    write_rgb(tmp_path / folder / "0.png")
    (tmp_path / folder / "._0.png").write_bytes(APPLE_DOUBLE)
    data = load_dataset(str(tmp_path))
    assert data.classes == ["cat", "dog"] and len(data.labels) == 2


def test_other_non_image_files_are_still_ignored_by_suffix(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        write_rgb(tmp_path / label / "0.png")
        (tmp_path / label / "notes.txt").write_text("taken on a Tuesday")
    assert len(load_dataset(str(tmp_path)).labels) == 2
