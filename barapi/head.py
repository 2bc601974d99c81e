"""Output heads: how the black box's K probabilities become C target-class scores.

Two kinds, one contract (`scores`: (N, K) probabilities → (N, C) scores, rows summing to 1):

- `LabelMap` (labelmap.py): the paper's fixed many-to-one mapping, nothing to learn.
- `LinearHead`: h = softmax(A φ(p) + b), a multinomial logistic regression on the black box's
  log-probabilities, trained on our side with exact gradients from answers already paid for.
  φ(p) = (log p − mean_k log p − μ) / σ: the row-centred log-probabilities equal the model's
  logits up to a per-row constant (they are what the API's softmax leaves recoverable), and
  μ, σ (fixed at fit time) standardise them so that one L2 strength suits any black box.
"""

from __future__ import annotations

import itertools
import warnings
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from barapi.labelmap import LabelMap
from barapi.losses import EPS, batched_focal_loss

FIT_ITERATIONS = 500
"""Most L-BFGS iterations of the linear probe's fit."""
REFIT_MAX_SOURCES = 20
"""Most black-box outputs K for which `RunConfig.head_refit` refits the head after every
step: few-output APIs (moderation 5, NSFW 2, a few tags), where the probe's head is the one
that drifts. With K = 1,000 one refit takes ~1.2 s on 2 cores (as long as a 220-image step
on EfficientNet-Lite0), so such boxes keep Adam steps. Our choice."""
PROB_FLOOR = 1e-7
"""Probabilities are clipped here before the log: APIs round small ones to 0."""

F64 = NDArray[np.float64]


def centred_log_probs(probs: NDArray[np.floating]) -> F64:
    """(N, K) probabilities → (N, K) log-probabilities minus their row mean."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, 1.0))
    return logp - logp.mean(axis=1, keepdims=True)


def focal_logit_gradient(h: F64, labels: NDArray[np.integer], gamma: float,
                         class_weights: F64 | None) -> F64:
    """∂L/∂z (N, C) of the mean focal loss of h = softmax(z) (losses.py's definition)."""
    n = len(labels)
    rows = np.arange(n)
    p = np.clip(h[rows, labels], EPS, 1.0 - 1e-12)
    w = np.ones(n) if class_weights is None else np.asarray(class_weights)[labels]
    dl_dp = -w * ((1 - p) ** gamma / p - gamma * (1 - p) ** (gamma - 1) * np.log(p)) if gamma \
        else -w / p
    onehot = np.zeros_like(h)
    onehot[rows, labels] = 1.0
    return (dl_dp * p)[:, None] * (onehot - h) / n


@dataclass(frozen=True)
class LinearHead:
    """weights A (C, K), bias b (C,), feature mean μ and scale σ (K,); l2 is the strength λ
    of the penalty (λ/2)·‖A‖² added to the training loss."""

    weights: F64
    bias: F64
    mean: F64
    scale: F64
    l2: float

    @property
    def n_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.weights.shape[1])

    def features(self, probs: NDArray[np.floating]) -> F64:
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != self.n_sources:
            raise ValueError(f"expected (N, {self.n_sources}) probabilities, got shape {probs.shape}")
        return (centred_log_probs(probs) - self.mean) / self.scale

    def scores(self, probs: NDArray[np.floating]) -> F64:
        """(N, K) source probabilities → (N, C) target scores, rows summing to 1."""
        return softmax(self.features(probs) @ self.weights.T + self.bias)

    def loss_and_gradient(self, probs: NDArray[np.floating], labels: NDArray[np.integer],
                          gamma: float, class_weights: F64 | None) -> tuple[float, F64]:
        """Penalised loss and its exact gradient with respect to `parameters` (flat)."""
        return self._loss_and_gradient(self.features(probs), labels, gamma, class_weights)

    def _loss_and_gradient(self, phi: F64, labels: NDArray[np.integer], gamma: float,
                           class_weights: F64 | None) -> tuple[float, F64]:
        h = softmax(phi @ self.weights.T + self.bias)
        loss = float(batched_focal_loss(h[None], labels, gamma, class_weights)[0])
        dz = focal_logit_gradient(h, labels, gamma, class_weights)
        grad_a = dz.T @ phi + self.l2 * self.weights
        loss += 0.5 * self.l2 * float(np.sum(self.weights ** 2))
        return loss, np.concatenate([grad_a.ravel(), dz.sum(axis=0)])

    @property
    def parameters(self) -> F64:
        """A and b flattened into one vector (what optimisers move)."""
        return np.concatenate([self.weights.ravel(), self.bias])

    def with_parameters(self, flat: NDArray[np.floating]) -> LinearHead:
        c, k = self.weights.shape
        flat64: F64 = np.array(flat, dtype=np.float64)
        return replace(self, weights=flat64[:c * k].reshape(c, k), bias=flat64[c * k:])

    @classmethod
    def fit(cls, probs: NDArray[np.floating], labels: NDArray[np.integer], n_classes: int,
            gamma: float, class_weights: F64 | None, l2: float) -> LinearHead:
        """Fit A, b to (N, K) answers (the linear probe); μ, σ from these answers.

        Cross-entropy (γ = 0) is fitted by scikit-learn's `LogisticRegression` (lbfgs) with
        the same penalty — 3.3× faster than L-BFGS on barapi's own objective on a 10-class
        task (`python -m benchmarks.probe_fit`); the focal loss by L-BFGS on barapi's
        objective, its features computed once. A fit that stops at `FIT_ITERATIONS` without
        converging says so (RuntimeWarning); the head is usable all the same, and training
        moves it further."""
        raw = centred_log_probs(probs)
        mean, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        k = raw.shape[1]
        start = cls(np.zeros((n_classes, k)), np.zeros(n_classes), mean, scale, l2)
        labels = np.asarray(labels)
        phi = (raw - mean) / scale
        if gamma == 0 and l2 > 0 and len(np.unique(labels)) == n_classes:
            return start._fit_cross_entropy(phi, labels, class_weights)

        def objective(flat: F64) -> tuple[float, F64]:
            return start.with_parameters(flat)._loss_and_gradient(phi, labels, gamma,
                                                                  class_weights)

        result = minimize(objective, start.parameters, jac=True, method="L-BFGS-B",
                          options={"maxiter": FIT_ITERATIONS})
        if not result.success:
            _not_converged(int(result.nit), str(result.message))
        return start.with_parameters(result.x)

    def _fit_cross_entropy(self, phi: F64, labels: NDArray[np.integer],
                           class_weights: F64 | None) -> LinearHead:
        """The cross-entropy probe by scikit-learn. barapi's objective is mean_i w_i·CE_i +
        (λ/2)·‖A‖² over a softmax of C logits; scikit-learn's is C'·Σ_i w_i·CE_i + ½‖W‖²,
        so C' = 1/(Nλ) for C > 2 classes, and for 2 classes — one logit w = a₁ − a₀, whose
        optimum has a₀ = −a₁, so that our penalty is (λ/4)‖w‖² — C' = 2/(Nλ)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        n, c = len(labels), self.n_classes
        strength = (2.0 if c == 2 else 1.0) / (n * self.l2)
        weights = None if class_weights is None else np.asarray(class_weights)[labels]
        model = LogisticRegression(C=strength, max_iter=FIT_ITERATIONS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(phi, labels, sample_weight=weights)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            _not_converged(int(np.max(model.n_iter_)), "scikit-learn lbfgs")
        if c == 2:  # one logit → two, symmetric
            w, b = model.coef_[0], float(model.intercept_[0])
            return replace(self, weights=np.stack([-w / 2, w / 2]), bias=np.array([-b / 2, b / 2]))
        return replace(self, weights=np.array(model.coef_, dtype=np.float64),
                       bias=np.array(model.intercept_, dtype=np.float64))

    def arrays(self) -> dict[str, NDArray[Any]]:
        return {"linear_weights": self.weights, "linear_bias": self.bias,
                "linear_mean": self.mean, "linear_scale": self.scale,
                "linear_l2": np.array(self.l2)}


OutputHead = LabelMap | LinearHead


def _not_converged(iterations: int, how: str) -> None:
    warnings.warn(f"linear probe: the fit stopped after {iterations} iterations without "
                  f"converging ({how}); the head is still trained with the program",
                  RuntimeWarning, stacklevel=3)


def softmax(z: F64) -> F64:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def head_arrays(head: OutputHead, prefix: str) -> dict[str, NDArray[Any]]:
    """A head as named arrays (for checkpoints), keys prefixed."""
    arrays = head.arrays() if isinstance(head, LinearHead) else {"label_map": head.assignment}
    return {prefix + key: value for key, value in arrays.items()}


def head_from_arrays(arrays: dict[str, NDArray[Any]], prefix: str, n_sources: int) -> OutputHead:
    """Inverse of `head_arrays`."""
    if prefix + "label_map" in arrays:
        return LabelMap(arrays[prefix + "label_map"], n_sources)
    weights, bias, mean, scale = (np.asarray(arrays[prefix + "linear_" + name], dtype=np.float64)
                                  for name in ("weights", "bias", "mean", "scale"))
    return LinearHead(weights, bias, mean, scale, float(arrays[prefix + "linear_l2"]))


class AnswerWindow:
    """The answers of the last `steps` training steps with their labels: what the linear
    head is refitted to after each step (`RunConfig.head_refit`).

    A ZO step moves the program along a noisy estimate, so after a few dozen steps the
    answers no longer look like the unprogrammed ones the probe was fitted to (μ, σ and A
    included), and Adam steps on the head lag behind: on a 5-concept box validation fell
    from the probe's 69% to 51% in the first epoch, while a head refitted to the same
    program's answers scored 68–70% (issue 16, docs/results.md). Refitting costs no query.
    """

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"an answer window holds at least 1 step, got {steps}")
        self.steps = steps
        self._parts: deque[tuple[NDArray[np.float32], NDArray[np.int64]]] = deque(maxlen=steps)

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, probs: NDArray[np.floating], labels: NDArray[np.integer]) -> None:
        """One step's (V·B, K) answers, variant-major, and its (B,) labels."""
        tiled = np.tile(np.asarray(labels, dtype=np.int64), len(probs) // len(labels))
        self._parts.append((np.asarray(probs, dtype=np.float32), tiled))

    def refit(self, head: LinearHead, gamma: float, class_weights: F64 | None) -> LinearHead:
        """`head` fitted afresh (`LinearHead.fit`) to the window's answers; `head` itself
        while the window lacks a class (a fit without it would learn never to predict it)."""
        probs = np.concatenate([p for p, _ in self._parts])
        labels = np.concatenate([y for _, y in self._parts])
        if len(np.unique(labels)) < head.n_classes:
            return head
        return LinearHead.fit(probs, labels, head.n_classes, gamma, class_weights, head.l2)

    def arrays(self) -> dict[str, NDArray[Any]]:
        """The window as arrays (for checkpoints): answers, labels, rows per step."""
        if not self._parts:
            return {}
        return {"answers.probs": np.concatenate([p for p, _ in self._parts]),
                "answers.labels": np.concatenate([y for _, y in self._parts]),
                "answers.rows": np.array([len(y) for _, y in self._parts])}

    def load(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Inverse of `arrays` (an absent window: empty)."""
        self._parts.clear()
        if "answers.rows" not in arrays:
            return
        bounds = np.cumsum([0, *arrays["answers.rows"].tolist()])
        self._parts.extend((arrays["answers.probs"][a:b], arrays["answers.labels"][a:b])
                           for a, b in itertools.pairwise(bounds))
