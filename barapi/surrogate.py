"""A local surrogate of ours, primed on the black box's paid answers: the prior of P-RGF.

The surrogate is a local model barapi owns (EfficientNet-Lite0 by default, `--surrogate`),
never the black box's: autograd runs through it, and only through it. A proxy layer maps its
centred log-probabilities (1,000 features) to the black box's log answers (K outputs) by ridge
regression on every answer already paid for — the probe pass, then each step's q + 1
perturbed programs — so it costs no query. Its gradient of the task loss in W is the prior
that `barapi.zo.PriorGuided` mixes into the random directions, with a weight set from the
alignment it measures (a useless prior gets weight 0).

The regression is kept as sufficient statistics (Gram matrix and cross-products, float64,
8 MB), refitted after every step, and checkpointed with the run, so that a resumed run
continues with the same proxy. Solving the normal equations ourselves (rather than with
scikit-learn's Ridge) is what lets the fit be streamed and checkpointed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.adapters.local import LocalAdapter
from barapi.config import RunConfig
from barapi.errors import ConfigError
from barapi.head import PROB_FLOOR, LinearHead, OutputHead
from barapi.trainer import FloatArray, Task
from barapi.whitebox import ProgramImages

PROXY_L2 = 1.0
"""Ridge strength, relative to the mean eigenvalue of the features' Gram matrix (our choice:
benchmarks/surrogate.py fits the proxy with it)."""


def centred_log(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) log-probabilities minus each row's mean (the features of the proxy)."""
    logp = probs.clamp_min(PROB_FLOOR).log()
    return logp - logp.mean(dim=1, keepdim=True)


class Surrogate:
    """Our local model plus a proxy of the black box fitted to its paid answers.

    Args:
        model: a `LocalAdapter` of ours; never the run's black box (checked by the trainer).
        task: the run's task (its program geometry and loss weights).
    """

    def __init__(self, model: LocalAdapter, task: Task) -> None:
        self.model, self.task = model, task
        self.images = ProgramImages(task.program, model.device)
        self.stats: dict[str, NDArray[np.float64]] = {}
        self.a: NDArray[np.float64] | None = None
        self.alpha2 = 0.0
        """Running estimate of cos²(prior, true gradient), from the steps so far."""
        self.lam = 0.0
        """The prior's weight λ in the last step's directions."""

    def observe(self, images: NDArray[np.uint8], answers: NDArray[np.floating]) -> None:
        """Take in (N, S, S, 3) uint8 images the black box answered with (N, K) `answers`."""
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(images), 64):
                batch = torch.from_numpy(np.array(images[i:i + 64])).to(self.model.device)
                batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
                chunks.append(centred_log(self.model.probabilities(batch)).double().cpu().numpy())
        x = np.concatenate(chunks)
        y = np.log(np.clip(np.asarray(answers, dtype=np.float64), PROB_FLOOR, 1.0))
        if not self.stats:
            f, k = x.shape[1], y.shape[1]
            self.stats = {"xx": np.zeros((f, f)), "xy": np.zeros((f, k)), "x": np.zeros(f),
                          "y": np.zeros(k), "n": np.zeros(1)}
        s = self.stats
        s["xx"] += x.T @ x
        s["xy"] += x.T @ y
        s["x"] += x.sum(axis=0)
        s["y"] += y.sum(axis=0)
        s["n"] += len(x)

    def fit(self) -> None:
        """Ridge regression from the statistics so far (centred features and targets)."""
        if not self.stats or self.stats["n"][0] < 2:
            return
        s, n = self.stats, float(self.stats["n"][0])
        mx, my = s["x"] / n, s["y"] / n
        gram = s["xx"] - n * np.outer(mx, mx)
        cross = s["xy"] - n * np.outer(mx, my)
        ridge = PROXY_L2 * max(np.trace(gram), 1e-12) / len(gram)
        self.a = np.linalg.solve(gram + ridge * np.eye(len(gram)), cross)
        self.mx, self.my = mx, my

    def prior(self, weights: FloatArray, head: OutputHead, windows: NDArray[np.uint8],
              labels: NDArray[np.int64]) -> FloatArray | None:
        """∇_W of the task loss through surrogate, proxy and head on this minibatch; None
        before the proxy is fitted or for a head other than the linear one."""
        if self.a is None or not isinstance(head, LinearHead):
            return None
        device = self.model.device

        def t(a: NDArray[Any]) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(device)

        w = torch.tensor(weights, device=device, requires_grad=True)
        f = centred_log(self.model.probabilities(self.images(w, windows))).double()
        logp = (f - t(self.mx)) @ t(self.a) + t(self.my)
        phi = (logp - logp.mean(dim=1, keepdim=True) - t(head.mean)) / t(head.scale)
        h = torch.log_softmax(phi @ t(head.weights).T + t(head.bias), dim=1)
        y = torch.from_numpy(labels).to(device)
        weight = t(self.task.weights)[y]
        gamma = self.task.gamma
        p = h[torch.arange(len(y), device=device), y]
        loss = (-weight * (1 - p.exp()) ** gamma * p).mean()
        (grad,) = torch.autograd.grad(loss, w)
        return grad.cpu().numpy().astype(np.float32)

    def arrays(self) -> dict[str, NDArray[Any]]:
        """The state a checkpoint keeps (statistics and the alignment estimate)."""
        return {f"surrogate.{k}": v for k, v in self.stats.items()} | {
            "surrogate.alpha2": np.array([self.alpha2])}

    def load(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Restore `arrays()` from a checkpoint, and refit."""
        self.stats = {key: np.asarray(arrays[f"surrogate.{key}"], dtype=np.float64)
                      for key in ("xx", "xy", "x", "y", "n") if f"surrogate.{key}" in arrays}
        self.alpha2 = float(arrays["surrogate.alpha2"][0])
        self.fit()


def make_surrogate(config: RunConfig, task: Task, black_box: Adapter) -> Surrogate:
    """The run's surrogate: `config.surrogate` loaded afresh (our own copy, even when the
    black box is the same local model), on `config.device`. ConfigError for an unknown
    model; the black box's own module is never reused."""
    from barapi.adapters.local import EFFICIENTNET_LITE, create

    if config.surrogate not in EFFICIENTNET_LITE:
        raise ConfigError(f"--surrogate {config.surrogate!r}: choose one of "
                          f"{', '.join(EFFICIENTNET_LITE)}")
    model = create(model=config.surrogate, device=config.device,
                   input_size=config.input_size or None)
    assert model is not black_box and model._model is not getattr(black_box, "_model", None)
    return Surrogate(model, task)
