"""White-box adversarial reprogramming (AR): the upper-bound baseline.

Same program, label map and loss as BAR, but the gradient comes from autograd through the
local model (and so is exact and float, not quantised). Only possible for `LocalAdapter`;
this is the one module of barapi that reads a model's internals.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.adapters.local import LocalAdapter
from barapi.errors import ConfigError
from barapi.head import PROB_FLOOR, LinearHead, OutputHead
from barapi.program import Program
from barapi.trainer import FloatArray, GradientFn, Probabilities, Task


def check_white_box(adapter: Adapter) -> None:
    """Raise ConfigError unless `adapter` is a local model whose gradients we can take."""
    if not isinstance(adapter, LocalAdapter):
        raise ConfigError("--method ar needs a local model (white-box gradients); "
                          f"provider {adapter.identity} is a black box")


def target_scores(head: OutputHead, probs: torch.Tensor) -> torch.Tensor:
    """`head.scores` in torch, differentiable in the probabilities (N, K) → (N, C)."""
    def tensor(a: NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(a).to(probs.device)

    if isinstance(head, LinearHead):
        logp = probs.clamp(PROB_FLOOR, 1.0).log().double()
        phi = (logp - logp.mean(dim=1, keepdim=True) - tensor(head.mean)) / tensor(head.scale)
        z = phi @ tensor(head.weights).T + tensor(head.bias)
        return torch.softmax(z, dim=1)
    h = probs[:, tensor(head.assignment)].mean(dim=2)
    return h / h.sum(dim=1, keepdim=True)


class ProgramImages:
    """W → the (N, 3, S, S) float images in [0, 1] the program makes of N windows,
    differentiable in W (torch): tanh(upsampled W) on the canvas outside the window. W is
    one program (3, k, k), or one per window (N, 3, k, k)."""

    def __init__(self, program: Program, device: torch.device) -> None:
        self.program, self.device = program, device
        self.upsample = torch.from_numpy(program.upsample).to(device)
        self.mask = torch.from_numpy(program.canvas.mask).permute(2, 0, 1).to(device)
        self.full_resolution = program.resolution == program.canvas.size

    def __call__(self, w: torch.Tensor, windows: NDArray[np.uint8]) -> torch.Tensor:
        rows, cols = self.program.canvas.window_slice
        full = w if self.full_resolution else self.upsample @ w @ self.upsample.T
        background = (torch.tanh(full) * self.mask + 1) / 2
        per_window = background if background.dim() == 4 else background.unsqueeze(0)
        x = per_window.expand(len(windows), -1, -1, -1).clone()
        x[:, :, rows, cols] = torch.from_numpy(windows).to(self.device).permute(0, 3, 1, 2) / 255.0
        return x


def autograd_gradient(adapter: Adapter, task: Task) -> GradientFn:
    """GradientFn for the AR baseline on a local model (pass to `Trainer(make_gradient=...)`
    as ``functools.partial(autograd_gradient, adapter)``)."""
    check_white_box(adapter)
    assert isinstance(adapter, LocalAdapter)
    device = adapter.device
    images = ProgramImages(task.program, device)
    class_weights = torch.from_numpy(task.weights).to(device)
    gamma = task.gamma

    async def gradient(weights: FloatArray, head: OutputHead, windows: NDArray[np.uint8],
                       labels: NDArray[np.int64], step: int) -> tuple[float, FloatArray,
                                                                      Probabilities]:
        w = torch.tensor(weights, device=device, requires_grad=True)
        probs = adapter.probabilities(images(w, windows))
        h = target_scores(head, probs)
        y = torch.from_numpy(labels).to(device)
        p = h[torch.arange(len(y), device=device), y].clamp_min(1e-12)
        loss = (-class_weights[y] * (1 - p) ** gamma * p.log()).mean()
        loss.backward()
        assert w.grad is not None
        return (float(loss.detach()), w.grad.cpu().numpy().astype(np.float32),
                probs.detach().cpu().numpy().astype(np.float32))

    return gradient
