"""Losses on mapped target scores h (N, C), rows summing to 1, with integer labels y (N,).

focal: L = -(1/N) Σ_i ω_{y_i} (1 - h_{i,y_i})^γ log h_{i,y_i}; γ = 0 and ω = 1 give
cross-entropy. Losses are in nats, averaged over samples.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

EPS = 1e-12


def class_weights(labels: NDArray[np.integer], n_classes: int) -> NDArray[np.float64]:
    """ω_j ∝ 1/n_j, scaled so that a balanced training set has ω = 1 for every class."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError("every class needs at least one training sample")
    return len(labels) / (n_classes * counts)


def focal_loss(h: NDArray[np.floating], labels: NDArray[np.integer], gamma: float = 2.0,
               weights: NDArray[np.floating] | None = None) -> float:
    """Mean focal loss of target scores h (N, C) for labels (N,)."""
    return float(batched_focal_loss(np.asarray(h)[None], labels, gamma, weights)[0])


def cross_entropy(h: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    return focal_loss(h, labels, gamma=0.0, weights=None)


def batched_focal_loss(h: NDArray[np.floating], labels: NDArray[np.integer], gamma: float,
                       weights: NDArray[np.floating] | None) -> NDArray[np.float64]:
    """Losses of V program variants at once: h (V, N, C) → (V,)."""
    return np.mean(sample_focal_losses(h, labels, gamma, weights), axis=1)


def sample_focal_losses(h: NDArray[np.floating], labels: NDArray[np.integer], gamma: float,
                        weights: NDArray[np.floating] | None) -> NDArray[np.float64]:
    """Each sample's own loss under each of V program variants: h (V, N, C) → (V, N)."""
    h = np.asarray(h, dtype=np.float64)
    p = np.clip(h[:, np.arange(len(labels)), labels], EPS, 1.0)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights)[labels]
    return np.asarray(-w * (1.0 - p) ** gamma * np.log(p), dtype=np.float64)
