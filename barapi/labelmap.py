"""Many-to-one label mapping from the black box's K source classes to C target classes.

Target class j owns a set S_j of m distinct source classes (no source class is shared);
its score is h_j = mean_{s in S_j} F_s, and scores are renormalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from barapi.errors import ConfigError


@dataclass(frozen=True)
class LabelMap:
    """`assignment[j]` holds the m source-class indices of target class j; shape (C, m)."""

    assignment: NDArray[np.int64]
    n_sources: int

    def __post_init__(self) -> None:
        a = self.assignment
        if a.ndim != 2:
            raise ValueError("label map assignment must be a (classes, m) array")
        if a.min() < 0 or a.max() >= self.n_sources:
            raise ValueError("label map refers to a source class outside the black box's outputs")
        if len(np.unique(a)) != a.size:
            raise ValueError("label map assigns one source class to two target classes")

    @property
    def n_classes(self) -> int:
        return int(self.assignment.shape[0])

    @property
    def m(self) -> int:
        return int(self.assignment.shape[1])

    def scores(self, probs: NDArray[np.floating]) -> NDArray[np.float64]:
        """(N, K) source probabilities → (N, C) target scores h, rows summing to 1."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != self.n_sources:
            raise ValueError(
                f"expected (N, {self.n_sources}) probabilities, got shape {probs.shape}"
            )
        h = probs[:, self.assignment].mean(axis=2)
        total = h.sum(axis=1, keepdims=True)
        return np.divide(h, total, out=np.full_like(h, 1.0 / self.n_classes), where=total > 0)


def check_fits(n_classes: int, m: int, n_sources: int) -> None:
    if m < 1:
        raise ConfigError(f"m (source labels per class) must be at least 1, got {m}")
    if n_classes * m > n_sources:
        raise ConfigError(
            f"m × classes = {m} × {n_classes} = {m * n_classes} exceeds the black box's "
            f"{n_sources} source labels; lower m"
        )


def random_map(n_classes: int, m: int, n_sources: int, seed: int) -> LabelMap:
    """Each target class gets m source classes drawn at random without replacement."""
    check_fits(n_classes, m, n_sources)
    picks = np.random.default_rng(seed).permutation(n_sources)[: n_classes * m]
    return LabelMap(picks.reshape(n_classes, m).astype(np.int64), n_sources)


def frequency_map(probs: NDArray[np.floating], labels: NDArray[np.integer], n_classes: int,
                  m: int) -> LabelMap:
    """The paper's frequency mapping from the black box's answers on unprogrammed samples.

    Counts how often each source class is the top prediction for each target class (summed
    probability breaks ties), then greedily gives the highest remaining (class, source) pair
    until every class has m sources. probs: (N, K); labels: (N,) in 0..C-1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n_sources = probs.shape[1]
    check_fits(n_classes, m, n_sources)
    top = np.zeros((n_classes, n_sources))
    np.add.at(top, (labels, probs.argmax(axis=1)), 1.0)
    mass = np.zeros((n_classes, n_sources))
    np.add.at(mass, labels, probs)
    # normalise per class so that larger classes do not grab every popular source label
    counts = np.maximum(np.bincount(labels, minlength=n_classes), 1)[:, None]
    score = top / counts + 1e-6 * mass / counts
    assignment: list[list[int]] = [[] for _ in range(n_classes)]
    order = np.argsort(-score, axis=None, kind="stable")
    taken = np.zeros(n_sources, dtype=bool)
    for flat in order:
        j, s = divmod(int(flat), n_sources)
        if taken[s] or len(assignment[j]) >= m:
            continue
        assignment[j].append(s)
        taken[s] = True
        if all(len(a) == m for a in assignment):
            break
    return LabelMap(np.array(assignment, dtype=np.int64), n_sources)
