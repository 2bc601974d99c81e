"""Zeroth-order gradient estimates from loss values only (no autograd, no model access).

One-sided (the paper, eq. 3–4):  g = (b/q) Σ_j [f(W + βU_j) − f(W)] / β · U_j,
two-sided (antithetic):          g = (b/q) Σ_j [f(W + βU_j) − f(W − βU_j)] / (2β) · U_j.
Directions U_j are uniform on the unit sphere (b defaults to d, making the estimate unbiased
for the gradient of the β-smoothed loss) or standard Gaussian (b defaults to 1). Gaussian
directions move every coordinate by about β, which is what lets a perturbation survive 8-bit
quantisation; unit-sphere directions move each coordinate by only β/√d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
Directions = Literal["sphere", "gaussian"]


@dataclass(frozen=True)
class ZOEstimator:
    """Random-direction gradient estimator: q directions, smoothing radius β, scale b."""

    q: int = 10
    beta: float = 0.01
    directions: Directions = "sphere"
    two_sided: bool = False
    b: float | None = None

    def __post_init__(self) -> None:
        if self.q < 1:
            raise ValueError(f"q (random directions per step) must be at least 1, got {self.q}")
        if not self.beta > 0:
            raise ValueError(f"beta (smoothing radius) must be positive, got {self.beta}")
        if self.directions not in ("sphere", "gaussian"):
            raise ValueError(f"directions must be 'sphere' or 'gaussian', got {self.directions!r}")

    @property
    def n_evaluations(self) -> int:
        """Loss evaluations (program variants) per estimate: q + 1, or 2q when two-sided."""
        return 2 * self.q if self.two_sided else self.q + 1

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> FloatArray:
        """(q, *shape) directions."""
        u = rng.standard_normal((self.q, *shape)).astype(np.float32)
        if self.directions == "sphere":
            norms = np.sqrt((u.reshape(self.q, -1) ** 2).sum(axis=1))
            u /= norms.reshape((self.q,) + (1,) * len(shape))
        return u

    def points(self, weights: FloatArray, directions: FloatArray) -> FloatArray:
        """(n_evaluations, *W.shape) program parameters to evaluate, the clean W first when
        one-sided; [W + βU_1..q, W − βU_1..q] when two-sided."""
        step = self.beta * directions
        if self.two_sided:
            return np.concatenate([weights + step, weights - step])
        return np.concatenate([weights[None], weights + step])

    def scale(self, dim: int) -> float:
        if self.b is not None:
            return self.b
        return float(dim) if self.directions == "sphere" else 1.0

    def gradient(self, losses: NDArray[np.floating], directions: FloatArray) -> FloatArray:
        """Gradient estimate from the losses at `points(W, directions)`."""
        q = self.q
        losses = np.asarray(losses, dtype=np.float64)
        if self.two_sided:
            diffs = (losses[:q] - losses[q:]) / (2 * self.beta)
        else:
            diffs = (losses[1:] - losses[0]) / self.beta
        dim = directions[0].size
        g = np.tensordot(diffs, directions.astype(np.float64), axes=1) * self.scale(dim) / q
        return g.astype(np.float32)

    def mean_loss(self, losses: NDArray[np.floating]) -> float:
        """Best available estimate of f(W) from one step's evaluations."""
        return float(np.mean(losses) if self.two_sided else losses[0])
