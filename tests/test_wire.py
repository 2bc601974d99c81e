import numpy as np
import pytest

from barapi.wire import check_batch, decode_png, encode_png, to_uint8, to_unit


def test_quantiser_maps_range_ends_and_clips() -> None:
    levels = to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0]))
    assert levels.tolist() == [0, 0, 128, 255, 255]


def test_quantise_roundtrip_is_exact_on_grey_levels() -> None:
    grey = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_uint8(to_unit(grey)), grey)


def test_png_is_lossless() -> None:
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(image)), image)


def test_check_batch_rejects_floats_and_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        check_batch(np.zeros((1, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        check_batch(np.zeros((4, 4, 3), dtype=np.uint8))
