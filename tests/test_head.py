import numpy as np
import pytest
import torch

from barapi.head import AnswerWindow, LinearHead, head_arrays, head_from_arrays
from barapi.labelmap import LabelMap
from barapi.losses import class_weights
from barapi.whitebox import target_scores


def answers(n: int = 60, k: int = 7, c: int = 3, seed: int = 0):
    """Probabilities whose log-odds carry the label linearly, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.standard_normal((n, k)) + 3 * np.eye(c, k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_gradient_matches_finite_differences(gamma: float) -> None:
    probs, labels = answers()
    weights = class_weights(labels, 3)
    head = LinearHead.fit(probs, labels, 3, gamma, weights, l2=0.1)
    rng = np.random.default_rng(1)
    head = head.with_parameters(head.parameters + rng.standard_normal(head.parameters.size))
    _, grad = head.loss_and_gradient(probs, labels, gamma, weights)
    for i in rng.choice(head.parameters.size, 8, replace=False):
        e = np.zeros_like(head.parameters)
        e[i] = 1e-6
        up = head.with_parameters(head.parameters + e).loss_and_gradient(probs, labels, gamma,
                                                                          weights)[0]
        down = head.with_parameters(head.parameters - e).loss_and_gradient(probs, labels, gamma,
                                                                            weights)[0]
        assert grad[i] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-7)


def test_fit_is_a_stationary_point_that_separates_the_classes() -> None:
    probs, labels = answers()
    head = LinearHead.fit(probs, labels, 3, 0.0, None, l2=0.01)
    _, grad = head.loss_and_gradient(probs, labels, 0.0, None)
    assert np.abs(grad).max() < 1e-4
    scores = head.scores(probs)
    assert scores.sum(axis=1) == pytest.approx(np.ones(len(labels)))
    assert (scores.argmax(axis=1) == labels).mean() > 0.9


def test_scores_ignore_the_models_per_row_logit_shift_and_survive_zeros() -> None:
    """Row-centred log-probabilities are logits up to a constant; an API's rounded 0 is clipped."""
    probs, labels = answers()
    head = LinearHead.fit(probs, labels, 3, 0.0, None, l2=0.01)
    sharpened = probs.copy()
    sharpened[:, -1] = 0.0
    assert np.isfinite(head.scores(sharpened)).all()
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        head.scores(probs[:, :5])


def test_torch_scores_equal_numpy_scores_for_both_heads() -> None:
    probs, labels = answers()
    linear = LinearHead.fit(probs, labels, 3, 0.0, None, l2=0.01)
    label_map = LabelMap(np.array([[0, 4], [1, 5], [2, 6]]), 7)
    for head in (linear, label_map):
        ours = target_scores(head, torch.from_numpy(probs.astype(np.float32))).numpy()
        assert ours == pytest.approx(head.scores(probs.astype(np.float32)), abs=1e-6)


def test_heads_round_trip_through_arrays() -> None:
    probs, labels = answers()
    linear = LinearHead.fit(probs, labels, 3, 0.0, None, l2=0.01)
    back = head_from_arrays(head_arrays(linear, "x."), "x.", 7)
    assert isinstance(back, LinearHead) and back.l2 == linear.l2
    assert np.array_equal(back.scores(probs), linear.scores(probs))
    label_map = LabelMap(np.array([[0, 4], [1, 5], [2, 6]]), 7)
    back_map = head_from_arrays(head_arrays(label_map, "y."), "y.", 7)
    assert isinstance(back_map, LabelMap)
    assert np.array_equal(back_map.assignment, label_map.assignment)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_cross_entropy_probe_reaches_the_optimum_of_barapis_own_objective(
        n_classes: int, weighted: bool) -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(n_classes)
    probs = rng.dirichlet(np.ones(12), size=90).astype(np.float32)
    labels = rng.integers(0, n_classes, 90)
    weights = rng.uniform(0.5, 2.0, n_classes) if weighted else None
    fast = LinearHead.fit(probs, labels, n_classes, 0.0, weights, 0.05)  # scikit-learn
    start = fast.with_parameters(np.zeros_like(fast.parameters))
    exact = minimize(lambda f: start.with_parameters(f).loss_and_gradient(probs, labels, 0.0, weights),
                     start.parameters, jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    ours = fast.loss_and_gradient(probs, labels, 0.0, weights)[0]
    assert ours == pytest.approx(exact.fun, rel=1e-5)
    assert np.allclose(fast.scores(probs), start.with_parameters(exact.x).scores(probs), atol=1e-3)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_a_probe_that_does_not_converge_says_so(gamma: float,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import barapi.head

    monkeypatch.setattr(barapi.head, "FIT_ITERATIONS", 1)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(12), size=60).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="without converging"):
        LinearHead.fit(probs, rng.integers(0, 3, 60), 3, gamma, None, 0.01)


def test_answer_window_holds_the_last_steps_and_survives_a_checkpoint() -> None:
    window = AnswerWindow(steps=2)
    steps = [answers(n=30, seed=s) for s in range(3)]
    for probs, labels in steps:
        window.add(probs, labels[:10])  # 3 variants of 10 samples, variant-major
    assert len(window) == 2
    restored = AnswerWindow(steps=2)
    restored.load(window.arrays())
    start = LinearHead.fit(*answers(), 3, 0.0, None, l2=0.01)
    refitted = window.refit(start, 0.0, None)
    kept = np.concatenate([p for p, _ in steps[1:]])
    tiled = np.concatenate([np.tile(y[:10], 3) for _, y in steps[1:]])
    expected = LinearHead.fit(kept, tiled, 3, 0.0, None, l2=0.01)
    assert np.allclose(refitted.parameters, expected.parameters)
    assert np.allclose(restored.refit(start, 0.0, None).parameters, expected.parameters)
    assert np.allclose(refitted.mean, expected.mean)  # standardised on the window's answers


def test_answer_window_keeps_the_head_while_it_lacks_a_class() -> None:
    probs, labels = answers()
    head = LinearHead.fit(probs, labels, 3, 0.0, None, l2=0.01)
    window = AnswerWindow(steps=1)
    window.add(probs[labels < 2], labels[labels < 2])
    assert window.refit(head, 0.0, None) is head
