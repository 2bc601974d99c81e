from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LinearSoftmaxAdapter, tiny_config

from barapi import api
from barapi.checkpoint import load_checkpoint
from barapi.config import RunConfig, make_config
from barapi.errors import ConfigError
from barapi.head import REFIT_MAX_SOURCES, LinearHead
from barapi.program import Canvas, Program
from barapi.query import QueryService
from barapi.trainer import Task


def changed_fraction(config: RunConfig) -> tuple[float, float]:
    """Share of background pixels that a random direction changes after 8-bit encoding,
    and the mean number of grey levels they change by."""
    canvas = Canvas(config.canvas, config.window_size)
    program = Program(canvas, config.program_resolution)
    est = config.estimator()
    u = est.sample(np.random.default_rng(0), program.shape)
    window = np.zeros((1, canvas.window, canvas.window, 3), dtype=np.uint8)
    images = program.compose(window, program.perturbation(est.points(program.zeros(), u)))
    base, moved = images[0].astype(int), images[1:].astype(int)
    background = canvas.mask[..., 0] == 1
    diff = np.abs(moved - base)[:, background]
    moved_levels = diff[diff > 0]
    return float((diff > 0).mean()), float(moved_levels.mean()) if moved_levels.size else 0.0


def test_default_perturbations_survive_8bit_quantisation() -> None:
    changed, levels = changed_fraction(RunConfig())
    assert changed > 0.5 and levels >= 2
    paper_changed, _ = changed_fraction(make_config("paper"))
    assert paper_changed < 0.01  # the paper's β barely moves any pixel (DESIGN.md)


def test_default_perturbation_changes_the_loss(lite0_32) -> None:
    config = RunConfig()
    split = api.load_split(make_config(per_class=5))
    task = Task(config, split)
    service = QueryService(lite0_32)
    from barapi.labelmap import random_map
    label_map = random_map(10, config.m, 1000, seed=0)
    est = config.estimator()
    u = est.sample(np.random.default_rng(0), task.program.shape)
    points = est.points(task.program.zeros(), u)
    windows = task.windows["train"][:config.batch]
    probs = asyncio.run(service.predict_proba(task.program.compose(windows,
                                                                   task.program.perturbation(points))))
    losses = task.losses(label_map, probs, split.train.labels[:config.batch], len(points))
    assert np.all(np.abs(losses[1:] - losses[0]) > 1e-6)


def test_same_seed_gives_bit_identical_weights() -> None:
    a = api.train(tiny_config(), adapter=LinearSoftmaxAdapter())
    b = api.train(tiny_config(), adapter=LinearSoftmaxAdapter())
    c = api.train(tiny_config(seed=1), adapter=LinearSoftmaxAdapter())
    assert np.array_equal(a.final_weights, b.final_weights)
    assert not np.array_equal(a.final_weights, c.final_weights)


class Crash(Exception):
    pass


class CrashingAdapter(LinearSoftmaxAdapter):
    def __init__(self, after_calls: int) -> None:
        super().__init__()
        self.after_calls = after_calls

    async def predict_proba(self, images: np.ndarray) -> np.ndarray:
        if len(self.calls) >= self.after_calls:
            raise Crash
        return await super().predict_proba(images)


def crashed_run(config: RunConfig, root: Path) -> tuple[Path, dict]:
    """The run folder of `config` cut short by a crash after 30 requests, and its checkpoint's
    meta."""
    with pytest.raises(Crash):
        api.train(config, adapter=CrashingAdapter(after_calls=30), runs_root=root)
    (folder,) = root.iterdir()
    _, meta = load_checkpoint(folder / "checkpoint.npz")
    return folder, meta


@pytest.mark.parametrize("head", ["map", "linear"])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path: Path,
                                                                  head: str) -> None:
    config = tiny_config(epochs=3, eval_every=2, head=head)
    whole = api.train(config, adapter=LinearSoftmaxAdapter(), runs_root=tmp_path / "a")
    folder, meta = crashed_run(config, tmp_path / "b")
    assert 0 < meta["step"] < whole.steps
    resumed = api.train(config, adapter=LinearSoftmaxAdapter(), resume=folder)
    assert resumed.steps == whole.steps
    assert np.array_equal(resumed.final_weights, whole.final_weights)
    assert np.array_equal(resumed.weights, whole.weights)
    final, _ = load_checkpoint(folder / "checkpoint.npz")
    (first,) = (tmp_path / "a").iterdir()
    reference, _ = load_checkpoint(first / "checkpoint.npz")
    assert np.array_equal(final["weights"], reference["weights"])
    for key in reference:
        if key.startswith(("head.", "best_head.", "head_opt.", "answers.")):
            assert np.array_equal(final[key], reference[key]), key
    steps = [r["step"] for r in api.RunFolder.open(folder).metrics() if r["event"] == "step"]
    assert steps == list(range(1, whole.steps + 1))  # no step logged twice


def test_run_folder_contents(tmp_path: Path) -> None:
    result = api.train(tiny_config(epochs=1), adapter=LinearSoftmaxAdapter(), runs_root=tmp_path)
    folder = result.run_dir
    assert folder is not None
    for name in ("config.json", "metrics.jsonl", "checkpoint.npz", "program.png", "curves.png"):
        assert (folder / name).is_file(), name
    config = api.RunFolder.open(folder).read_json("config.json")
    assert config["config"]["q"] == 4 and "numpy" in config["versions"]


def test_tiny_end_to_end_run_beats_the_zero_shot_mapping(lite0_64) -> None:
    config = tiny_config(canvas=64, window=32, input_size=64, resolution=4, q=10, lr=0.1,
                         epochs=3, eval_every=5)
    result = api.train(config, adapter=lite0_64)
    assert result.test_accuracy > result.zero_shot_accuracy + 0.03


def test_linear_probe_pays_one_query_per_image_and_is_learned_with_the_program() -> None:
    """--method zero-shot --head linear is the linear probe: train and test queried once each."""
    adapter = LinearSoftmaxAdapter()
    config = tiny_config(method="zero-shot", head="linear")
    session = api.prepare(config, adapter=adapter)
    probe = session.run()
    split = session.trainer.task.split
    assert session.service.stats.billed_images == len(split.train.labels) + len(split.test.labels)
    assert probe.test_accuracy == probe.probe_accuracy > probe.zero_shot_accuracy
    trained = api.train(tiny_config(head="linear", evaluate=False, head_refit=False),
                        adapter=LinearSoftmaxAdapter())  # without validation: the last head
    assert isinstance(trained.head, LinearHead) and isinstance(probe.head, LinearHead)
    assert trained.head.mean == pytest.approx(probe.head.mean)  # fitted to the same answers
    assert not np.allclose(trained.head.parameters, probe.head.parameters)


def test_a_linear_head_serves_a_black_box_with_fewer_outputs_than_classes_times_m() -> None:
    result = api.train(tiny_config(head="linear", m=4, epochs=1), adapter=LinearSoftmaxAdapter(8))
    assert np.isnan(result.zero_shot_accuracy) and result.test_accuracy > 0.2
    with pytest.raises(ConfigError, match="exceeds the black box's 8 source labels"):
        api.prepare(tiny_config(head="map", m=4), adapter=LinearSoftmaxAdapter(8))


def test_on_a_few_output_box_the_head_is_refitted_to_the_last_epochs_answers() -> None:
    """The head after the last step is the probe's fit to the answers of the last epoch's
    steps (issue 16: Adam steps let the probe's head drift as the program moves); boxes of
    more than REFIT_MAX_SOURCES outputs, and --no-head-refit, keep Adam steps."""
    config = tiny_config(head="linear", epochs=2, evaluate=False)
    session = api.prepare(config, adapter=LinearSoftmaxAdapter(REFIT_MAX_SOURCES))
    result = session.run()
    window = session.trainer.answers
    assert window is not None and len(window) == session.trainer.steps_per_epoch
    assert isinstance(result.head, LinearHead)
    task = session.trainer.task
    refitted = window.refit(result.head, task.gamma, task.weights)
    assert np.allclose(result.head.parameters, refitted.parameters)
    for adapter, refit in ((LinearSoftmaxAdapter(REFIT_MAX_SOURCES + 1), True),
                           (LinearSoftmaxAdapter(REFIT_MAX_SOURCES), False)):
        session = api.prepare(tiny_config(head="linear", epochs=1, evaluate=False,
                                          head_refit=refit), adapter=adapter)
        session.run()
        assert session.trainer.answers is None


def test_a_run_folder_from_before_head_refit_resumes_with_adam_steps(tmp_path: Path) -> None:
    api.train(tiny_config(head="linear", epochs=1), adapter=LinearSoftmaxAdapter(),
              runs_root=tmp_path)
    (folder,) = tmp_path.iterdir()
    stored = json.loads((folder / "config.json").read_text())
    del stored["config"]["head_refit"]
    (folder / "config.json").write_text(json.dumps(stored))
    assert api.RunFolder.open(folder, lock=False).config().head_refit is False


class BlindAdapter(LinearSoftmaxAdapter):
    """Answers the same probabilities whatever the image: no program can ever help."""

    async def predict_proba(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        return np.full((len(images), 20), 1 / 20, dtype=np.float32)


def script_validation(monkeypatch: pytest.MonkeyPatch, val_losses: list[float]) -> None:
    """Validation answers these losses in turn, with accuracy 0.6 for the first (the
    unprogrammed start) and 0.5 after: the start stays the best program, and only a new
    lowest loss counts as progress."""
    from barapi import trainer

    real_evaluate = trainer.evaluate
    losses = iter(val_losses)

    async def scripted(service, task, head, weights, part="test"):  # type: ignore[no-untyped-def]
        ev = await real_evaluate(service, task, head, weights, part)
        if part != "val":
            return ev
        loss = next(losses)
        return trainer.Evaluation(loss, 0.6 if loss == val_losses[0] else 0.5, ev.predictions)

    monkeypatch.setattr(trainer, "evaluate", scripted)


def test_patience_stops_a_run_that_validation_says_is_not_improving(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script_validation(monkeypatch, [1.0, 0.9] + [0.95] * 30)  # progress once, at step 2
    config = tiny_config(eval_every=2, patience=2, epochs=3)
    result = api.train(config, adapter=BlindAdapter(), runs_root=tmp_path)
    assert result.steps == 6 and result.extra["best_step"] == 0 and result.extra["early_stop"]
    assert result.run_dir is not None
    events = [r["event"] for r in api.RunFolder.open(result.run_dir).metrics()]
    assert events.count("early_stop") == 1 and events.count("step") == 6
    again = api.train(config, adapter=BlindAdapter(), resume=result.run_dir)
    assert again.steps == 6  # resuming a run that ran out of patience trains no further
    full = api.train(tiny_config(eval_every=2, epochs=3), adapter=BlindAdapter())
    assert full.steps > 6


def test_patience_waits_for_a_program_that_has_not_yet_improved_on_its_start() -> None:
    """A program that never beats the unprogrammed start is not stopped: on the NudeNet box
    the old rule stopped BAR and AR seeds on such a plateau, which other seeds left in
    later epochs (docs/results.md). Epochs and budget bound the run."""
    result = api.train(tiny_config(eval_every=2, patience=2, epochs=3), adapter=BlindAdapter())
    full = api.train(tiny_config(eval_every=2, epochs=3), adapter=BlindAdapter())
    assert result.steps == full.steps and not result.extra["early_stop"]


@pytest.mark.parametrize(("val_losses", "steps"), [
    ([1.0 - 0.05 * i for i in range(16)], 30),  # accuracy below the best, loss keeps falling
    ([1.0, 0.9, 0.95, 0.92] + [0.91] * 12, 6),  # two validations without a new lowest loss
])
def test_patience_counts_a_lower_validation_loss_as_progress(
        monkeypatch: pytest.MonkeyPatch, val_losses: list[float], steps: int) -> None:
    script_validation(monkeypatch, val_losses)
    result = api.train(tiny_config(eval_every=2, patience=2, epochs=3), adapter=BlindAdapter())
    assert result.steps == steps and result.extra["best_step"] == 0  # selection: accuracy first
    assert result.extra["early_stop"] == (steps < 30)


def test_a_run_stopped_in_its_first_validation_validates_step_0_on_resume(tmp_path: Path) -> None:
    """(Found by the sweep's budget tests: the resume skipped the step-0 validation, so it
    could keep another program than an uninterrupted run.)"""

    class Priced(LinearSoftmaxAdapter):
        card = "clarifai-nsfw"  # $1.20 per 1,000 images

    config = tiny_config(classes="0,1,2")
    whole = api.train(config, adapter=Priced(), runs_root=tmp_path / "a", budget=100.0,
                      cache_dir=tmp_path / "cache-a")
    session = api.prepare(config, adapter=Priced(), runs_root=tmp_path / "b", budget=1.0,
                          cache_dir=tmp_path / "cache-b", start=False)
    split = session.trainer.task.split
    assert split.test is not None
    before_validation = len(split.train.labels) + len(split.test.labels)
    session.service.budget.limit = (before_validation + len(split.val.labels) // 2) * 1.2e-3
    stopped = session.run()
    assert stopped.stopped and stopped.run_dir is not None
    resumed = api.prepare(config, adapter=Priced(), resume=stopped.run_dir, budget=100.0).run()
    folder = api.RunFolder.open(stopped.run_dir, lock=False)
    assert next(r["step"] for r in folder.metrics() if r.get("event") == "val") == 0
    assert resumed.best_val_accuracy == whole.best_val_accuracy
    assert resumed.test_accuracy == whole.test_accuracy
    np.testing.assert_array_equal(resumed.weights, whole.weights)


def test_a_program_that_becomes_non_finite_stops_before_the_next_request(tmp_path: Path) -> None:
    """Issue 29 item 8: `--lr 1e308` makes W infinite at step 1; the run stops there with
    one line naming the cause, and nothing is sent from that program."""
    from barapi.errors import ProgramDiverged

    adapter = LinearSoftmaxAdapter()
    session = api.prepare(tiny_config(lr=1e308, optimizer="sgd"), adapter=adapter,
                          runs_root=tmp_path)
    split = session.trainer.task.split
    assert split.test is not None
    with pytest.raises(ProgramDiverged, match=r"^the program W became non-finite \(NaN or "
                                              r"infinite\) at step 1 \(learning rate 1e\+308 too "
                                              r"large\?\); nothing was sent from it"):
        session.run()
    c = session.config
    before_step_1 = len(split.train.labels) + len(split.test.labels) + len(split.val.labels)
    assert sum(adapter.calls) == before_step_1 + c.batch * (c.q + 1)  # step 1's own queries
    (folder,) = tmp_path.iterdir()
    _, meta = load_checkpoint(folder / "checkpoint.npz")
    assert meta["step"] == 0  # the last finite checkpoint is kept, nothing replaced it
    assert "step" not in [r["event"] for r in api.RunFolder.open(folder, lock=False).metrics()]


def finished_run(root: Path, **overrides: object) -> Path:
    """A short run (2 steps) in a folder under `root`."""
    result = api.train(tiny_config(epochs=2, max_steps=2, **overrides),
                       adapter=LinearSoftmaxAdapter(), runs_root=root)
    assert result.run_dir is not None
    return result.run_dir


def test_a_checkpoint_holding_nan_is_refused_before_any_request(tmp_path: Path) -> None:
    """Issue 29 item 8: a checkpoint holding NaN is refused by resume, evaluate and predict
    (one line naming the file), before a request is built from it."""
    from barapi.checkpoint import save_checkpoint

    folder = finished_run(tmp_path)
    arrays, meta = load_checkpoint(folder / "checkpoint.npz")
    for key in ("best_weights", "head.linear_weights"):
        damaged = dict(arrays)
        damaged[key] = damaged[key].copy()
        damaged[key].flat[0] = np.nan
        save_checkpoint(folder / "checkpoint.npz", damaged, meta)
        adapter = LinearSoftmaxAdapter()
        with pytest.raises(ConfigError, match=f"^{folder}/checkpoint.npz: holds NaN or infinite "
                                              f"values \\(in '{key}'\\): nothing is sent"):
            api.prepare(tiny_config(epochs=2), adapter=adapter, resume=folder).run()
        assert adapter.calls == []
        with pytest.raises(ConfigError, match="holds NaN"):
            api.load_run(folder)


@pytest.mark.parametrize(("other", "expected"), [
    ({"resolution": 8}, r"made by another configuration \(resolution is 8 there, 4 in this "
                        r"run's config\.json\)"),
    ({"lr": 0.5}, r"made by another configuration \(lr is 0\.5 there, 0\.05 in this run's"),
    ({"classes": "0,1"}, r"made by another configuration \(classes is '0,1' there, None"),
])
def test_a_checkpoint_from_another_config_is_one_line_naming_it(
        tmp_path: Path, other: dict[str, object], expected: str) -> None:
    """Issue 29 item 9: a checkpoint copied from another run is refused by resume and
    evaluate with one line naming the file and what differs; nothing is sent."""
    mine = finished_run(tmp_path / "mine")
    theirs = finished_run(tmp_path / "theirs", **other)
    shutil.copy(theirs / "checkpoint.npz", mine / "checkpoint.npz")
    adapter = LinearSoftmaxAdapter()
    with pytest.raises(ConfigError, match=f"^{mine}/checkpoint.npz: {expected}"):
        api.prepare(tiny_config(epochs=2), adapter=adapter, resume=mine).run()
    assert adapter.calls == []
    with pytest.raises(ConfigError, match=expected):
        api.load_run(mine)


def test_a_checkpoint_from_before_the_config_record_is_checked_by_its_shapes(
        tmp_path: Path) -> None:
    """Checkpoints written before they recorded their configuration are still checked: W's
    shape against --resolution, the classes against the split."""
    from barapi.checkpoint import save_checkpoint

    mine = finished_run(tmp_path / "mine")
    for other, expected in (({"resolution": 8}, r"program W of shape \(3, 8, 8\), this run's "
                                                 r"is \(3, 4, 4\)"),
                            ({"classes": "0,1"}, r"made for the classes \['0', '1'\]")):
        theirs = finished_run(tmp_path / str(other), **other)
        arrays, meta = load_checkpoint(theirs / "checkpoint.npz")
        del meta["config"]
        save_checkpoint(mine / "checkpoint.npz", arrays, meta)
        adapter = LinearSoftmaxAdapter()
        with pytest.raises(ConfigError, match=expected):
            api.prepare(tiny_config(epochs=2), adapter=adapter, resume=mine).run()
        assert adapter.calls == []


class RoundedAdapter(LinearSoftmaxAdapter):
    """Answers rounded to 5 levels, as Google SafeSearch's likelihoods are."""

    def __init__(self) -> None:
        from barapi.adapters.base import AnswerForm

        super().__init__(n_sources=5)
        self.answers = "scores"
        self.form = AnswerForm(levels=(0.1, 0.3, 0.5, 0.7, 0.9))

    async def predict_proba(self, images: np.ndarray) -> np.ndarray:
        probs = await super().predict_proba(images)
        return np.asarray(self.form.levels, dtype=np.float32)[np.clip((probs * 5).astype(int), 0, 4)]


def test_a_run_says_when_most_finite_differences_see_no_change(caplog: pytest.LogCaptureFixture,
                                                              tmp_path: Path) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="barapi"):
        api.train(tiny_config(epochs=1, beta=0.01), adapter=RoundedAdapter(), runs_root=tmp_path)
    said = [r.getMessage() for r in caplog.records if "finite differences" in r.getMessage()]
    assert len(said) == 1 and "rounds each score to one of 5 levels" in said[0]
    steps = [json.loads(line) for line in next(tmp_path.glob("*/metrics.jsonl")).read_text()
             .splitlines() if '"event": "step"' in line]
    assert steps and np.mean([s["unchanged"] for s in steps]) > 0.5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="barapi"):  # exact answers: nothing said
        api.train(tiny_config(epochs=1, beta=0.01), adapter=LinearSoftmaxAdapter())
    assert not [r for r in caplog.records if "finite differences" in r.getMessage()]


def test_per_sample_directions_pay_the_same_queries_and_resume_identically(
        tmp_path: Path) -> None:
    config = tiny_config(epochs=3, eval_every=2, head="linear", per_sample_directions=True)
    shared_box, box = LinearSoftmaxAdapter(), LinearSoftmaxAdapter()
    shared = api.train(tiny_config(epochs=3, eval_every=2, head="linear"), adapter=shared_box)
    whole = api.train(config, adapter=box, runs_root=tmp_path / "a")
    assert box.calls == shared_box.calls  # q + 1 queries per sample, as shared directions
    assert not np.array_equal(whole.final_weights, shared.final_weights)
    folder, meta = crashed_run(config, tmp_path / "b")
    assert 0 < meta["step"] < whole.steps
    resumed = api.train(config, adapter=LinearSoftmaxAdapter(), resume=folder)
    assert np.array_equal(resumed.final_weights, whole.final_weights)


def test_per_sample_directions_estimate_each_images_own_loss(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    # each queried image is its sample under its own program variant, and the estimate pairs
    # each sample's perturbed loss with that sample's clean loss
    from barapi import trainer

    seen = []
    real = trainer.ZOEstimator.gradient

    def spy(self, losses, directions):  # type: ignore[no-untyped-def]
        seen.append((np.shape(losses), directions.shape))
        return real(self, losses, directions)

    monkeypatch.setattr(trainer.ZOEstimator, "gradient", spy)
    config = tiny_config(epochs=1, per_sample_directions=True)
    api.train(config, adapter=LinearSoftmaxAdapter())
    assert seen and all(s == ((config.q + 1, config.batch), (config.q, config.batch, 3, 4, 4))
                        for s in seen)


def test_a_checkpoint_from_before_per_sample_directions_resumes(tmp_path: Path) -> None:
    from barapi.checkpoint import save_checkpoint
    from barapi.run_state import load_state

    config = tiny_config(epochs=3, eval_every=2)
    whole = api.train(config, adapter=LinearSoftmaxAdapter())
    with pytest.raises(Crash):
        api.train(config, adapter=CrashingAdapter(after_calls=30), runs_root=tmp_path)
    (folder,) = tmp_path.iterdir()
    arrays, meta = load_checkpoint(folder / "checkpoint.npz")
    del meta["config"]["per_sample_directions"]  # as a checkpoint made before the setting
    save_checkpoint(folder / "checkpoint.npz", arrays, meta)
    other = tiny_config(epochs=3, eval_every=2, per_sample_directions=True)
    with pytest.raises(ConfigError, match="per_sample_directions is None there, True"):
        load_state(folder / "checkpoint.npz", other)  # it ran with shared directions
    resumed = api.train(config, adapter=LinearSoftmaxAdapter(), resume=folder)
    assert np.array_equal(resumed.final_weights, whole.final_weights)
