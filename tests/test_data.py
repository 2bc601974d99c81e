from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from barapi.data import Dataset, load_dataset, stratified_split
from barapi.errors import ConfigError


def write_png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)


def test_digits_builtin() -> None:
    data = load_dataset("digits")
    assert data.images.shape == (1797, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.n_classes == 10


def test_image_folder_with_one_subfolder_per_class(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "benign" / f"{i}.png", 10)
        write_png(tmp_path / "malignant" / f"{i}.jpg", 200)
    data = load_dataset(str(tmp_path))
    assert data.classes == ["benign", "malignant"]
    assert data.images.shape == (6, 8, 8, 3)
    assert (data.images[data.labels == 1] > 150).all()


def test_csv_of_paths_and_labels(tmp_path: Path) -> None:
    rows = ["path,label"]
    for i in range(4):
        write_png(tmp_path / "img" / f"{i}.png", 50 * i)
        rows.append(f"img/{i}.png,{'yes' if i % 2 else 'no'}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "list.csv"))
    assert data.labels.tolist() == [0, 1, 0, 1] and data.classes == ["no", "yes"]


@pytest.mark.parametrize("header", ["path,label\n", ""])
def test_a_bad_csv_row_is_named_by_its_line_in_the_file(tmp_path: Path, header: str) -> None:
    """The line a text editor shows, with or without a header and past blank lines."""
    write_png(tmp_path / "a.png", 10)
    top = len(header.splitlines())
    (tmp_path / "l.csv").write_text(header + "a.png,x\n\nmissing.png,y\n")
    with pytest.raises(ConfigError, match=rf"l\.csv, line {top + 3}: image file .*missing\.png"):
        load_dataset(str(tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text(header + "a.png,x\n\na.png\n")
    with pytest.raises(ConfigError, match=rf"l\.csv: line {top + 3} must be 'path,label'"):
        load_dataset(str(tmp_path / "l.csv"))


def test_npz_correlation_matrices_scaled_globally(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.tanh(rng.standard_normal((10, 20, 20)))  # values in (-1, 1), like correlations
    np.savez(tmp_path / "abide.npz", X=x, y=np.array([0, 1] * 5))
    data = load_dataset(str(tmp_path / "abide.npz"))
    assert data.images.shape == (10, 20, 20, 3)
    flat = data.images[..., 0].astype(float).ravel()
    assert np.corrcoef(flat, x.ravel())[0, 1] > 0.999  # one global min/max, order kept


def test_folder_of_npy_matrices(tmp_path: Path) -> None:
    np.save(tmp_path / "X.npy", np.zeros((4, 5, 5)))
    np.save(tmp_path / "y.npy", np.array([1, 2, 1, 2]))
    assert load_dataset(str(tmp_path)).images.shape == (4, 5, 5, 3)


@pytest.mark.parametrize(("x", "y", "message"), [
    (np.full((4, 5, 5), np.nan), [0, 1, 0, 1], "NaN"),
    (np.zeros((4, 5)), [0, 1, 0, 1], "shape"),
    (np.zeros((4, 5, 5)), [0, 1, 0], "4 samples but y has 3"),
])
def test_bad_arrays_are_named(tmp_path: Path, x: np.ndarray, y: list[int], message: str) -> None:
    np.savez(tmp_path / "bad.npz", X=x, y=np.array(y))
    with pytest.raises(ConfigError, match=message):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_without_y_names_the_missing_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", X=np.zeros((2, 3, 3)))
    with pytest.raises(ConfigError, match=r"bad\.npz: missing array\(s\) y"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "ok.png", 1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"broken\.png"):
        load_dataset(str(tmp_path))


def test_inconsistent_image_sizes_are_named(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "small.png", 1, size=8)
    write_png(tmp_path / "b" / "large.png", 1, size=9)
    with pytest.raises(ConfigError, match="differ in size"):
        load_dataset(str(tmp_path))


def test_unknown_dataset() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def toy(counts: list[int]) -> Dataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    images = np.zeros((len(labels), 2, 2, 3), dtype=np.uint8)
    return Dataset(images, labels, [str(c) for c in range(len(counts))], "toy")


def test_split_is_stratified_disjoint_and_seeded() -> None:
    data = toy([50, 30, 20])
    split = stratified_split(data, 0.1, 0.2, seed=0)
    assert np.bincount(split.test.labels).tolist() == [10, 6, 4]
    assert np.bincount(split.val.labels).tolist() == [5, 3, 2]
    assert len(split.train.labels) + len(split.val.labels) + len(split.test.labels) == 100
    again = stratified_split(data, 0.1, 0.2, seed=0)
    assert np.array_equal(split.train.labels, again.train.labels)


def test_per_class_limit_and_rebalancing() -> None:
    split = stratified_split(toy([50, 30, 20]), 0.1, 0.2, seed=0, per_class=10)
    assert np.bincount(split.train.labels).tolist() == [10, 10, 10]
    balanced = stratified_split(toy([50, 10, 10]), 0.1, 0.2, seed=0, rebalance=True)
    assert len(set(np.bincount(balanced.train.labels).tolist())) == 1


def test_single_class_and_too_few_samples_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 2 classes"):
        stratified_split(toy([10]), 0.1, 0.2, seed=0)
    with pytest.raises(ConfigError, match="class '1' has 2 sample"):
        stratified_split(toy([10, 2]), 0.1, 0.2, seed=0)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs Debian's dataset-fashion-mnist package (.ci/run installs it)")
def test_fashion_mnist_from_the_debian_package() -> None:
    data = load_dataset("fashion-mnist")
    assert data.images.shape == (70_000, 28, 28, 3) and data.classes[9] == "Ankle boot"
    assert np.bincount(data.labels).tolist() == [7000] * 10


def test_fashion_mnist_absent_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr("barapi.data.FASHION_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_mnist5k_builtin() -> None:
    data = load_dataset("mnist5k")
    assert data.images.shape == (5000, 28, 28, 3) and data.n_classes == 10


def test_select_classes_makes_a_smaller_task() -> None:
    from barapi.data import select_classes

    data = select_classes(load_dataset("digits"), ["7", "1"])
    assert data.classes == ["7", "1"] and set(data.labels.tolist()) == {0, 1}
    assert len(data.labels) == 179 + 182
    with pytest.raises(ConfigError, match="no class named '11'"):
        select_classes(load_dataset("digits"), ["1", "11"])


# --- issue 29, item 9: arrays without samples, files that are not files, one float rule ----

@pytest.mark.parametrize(("x", "y", "message"), [
    (np.zeros((0, 8, 8)), np.zeros(0), r"X holds no samples \(shape \(0, 8, 8\)\)"),
    (np.zeros((4, 0, 8)), np.arange(4) % 2, r"X's samples are empty \(0×8 px\)"),
    (np.array(5.0), np.arange(4) % 2, "X is a single value"),
    (np.zeros((4, 5, 5)), np.array(1), "y is a single value"),
])
def test_arrays_without_samples_are_named_not_a_traceback(tmp_path: Path, x: np.ndarray,
                                                          y: np.ndarray, message: str) -> None:
    """An empty .npz raised numpy's "zero-size array to reduction operation" traceback."""
    np.savez(tmp_path / "empty.npz", X=x, y=y)
    with pytest.raises(ConfigError, match=rf"empty\.npz: {message}"):
        load_dataset(str(tmp_path / "empty.npz"))


@pytest.mark.timeout(20)  # the old code blocked forever on the FIFO, or read /dev/zero forever
@pytest.mark.parametrize("name", ["data.npz", "data.csv", "X.npy", "a/x.png", "list.csv row"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_in_a_dataset_is_refused_never_read(tmp_path: Path, name: str,
                                                              kind: str) -> None:
    import os

    def place(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(kind)

    target = tmp_path / name.removesuffix(" row")
    if name == "X.npy":  # a folder of X.npy (the culprit) and y.npy
        place(tmp_path / "X.npy")
        np.save(tmp_path / "y.npy", np.arange(4) % 2)
        spec, culprit = tmp_path, "X.npy"
    elif name == "a/x.png":  # one image of a class folder
        for cls in "ab":
            for i in range(3):
                write_png(tmp_path / cls / f"{i}.png", 10)
        place(target)
        spec, culprit = tmp_path, "x.png"
    elif name == "list.csv row":  # an image a CSV names
        place(tmp_path / "img.png")
        target.write_text("path,label\nimg.png,a\n")
        spec, culprit = target, r"list\.csv, line 2: image file \S+"  # the path, resolved
    else:
        place(target)
        spec, culprit = target, name
    what = "a FIFO" if kind == "fifo" else "a character device"
    with pytest.raises(ConfigError, match=rf"{culprit}: is {what}"):
        load_dataset(str(spec))


def float_tiffs(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """The samples of `x` as 32-bit float TIFFs in class folders (class `y`)."""
    for i, (sample, label) in enumerate(zip(x, y, strict=True)):
        path = tmp_path / "tiffs" / str(label) / f"{i:03d}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.astype(np.float32), mode="F").save(path)
    return tmp_path / "tiffs"


@pytest.mark.parametrize("low, high", [(-3.0, 40.0), (0.0, 1.0), (0.2, 0.6)])
def test_the_same_arrays_as_npz_and_as_float_tiffs_give_the_same_images(
        tmp_path: Path, low: float, high: float) -> None:
    """Float TIFFs were stretched by each image's own min/max: a dataset whose classes differ
    in brightness scored 100% as .npz and 0% as TIFF (libvips#618). One rule per dataset."""
    rng = np.random.default_rng(0)
    y = np.arange(8) % 2
    x = rng.uniform(low, low + (high - low) / 2, (8, 6, 6)) + y[:, None, None] * (high - low) / 2
    x = x.astype(np.float32)
    np.savez(tmp_path / "x.npz", X=x, y=y)
    from_npz = load_dataset(str(tmp_path / "x.npz"))
    from_tiff = load_dataset(str(float_tiffs(tmp_path, x, y)))
    assert from_tiff.classes == from_npz.classes == ["0", "1"]
    order = np.argsort(y, kind="stable")  # the folder loader reads class by class
    assert np.array_equal(from_tiff.images, from_npz.images[order])
    bright = from_tiff.images[from_tiff.labels == 1].mean()
    assert bright > from_tiff.images[from_tiff.labels == 0].mean() + 40  # the classes differ


def test_float_samples_in_0_1_are_scaled_by_255_not_stretched(tmp_path: Path) -> None:
    x = np.full((4, 3, 3), 0.5, np.float32)
    x[1::2] = 0.25
    np.savez(tmp_path / "x.npz", X=x, y=np.arange(4) % 2)
    images = load_dataset(str(tmp_path / "x.npz")).images
    assert sorted(set(images.ravel().tolist())) == [64, 128]
