import numpy as np
import pytest
from sklearn.metrics import log_loss

from barapi.losses import batched_focal_loss, class_weights, cross_entropy, focal_loss


def scores(n: int = 50, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(c), size=n)
    return h, rng.integers(0, c, n)


def test_focal_with_gamma_zero_and_unit_weights_is_cross_entropy() -> None:
    h, y = scores()
    assert focal_loss(h, y, gamma=0.0, weights=np.ones(4)) == pytest.approx(
        log_loss(y, h, labels=range(4)), rel=1e-12)
    assert cross_entropy(h, y) == pytest.approx(log_loss(y, h, labels=range(4)), rel=1e-12)


def test_focal_down_weights_easy_examples() -> None:
    h, y = scores()
    assert focal_loss(h, y, gamma=2.0) < cross_entropy(h, y)
    easy = np.eye(4)[y] * 0.97 + 0.0075
    assert focal_loss(easy, y, gamma=2.0) < 1e-3 * cross_entropy(easy, y)


def test_class_weights_are_inverse_frequency_and_one_when_balanced() -> None:
    assert class_weights(np.array([0, 1, 0, 1]), 2) == pytest.approx([1, 1])
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[1] / w[0] == pytest.approx(3)


def test_batched_matches_single() -> None:
    h, y = scores()
    stacked = np.stack([h, scores(seed=1)[0]])
    out = batched_focal_loss(stacked, y, 2.0, None)
    assert out[0] == pytest.approx(focal_loss(h, y, 2.0))
