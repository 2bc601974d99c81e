"""Zeroth-order gradient estimates from loss values only (no autograd, no model access).

One-sided (the paper, eq. 3–4):  g = (b/q) Σ_j [f(W + βU_j) − f(W)] / β · U_j,
two-sided (antithetic):          g = (b/q) Σ_j [f(W + βU_j) − f(W − βU_j)] / (2β) · U_j.
Directions U_j are uniform on the unit sphere (b defaults to d, making the estimate unbiased
for the gradient of the β-smoothed loss) or standard Gaussian (b defaults to 1). Gaussian
directions move every coordinate by about β, which is what lets a perturbation survive 8-bit
quantisation; unit-sphere directions move each coordinate by only β/√d.

Per-sample directions (`per_sample`): each sample i of the minibatch gets its own U_ij and
f_i is its own loss, g = (b/(qB)) Σ_ij [f_i(W + βU_ij) − f_i(W)] / β · U_ij: the same q + 1
queries per sample, the estimate averaged over qB directions instead of q. Its error is
(d + 1)/(qB²) Σ_i ‖∇f_i‖² against (d + 1)/q ‖∇f‖² for shared directions (Gaussian, one-sided,
answer noise alike for both), so it is the smaller where the samples' gradients agree
(mean_i ‖∇f_i‖² < B ‖∇f‖²; benchmarks/direction_sharing.py measures that ratio).
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
    """Random-direction gradient estimator: q directions (per sample when `per_sample`),
    smoothing radius β, scale b."""

    q: int = 10
    beta: float = 0.01
    directions: Directions = "sphere"
    two_sided: bool = False
    b: float | None = None
    per_sample: bool = False

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

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...],
               n_samples: int = 1) -> FloatArray:
        """(q, *shape) directions; (q, n_samples, *shape) when `per_sample`."""
        lead = (self.q, n_samples) if self.per_sample else (self.q,)
        u = rng.standard_normal((*lead, *shape)).astype(np.float32)
        if self.directions == "sphere":
            axes = tuple(range(len(lead), u.ndim))
            u /= np.sqrt((u ** 2).sum(axis=axes, keepdims=True))
        return u

    def points(self, weights: FloatArray, directions: FloatArray) -> FloatArray:
        """(n_evaluations, *directions.shape[1:]) program parameters to evaluate, the clean
        W first when one-sided; [W + βU_1..q, W − βU_1..q] when two-sided."""
        step = self.beta * directions
        if self.two_sided:
            return np.concatenate([weights + step, weights - step])
        clean = np.broadcast_to(weights, directions.shape[1:])[None]
        return np.concatenate([clean, weights + step])

    def scale(self, dim: int) -> float:
        if self.b is not None:
            return self.b
        return float(dim) if self.directions == "sphere" else 1.0

    def gradient(self, losses: NDArray[np.floating], directions: FloatArray) -> FloatArray:
        """Gradient estimate from the losses at `points(W, directions)`: (n_evaluations,)
        minibatch losses, or (n_evaluations, B) per-sample ones when `per_sample`."""
        q = self.q
        losses = np.asarray(losses, dtype=np.float64)
        if self.two_sided:
            diffs = (losses[:q] - losses[q:]) / (2 * self.beta)
        else:
            diffs = (losses[1:] - losses[0]) / self.beta
        dim = directions.size // diffs.size
        g = (np.tensordot(diffs, directions.astype(np.float64), axes=diffs.ndim)
             * self.scale(dim) / diffs.size)
        return g.astype(np.float32)

    def mean_loss(self, losses: NDArray[np.floating]) -> float:
        """Best available estimate of f(W) from one step's evaluations."""
        return float(np.mean(losses) if self.two_sided else np.mean(losses[0]))


def unchanged_share(probs: NDArray[np.floating], n_variants: int, two_sided: bool = False) -> float:
    """Share of one step's finite differences that see no change at all: (n_variants · n, K)
    answers, variant-major as `points` orders them; one-sided (and prior-guided): a perturbed
    answer equal to the unperturbed one of its sample, in every column; two-sided: the +βu
    and −βu answers equal. High when the API rounds or cuts its answers (an `AnswerForm`), or
    when β is too small to survive the 8-bit wire: the estimate then sees little."""
    rows = np.asarray(probs).reshape(n_variants, -1, np.asarray(probs).shape[-1])
    if two_sided:
        half = n_variants // 2
        same = (rows[:half] == rows[half:]).all(axis=2)
    else:
        same = (rows[1:] == rows[:1]).all(axis=2)
    return float(same.mean()) if same.size else 0.0


LAMBDA_CAP = 0.8
"""Largest prior weight λ used (our choice): above it the random part of each direction is
too small to keep measuring the gradient's other components, from which α is estimated."""


def prgf_lambda(alpha2: float, dim: int, q: int) -> float:
    """P-RGF's optimal prior weight λ* for q random directions in `dim` dimensions, given
    α² = cos²(prior, gradient) (Cheng et al., "Improving Black-box Adversarial Attacks with a
    Transfer-based Prior", NeurIPS 2019, Theorem 1 and its closed form for λ*, as in their
    code): 0 while α² < 1 / (dim + 2q − 2), so a useless prior leaves plain random
    directions; 1 (the prior alone) from α² ≥ (2q − 1) / (dim + 2q − 2); capped at
    `LAMBDA_CAP`."""
    a2 = min(max(alpha2, 0.0), 1.0)
    n = dim + 2 * q - 2
    denominator = a2 * a2 * dim * n - 2 * a2 * dim * q + 1
    best = (1 - a2) * (1 - a2 * n) / denominator if denominator != 0 else -1.0
    lam = best if 0 < best < 1 else (0.0 if a2 * n < 1 else 1.0)
    return float(min(lam, LAMBDA_CAP))


def _rms_normalised(u: NDArray[np.float64]) -> NDArray[np.float64]:
    return u / max(float(np.sqrt(np.mean(u * u))), 1e-30)


@dataclass(frozen=True)
class PriorGuided:
    """Prior-guided random gradient-free estimate (P-RGF, Cheng et al. 2019), within BAR's
    q + 1 evaluations per step: the clean W, W + β·v (v: the prior, RMS-normalised), and
    q − 1 directions √(1−λ)·ξ + √λ·v with ξ Gaussian orthogonal to v (RMS-normalised, so that
    every coordinate moves by about β, as with barapi's Gaussian directions).

    The estimate is P-RGF's mean of (f(W + βu_i) − f(W)) / β · u_i over the q − 1 mixed
    directions; the prior's own difference measures α = cos(v, ∇f) for the next steps' λ
    (`sample_alpha2`)."""

    q: int = 10
    beta: float = 0.05

    def __post_init__(self) -> None:
        if self.q < 2:
            raise ValueError(f"a prior-guided estimate needs q ≥ 2 (one prior, one random), got {self.q}")

    def sample(self, rng: np.random.Generator, prior: NDArray[np.floating],
               lam: float) -> FloatArray:
        """(q, *prior.shape) directions: the prior first, then the q − 1 mixed ones."""
        v = _rms_normalised(np.asarray(prior, dtype=np.float64).ravel())
        xi = rng.standard_normal((self.q - 1, v.size))
        xi -= np.outer(xi @ v / (v @ v), v)
        xi = np.stack([_rms_normalised(row) for row in xi])
        mixed = np.sqrt(1 - lam) * xi + np.sqrt(lam) * v
        return np.concatenate([v[None], mixed]).reshape((self.q, *np.shape(prior))).astype(np.float32)

    def points(self, weights: FloatArray, directions: FloatArray) -> FloatArray:
        """(q + 1, *W.shape): W first, then W + β·direction."""
        return np.concatenate([weights[None], weights + self.beta * directions])

    def gradient(self, losses: NDArray[np.floating], directions: FloatArray) -> FloatArray:
        diffs = (np.asarray(losses[2:], dtype=np.float64) - float(losses[0])) / self.beta
        g = np.tensordot(diffs, directions[1:].astype(np.float64), axes=1) / (self.q - 1)
        return g.astype(np.float32)

    def sample_alpha2(self, losses: NDArray[np.floating], lam: float, dim: int) -> float | None:
        """One step's estimate of α² = cos²(prior, ∇f): the prior's directional derivative
        against the random components' (ξ·∇f recovered from each mixed difference); None
        when the step cannot tell (no gradient seen)."""
        if lam >= 1:
            return None
        losses = np.asarray(losses, dtype=np.float64)
        along = (losses[1] - losses[0]) / self.beta  # v·∇f, with ‖v‖² = dim
        mixed = (losses[2:] - losses[0]) / self.beta
        across = (mixed - np.sqrt(lam) * along) / np.sqrt(1 - lam)  # ξ_i·∇f, E[(ξ·g)²] ≈ ‖g⊥‖²
        parallel, orthogonal = along * along / dim, float(np.mean(across * across))
        return None if parallel + orthogonal == 0 else parallel / (parallel + orthogonal)
