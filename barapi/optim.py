"""Optimisers on the program parameters W (numpy, descent on a supplied gradient).

SGD: W ← W − η_t g with η_t = lr · decay^(t / decay_steps) (the paper's exponentially
decaying step). Adam: the usual bias-corrected moments with the same step-size schedule.
State is a dict of arrays and numbers so that checkpoints capture it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]
OptimizerName = Literal["sgd", "adam"]


@dataclass
class Optimizer:
    name: OptimizerName = "sgd"
    lr: float = 0.01
    decay: float = 1.0
    decay_steps: int = 1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    state: dict[str, Any] = field(default_factory=lambda: {"t": 0})

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adam"):
            raise ValueError(f"optimiser must be 'sgd' or 'adam', got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    def step_size(self) -> float:
        return self.lr * self.decay ** (self.state["t"] / max(self.decay_steps, 1))

    def step(self, weights: FloatArray, grad: FloatArray) -> FloatArray:
        """Return the updated parameters in their own dtype (does not modify `weights`)."""
        lr = self.step_size()
        t = self.state["t"] + 1
        self.state["t"] = t
        if self.name == "sgd":
            return (weights - lr * grad).astype(weights.dtype)
        m = self.state.get("m", np.zeros_like(weights, dtype=np.float64))
        v = self.state.get("v", np.zeros_like(weights, dtype=np.float64))
        m = self.beta1 * m + (1 - self.beta1) * grad
        v = self.beta2 * v + (1 - self.beta2) * np.square(grad, dtype=np.float64)
        self.state["m"], self.state["v"] = m, v
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        return (weights - lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(weights.dtype)
