"""A new image prepared as training prepared the dataset's (barapi.prepare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from barapi.data import Dataset, FloatScale, load_dataset, read_image
from barapi.errors import ConfigError
from barapi.prepare import InputFormat


def dataset(images: np.ndarray, scale: FloatScale | None = None) -> Dataset:
    return Dataset(images, np.zeros(len(images), dtype=np.int64), ["a"], "x", scale)


def test_the_format_is_the_samples_size_and_whether_they_are_grey() -> None:
    grey = np.repeat(np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7, 1), 3, axis=3)
    assert InputFormat.of(dataset(grey)) == InputFormat(5, 7, True)
    colour = grey.copy()
    colour[1, 0, 0, 2] += 1
    assert InputFormat.of(dataset(colour)) == InputFormat(5, 7, False)


def test_a_colour_image_of_another_size_becomes_a_grey_sample_of_the_datasets_size() -> None:
    form = InputFormat(8, 8, True)
    small = np.repeat((np.arange(64, dtype=np.uint8) * 4).reshape(8, 8, 1), 3, axis=2)
    large = np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.NEAREST)
                       .convert("RGB"))
    assert np.array_equal(form.prepare(large), small)  # a box filter undoes the enlargement
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    out = form.prepare(red)
    assert out.shape == (8, 8, 3) and (out[..., 0] == out[..., 1]).all() and out[0, 0, 0] == 76
    assert InputFormat(32, 32, False).prepare(red).shape == (32, 32, 3)  # enlarged, colour kept


def test_a_float_image_is_scaled_by_the_datasets_rule_not_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for name, peak in (("a", 2.0), ("b", 4.0)):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), peak, dtype=np.float32), mode="F").save(folder / name / "x.tif")
    data = load_dataset(str(folder))
    assert data.float_scale == FloatScale(2.0, 4.0)
    form = InputFormat.of(data)
    new = tmp_path / "new.tif"
    Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32), mode="F").save(new)
    assert read_image(new, "new", form.scale)[0, 0, 0] == 128  # halfway in the dataset's range
    assert read_image(new, "new")[0, 0, 0] != 128  # its own range: another value
    back = InputFormat.from_json(form.to_json(), "config.json")
    assert back == form


@pytest.mark.parametrize("record,field", [
    ({"height": "8", "width": 8, "grey": True}, "input.height"),
    ({"height": 8, "width": 0, "grey": True}, "input.width"),
    ({"height": True, "width": 8, "grey": True}, "input.height"),
    ({"height": 8, "width": 8, "grey": 1}, "input.grey"),
    ({"height": 8, "width": 8, "grey": True, "float_scale": [1.0]}, "input.float_scale"),
    ({"height": 8, "width": 8, "grey": True, "float_scale": [2.0, 1.0]}, "input.float_scale"),
    ({"height": 8, "width": 8, "grey": True, "float_scale": [0, float("nan")]}, "input.float_scale"),
    ([8, 8], "input"),
])
def test_a_damaged_record_is_one_line_naming_the_field(record: object, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^run/config\.json: {field}: expected"):
        InputFormat.from_json(record, "run/config.json")
