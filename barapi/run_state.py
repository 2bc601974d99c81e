"""The state of one training run: what a checkpoint holds, so that a resumed run continues
exactly where the interrupted one stopped (optimiser moments are the trainer's to add).

`load_state` is the one way a checkpoint is read back for use (resume, evaluate, predict):
it refuses, with one line naming the file, a checkpoint made by another configuration or for
another black box, and one holding NaN or infinite values — before any request is built
from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.checkpoint import load_checkpoint
from barapi.config import CONNECTION_FIELDS, RunConfig
from barapi.errors import ConfigError
from barapi.head import LinearHead, OutputHead, head_arrays, head_from_arrays

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

    def non_finite(self) -> str | None:
        """The first part of the state holding NaN or ±inf ("the program W", "the output
        head", "the best program", "the best output head"), None when all are finite."""
        parts = {"the program W": [self.weights], "the output head": head_values(self.head),
                 "the best program": [self.best_weights],
                 "the best output head": head_values(self.best_head)}
        return next((name for name, values in parts.items()
                     if not all(np.isfinite(v).all() for v in values)), None)


def head_values(head: OutputHead) -> list[NDArray[Any]]:
    """The real-valued parameters of a head (a label map has none)."""
    if isinstance(head, LinearHead):
        return [head.weights, head.bias, head.mean, head.scale, np.array(head.l2)]
    return []


ADDED_FIELDS = {"per_sample_directions": False}
"""Settings added after checkpoints were made, at the value those checkpoints ran with: a
checkpoint that does not record one resumes as if it did (issue 30's per-sample directions,
off before they existed)."""


def config_fingerprint(config: RunConfig) -> dict[str, Any]:
    """What a checkpoint records of the configuration that made it (JSON values): every
    field but how the black box is reached (CONNECTION_FIELDS)."""
    dumped = {k: v for k, v in config.model_dump().items() if k not in CONNECTION_FIELDS}
    fingerprint: dict[str, Any] = json.loads(json.dumps(dumped))
    return fingerprint


def load_state(path: Path, config: RunConfig, n_sources: int | None = None
               ) -> tuple[RunState, dict[str, NDArray[Any]], dict[str, Any]]:
    """(state, arrays, meta) of the checkpoint at `path`, checked against the run's `config`
    and, when known, the black box's `n_sources` outputs. Raises ConfigError naming the file
    when it was made by another configuration (a field differs, or W's shape), for a black
    box with another number of outputs, is not a run state, or holds NaN or ±inf."""
    arrays, meta = load_checkpoint(path)
    advice = "restore this run's own checkpoint, or delete it to train the run again from step 0"
    made_by = meta.get("config")
    if isinstance(made_by, dict):
        ours = config_fingerprint(config)
        changed = [k for k in sorted(set(ours) | set(made_by))
                   if ours.get(k) != made_by.get(k, ADDED_FIELDS.get(k))]
        if changed:
            name = changed[0]
            raise ConfigError(f"{path}: made by another configuration ({name} is "
                              f"{made_by.get(name)!r} there, {ours.get(name)!r} in this run's "
                              f"config.json); {advice}")
    try:
        state = RunState.from_checkpoint(arrays, meta)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: not a barapi run state ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]}); {advice}") from None
    shape = (3, config.program_resolution, config.program_resolution)
    for name in ("weights", "best_weights"):
        found = getattr(state, name).shape
        if found != shape:
            raise ConfigError(f"{path}: made by another configuration (program W of shape "
                              f"{found}, this run's is {shape}: --resolution "
                              f"{config.program_resolution}); {advice}")
    for head in (state.head, state.best_head):
        if head.n_classes != len(state.classes):
            raise ConfigError(f"{path}: damaged (a head for {head.n_classes} classes, "
                              f"{len(state.classes)} class names); {advice}")
        if head.n_sources != state.n_sources:
            raise ConfigError(f"{path}: damaged (a head on {head.n_sources} outputs, made for "
                              f"a black box of {state.n_sources}); {advice}")
    if n_sources is not None and state.n_sources != n_sources:
        raise ConfigError(f"{path}: made with a black box of {state.n_sources} outputs, this "
                          f"one has {n_sources}; {advice}")
    bad = next((k for k, v in arrays.items()
                if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()), None)
    if bad is not None:
        raise ConfigError(f"{path}: holds NaN or infinite values (in {bad!r}): nothing is sent "
                          f"from it; {advice}")
    return state, arrays, meta
