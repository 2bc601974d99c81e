"""The state of one training run: what a checkpoint holds, so that a resumed run continues
exactly where the interrupted one stopped (optimiser moments are the trainer's to add)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.head import OutputHead, head_arrays, head_from_arrays

FloatArray = NDArray[np.float32]
_ARRAYS = ("weights", "best_weights", "head", "best_head")


@dataclass
class RunState:
    """`weights`/`head`: the current program W (3, k, k) and output head; `best_*`: the pair
    with the best validation accuracy (then loss), kept for testing. Steps count minibatch
    updates; accuracies are fractions in [0, 1] (NaN where not measured), losses per sample."""

    weights: FloatArray
    head: OutputHead
    best_weights: FloatArray
    best_head: OutputHead
    n_sources: int
    """Outputs of the black box: a checkpoint only resumes against the same number."""
    classes: list[str]
    zero_shot_test_accuracy: float
    probe_test_accuracy: float
    step: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = math.inf
    best_step: int = 0
    progress_step: int = 0
    """Last validation that found a better program or a new lowest loss (for --patience: on a
    small split the accuracy moves in coarse steps and stalls while a program still learns)."""
    lowest_val_loss: float = math.inf
    validated_step: int | None = None
    early_stop: bool = False
    finished: bool = False

    @classmethod
    def start(cls, weights: FloatArray, head: OutputHead, n_sources: int, classes: list[str],
              zero_shot_test_accuracy: float, probe_test_accuracy: float) -> RunState:
        """Step 0: the unprogrammed W, which is also the best so far."""
        return cls(weights, head, weights.copy(), head, n_sources, classes,
                   zero_shot_test_accuracy, probe_test_accuracy)

    def record_validation(self, accuracy: float, loss: float) -> None:
        """Take in a validation at the current step: keep the program if it is better
        (accuracy, then loss) and note progress (better, or a new lowest loss)."""
        self.validated_step = self.step
        better = (accuracy, -loss) > (self.best_val_accuracy, -self.best_val_loss)
        if better or loss < self.lowest_val_loss:
            self.progress_step, self.lowest_val_loss = self.step, min(loss, self.lowest_val_loss)
        if better:
            self.best_weights, self.best_head = self.weights.copy(), self.head
            self.best_val_accuracy, self.best_val_loss, self.best_step = accuracy, loss, self.step

    def to_checkpoint(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """(arrays, JSON-serialisable metadata) for `save_checkpoint`."""
        arrays = {"weights": self.weights, "best_weights": self.best_weights,
                  **head_arrays(self.head, "head."), **head_arrays(self.best_head, "best_head.")}
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAYS}
        return arrays, meta

    @classmethod
    def from_checkpoint(cls, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> RunState:
        """Inverse of `to_checkpoint`; other keys (the trainer's) are ignored. Checkpoints
        from before the loss-aware patience count progress from their best step."""
        names = {f.name for f in fields(cls)} - set(_ARRAYS)
        values = {k: v for k, v in meta.items() if k in names}
        values.setdefault("progress_step", meta["best_step"])
        values.setdefault("lowest_val_loss", meta["best_val_loss"])
        n_sources = meta["n_sources"]
        return cls(weights=arrays["weights"], best_weights=arrays["best_weights"],
                   head=head_from_arrays(arrays, "head.", n_sources),
                   best_head=head_from_arrays(arrays, "best_head.", n_sources), **values)
