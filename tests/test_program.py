import numpy as np
import pytest

from barapi.program import Canvas, Program, bilinear_matrix


def test_window_of_every_queried_image_is_the_sample_exactly() -> None:
    rng = np.random.default_rng(0)
    canvas = Canvas(size=40, window=12, top=5, left=21)
    program = Program(canvas, resolution=40)  # full resolution: large |W| everywhere
    samples = rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    variants = rng.standard_normal((3, *program.shape)).astype(np.float32) * 5
    images = program.compose(samples, program.perturbation(variants))
    assert images.shape == (18, 40, 40, 3)
    window = images[:, 5:17, 21:33]
    assert np.array_equal(window, np.tile(samples, (3, 1, 1, 1)))
    # ... and the program really covers the rest: the background differs between variants
    assert not np.array_equal(images[0, :5], images[6, :5])


def test_mask_is_zero_on_window_only() -> None:
    canvas = Canvas(size=10, window=4)
    assert canvas.mask.sum() == 100 - 16
    assert (canvas.mask[3:7, 3:7] == 0).all()


def test_low_dimensional_program_upsamples_smoothly() -> None:
    program = Program(Canvas(size=32, window=8), resolution=4)
    assert program.dim == 48
    weights = np.zeros(program.shape, dtype=np.float32)
    weights[0, 0, 0] = 1.0
    p = program.perturbation(weights)
    assert p.shape == (32, 32, 3)
    assert p[0, 0, 0] == pytest.approx(np.tanh(1.0))
    assert p[..., 1:].max() == 0.0  # other channels untouched
    assert 0 < p[6, 6, 0] < p[0, 0, 0]


def test_bilinear_matrix_preserves_constants_and_matches_identity() -> None:
    a = bilinear_matrix(30, 7)
    assert np.allclose(a.sum(axis=1), 1.0)
    assert np.array_equal(bilinear_matrix(5, 5), np.eye(5))


def test_embedding_resizes_into_window() -> None:
    canvas = Canvas(size=32, window=16)
    out = canvas.embed(np.zeros((3, 8, 8, 3), dtype=np.uint8))
    assert out.shape == (3, 16, 16, 3)


@pytest.mark.parametrize(("size", "window", "top"), [(10, 12, None), (10, 4, 8), (0, 1, None)])
def test_bad_geometry_is_refused(size: int, window: int, top: int | None) -> None:
    with pytest.raises(ValueError):
        Canvas(size, window, top)


def test_compose_takes_one_perturbation_per_sample() -> None:
    canvas = Canvas(16, 8)
    program = Program(canvas, 4)
    windows = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 200)])
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((3, 2, 3, 4, 4)).astype(np.float32)  # 3 variants × 2 samples
    images = program.compose(windows, program.perturbation(weights))
    assert images.shape == (6, 16, 16, 3)
    for v in range(3):
        for i in range(2):  # each (variant, sample) is that sample under its own program
            alone = program.images(windows[i:i + 1], weights[v, i])[0]
            assert np.array_equal(images[v * 2 + i], alone)
    with pytest.raises(ValueError, match="3 perturbations per variant for 2 samples"):
        program.compose(windows, program.perturbation(np.zeros((1, 3, 3, 4, 4), np.float32)))
