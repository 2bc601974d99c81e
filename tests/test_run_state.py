import math
from pathlib import Path

import numpy as np

from barapi.checkpoint import load_checkpoint, save_checkpoint
from barapi.head import LinearHead
from barapi.labelmap import LabelMap
from barapi.run_state import RunState


def linear_head(seed: int) -> LinearHead:
    rng = np.random.default_rng(seed)
    return LinearHead(rng.standard_normal((2, 5)), rng.standard_normal(2), rng.standard_normal(5),
                      rng.random(5) + 0.5, 0.01)


def state() -> RunState:
    weights = np.zeros((3, 4, 4), dtype=np.float32)
    return RunState.start(weights, linear_head(0), 5, ["cat", "dog"], 0.5, 0.6)


def test_checkpoint_round_trip_keeps_every_field(tmp_path: Path) -> None:
    s = state()
    s.record_validation(0.7, 0.6)
    s.weights = np.full((3, 4, 4), 0.25, dtype=np.float32)
    s.head, s.step, s.early_stop = linear_head(1), 12, True
    save_checkpoint(tmp_path / "c.npz", *s.to_checkpoint())
    back = RunState.from_checkpoint(*load_checkpoint(tmp_path / "c.npz"))
    for name in ("weights", "best_weights"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
    for name in ("head", "best_head"):
        np.testing.assert_array_equal(getattr(back, name).parameters, getattr(s, name).parameters)
    assert (back.step, back.best_step, back.progress_step, back.validated_step) == (12, 0, 0, 0)
    assert (back.best_val_accuracy, back.best_val_loss, back.lowest_val_loss) == (0.7, 0.6, 0.6)
    assert back.early_stop and not back.finished and back.classes == ["cat", "dog"]
    assert (back.n_sources, back.zero_shot_test_accuracy, back.probe_test_accuracy) == (5, 0.5, 0.6)


def test_a_label_map_head_survives_the_checkpoint(tmp_path: Path) -> None:
    label_map = LabelMap(np.array([[0, 1], [2, 3]]), 5)
    s = RunState.start(np.zeros((3, 2, 2), dtype=np.float32), label_map, 5, ["a", "b"],
                       0.5, math.nan)
    back = RunState.from_checkpoint(*s.to_checkpoint())
    assert isinstance(back.best_head, LabelMap)
    np.testing.assert_array_equal(back.best_head.assignment, label_map.assignment)
    assert math.isnan(back.probe_test_accuracy)


def test_validation_keeps_the_better_program_and_counts_a_lower_loss_as_progress() -> None:
    s = state()
    s.record_validation(0.6, 0.9)                   # step 0: anything beats nothing
    s.weights, s.step = s.weights + 1, 10
    s.record_validation(0.6, 0.8)                   # same accuracy, lower loss: better
    assert (s.best_step, s.progress_step) == (10, 10) and s.best_weights[0, 0, 0] == 1
    s.weights, s.step = s.weights + 1, 20
    s.record_validation(0.55, 0.7)                  # worse accuracy, lowest loss: progress only
    assert (s.best_step, s.progress_step, s.lowest_val_loss) == (10, 20, 0.7)
    assert s.best_weights[0, 0, 0] == 1 and s.best_val_loss == 0.8
    s.step = 30
    s.record_validation(0.5, 0.75)                  # neither
    assert (s.best_step, s.progress_step, s.validated_step) == (10, 20, 30)


def test_a_checkpoint_from_before_the_loss_aware_patience_counts_from_its_best_step() -> None:
    arrays, meta = state().to_checkpoint()
    del meta["progress_step"], meta["lowest_val_loss"]
    meta.update(best_step=40, best_val_loss=0.3, step=60)
    back = RunState.from_checkpoint(arrays, meta)
    assert (back.progress_step, back.lowest_val_loss) == (40, 0.3)
