import numpy as np
import pytest

from barapi.zo import ZOEstimator

D = 12


def quadratic(seed: int = 0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((D, D))
    a = m @ m.T / D + np.eye(D)
    b = rng.standard_normal(D)
    w = rng.standard_normal(D).astype(np.float32)

    def f(points: np.ndarray) -> np.ndarray:
        p = points.reshape(len(points), -1).astype(np.float64)
        return 0.5 * np.einsum("ni,ij,nj->n", p, a, p) + p @ b

    return f, w, a @ w + b


@pytest.mark.parametrize("estimator", [
    ZOEstimator(q=1, beta=0.05, directions="sphere"),
    ZOEstimator(q=1, beta=0.05, directions="gaussian"),
    ZOEstimator(q=1, beta=0.05, directions="gaussian", two_sided=True),
])
def test_estimator_is_unbiased_for_a_quadratic(estimator: ZOEstimator) -> None:
    # β-smoothing adds only a constant to a quadratic, so the smoothed gradient is A w + b
    f, w, true = quadratic()
    rng = np.random.default_rng(1)
    draws = 20_000
    total = np.zeros(D)
    for _ in range(draws):
        u = estimator.sample(rng, (D,))
        total += estimator.gradient(f(estimator.points(w, u)), u)
    mean = total / draws
    # relative error of the Monte-Carlo mean; a biased estimator (e.g. a wrong b) fails
    assert np.linalg.norm(mean - true) / np.linalg.norm(true) < 0.08


def test_sphere_directions_have_unit_norm_and_b_defaults_to_d() -> None:
    est = ZOEstimator(q=5, directions="sphere")
    u = est.sample(np.random.default_rng(0), (3, 4, 4))
    assert np.allclose(np.sqrt((u.reshape(5, -1) ** 2).sum(1)), 1.0)
    assert est.scale(48) == 48 and ZOEstimator(directions="gaussian").scale(48) == 1.0
    assert est.n_evaluations == 6 and ZOEstimator(q=5, two_sided=True).n_evaluations == 10


def test_cosine_with_true_gradient_grows_with_q() -> None:
    dim = 200
    rng = np.random.default_rng(0)
    target = rng.standard_normal(dim)

    def f(points: np.ndarray) -> np.ndarray:
        return points.reshape(len(points), -1) @ target

    cosines = []
    for q in (1, 10, 100):
        est = ZOEstimator(q=q, beta=0.01)
        values = []
        for _ in range(30):
            u = est.sample(rng, (dim,))
            g = est.gradient(f(est.points(np.zeros(dim, np.float32), u)), u)
            values.append(g @ target / np.linalg.norm(g) / np.linalg.norm(target))
        cosines.append(float(np.mean(values)))
    assert cosines[0] < cosines[1] < cosines[2]
    assert cosines[1] == pytest.approx(np.sqrt(10 / dim), rel=0.35)  # ≈ √(q/d)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="q"):
        ZOEstimator(q=0)
    with pytest.raises(ValueError, match="beta"):
        ZOEstimator(beta=0)


def test_unchanged_share_counts_differences_that_see_nothing() -> None:
    from barapi.zo import unchanged_share

    base = np.array([[0.1, 0.9], [0.3, 0.7]], dtype=np.float32)  # 2 samples
    moved = base.copy()
    moved[0] = [0.2, 0.8]  # sample 0 changed under this direction, sample 1 not
    one_sided = np.concatenate([base, moved, base])  # (q + 1) · n rows, variant-major
    assert unchanged_share(one_sided, 3) == pytest.approx(3 / 4)
    two_sided = np.concatenate([moved, base, base, base])  # [+u1, +u2, −u1, −u2]
    assert unchanged_share(two_sided, 4, two_sided=True) == pytest.approx(3 / 4)


def per_sample_linear(seed: int, n: int, agree: bool):
    """Per-sample linear losses f_i(w) = a_i · w: gradients that agree (a common part plus
    a little noise) or nearly cancel (pairs ±b_k around a small common part)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(D)
    pairs = rng.standard_normal((n // 2, D))
    a = (common + 0.1 * rng.standard_normal((n, D)) if agree
         else 0.1 * common + np.concatenate([pairs, -pairs]))

    def f(points: np.ndarray) -> np.ndarray:  # (V, n, D) → (V, n)
        return np.einsum("vnd,nd->vn", points.astype(np.float64), a)

    return f, a


def test_per_sample_directions_have_their_own_shape_and_points() -> None:
    est = ZOEstimator(q=3, beta=0.1, directions="gaussian", per_sample=True)
    w = np.ones((3, 4, 4), np.float32)
    u = est.sample(np.random.default_rng(0), w.shape, 5)
    assert u.shape == (3, 5, 3, 4, 4) and not np.allclose(u[:, 0], u[:, 1])
    points = est.points(w, u)
    assert points.shape == (4, 5, 3, 4, 4)
    assert np.array_equal(points[0], np.broadcast_to(w, (5, 3, 4, 4)))
    assert np.allclose(points[1:], w + 0.1 * u)
    sphere = ZOEstimator(q=3, directions="sphere", per_sample=True).sample(
        np.random.default_rng(0), w.shape, 5)
    assert np.allclose(np.sqrt((sphere ** 2).sum(axis=(2, 3, 4))), 1.0)
    shared = ZOEstimator(q=3).sample(np.random.default_rng(0), w.shape, 5)
    assert shared.shape == (3, 3, 4, 4)  # n_samples is ignored: shared runs draw as before


@pytest.mark.parametrize("two_sided", [False, True])
def test_per_sample_estimate_is_unbiased_for_the_minibatch_gradient(two_sided: bool) -> None:
    f, a = per_sample_linear(0, 4, agree=True)
    est = ZOEstimator(q=2, beta=0.05, directions="gaussian", two_sided=two_sided,
                      per_sample=True)
    rng = np.random.default_rng(1)
    w = rng.standard_normal(D).astype(np.float32)
    draws = 20_000
    total = sum(est.gradient(f(est.points(w, u := est.sample(rng, (D,), 4))), u)
                for _ in range(draws))
    true = a.mean(axis=0)
    assert np.linalg.norm(total / draws - true) / np.linalg.norm(true) < 0.08


@pytest.mark.parametrize("agree", [True, False])
def test_per_sample_directions_win_exactly_where_the_samples_gradients_agree(agree: bool) -> None:
    # zo.py's error formula: per-sample beats shared iff mean_i ‖a_i‖² < B ‖mean_i a_i‖²
    n, q = 10, 4
    f, a = per_sample_linear(2, n, agree)
    true = a.mean(axis=0)
    ratio = float(np.mean(np.sum(a * a, axis=1)) / (n * true @ true))
    rng = np.random.default_rng(3)
    errors = {}
    for per_sample in (False, True):
        est = ZOEstimator(q=q, beta=0.05, directions="gaussian", per_sample=per_sample)
        squared = []
        for _ in range(3000):
            u = est.sample(rng, (D,), n)
            losses = f(est.points(np.zeros(D, np.float32), u) if per_sample else
                       np.broadcast_to(est.points(np.zeros(D, np.float32), u)[:, None],
                                       (q + 1, n, D)))
            g = est.gradient(losses if per_sample else losses.mean(axis=1), u)
            squared.append(float(np.sum((g - true) ** 2)))
        errors[per_sample] = float(np.mean(squared))
    assert errors[True] / errors[False] == pytest.approx(ratio, rel=0.15)
    assert (errors[True] < errors[False]) == agree
