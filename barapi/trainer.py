"""The BAR training loop: label map, minibatch steps, validation, checkpoints, test.

This module is the black-box path: it sees the model only through `QueryService`
(8-bit images in, probabilities out) and never imports torch. A white-box gradient
(`whitebox.py`) can be plugged in for the AR baseline through `make_gradient`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from barapi.checkpoint import load_checkpoint, save_checkpoint
from barapi.config import RunConfig
from barapi.data import Split
from barapi.errors import BudgetExhausted, ConfigError, FatalProviderError
from barapi.estimate import EVAL_CHUNK
from barapi.labelmap import LabelMap, check_fits, frequency_map, random_map
from barapi.losses import batched_focal_loss, class_weights
from barapi.optim import Optimizer
from barapi.program import Canvas, Program
from barapi.query import QueryService
from barapi.run_folder import RunFolder
from barapi.zo import ZOEstimator

FloatArray = NDArray[np.float32]
GradientFn = Callable[[FloatArray, NDArray[np.uint8], NDArray[np.int64], int],
                      Awaitable[tuple[float, FloatArray]]]
"""(W, windows (B, w, w, 3), labels (B,), step) → (loss at W, gradient of the loss at W)."""


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: NDArray[np.int64]


@dataclass
class Task:
    """A split embedded into a canvas: the fixed inputs of one run."""

    config: RunConfig
    split: Split
    program: Program = field(init=False)
    windows: dict[str, NDArray[np.uint8]] = field(init=False)
    weights: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        canvas = Canvas(c.canvas, c.window_size, c.window_top, c.window_left)
        self.program = Program(canvas, c.program_resolution)
        self.windows = {name: canvas.embed(part.images) for name in ("train", "val", "test")
                        if (part := getattr(self.split, name)) is not None}
        n_classes = self.split.train.n_classes
        self.weights = (class_weights(self.split.train.labels, n_classes) if c.loss == "focal"
                        else np.ones(n_classes))

    @property
    def gamma(self) -> float:
        return self.config.gamma if self.config.loss == "focal" else 0.0

    def losses(self, label_map: LabelMap, probs: NDArray[np.float32], labels: NDArray[np.int64],
               n_variants: int) -> NDArray[np.float64]:
        """Loss per program variant from (V·B, K) probabilities, variant-major."""
        h = label_map.scores(probs).reshape(n_variants, len(labels), -1)
        return batched_focal_loss(h, labels, self.gamma, self.weights)


async def query_program(service: QueryService, program: Program, windows: NDArray[np.uint8],
                        weights: FloatArray) -> NDArray[np.float32]:
    """(N, K) black-box probabilities of N samples under program W, in chunks."""
    parts = [await service.predict_proba(program.images(windows[i:i + EVAL_CHUNK], weights))
             for i in range(0, len(windows), EVAL_CHUNK)]
    return np.concatenate(parts)


async def evaluate(service: QueryService, task: Task, label_map: LabelMap, weights: FloatArray,
                   part: str = "test") -> Evaluation:
    data = getattr(task.split, part)
    probs = await query_program(service, task.program, task.windows[part], weights)
    h = label_map.scores(probs)
    loss = float(batched_focal_loss(h[None], data.labels, task.gamma, task.weights)[0])
    predictions = h.argmax(axis=1)
    return Evaluation(loss, float((predictions == data.labels).mean()), predictions)


async def build_label_map(service: QueryService, task: Task) -> LabelMap:
    c, train = task.config, task.split.train
    n_sources = service.adapter.n_sources
    check_fits(train.n_classes, c.m, n_sources)
    if c.mapping == "random":
        return random_map(train.n_classes, c.m, n_sources, c.seed)
    probs = await query_program(service, task.program, task.windows["train"], task.program.zeros())
    return frequency_map(probs, train.labels, train.n_classes, c.m)


def zo_gradient(service: QueryService, task: Task, label_map: LabelMap,
                estimator: ZOEstimator, seed: int) -> GradientFn:
    """The black-box gradient: q random directions, minibatch × (q + 1) queried images. The
    directions of step t come from default_rng([seed, 1, t]), so a resumed run repeats them."""

    async def gradient(weights: FloatArray, windows: NDArray[np.uint8],
                       labels: NDArray[np.int64], step: int) -> tuple[float, FloatArray]:
        rng = np.random.default_rng([seed, 1, step])
        directions = estimator.sample(rng, task.program.shape)
        points = estimator.points(weights, directions)
        images = task.program.compose(windows, task.program.perturbation(points))
        probs = await service.predict_proba(images)
        losses = task.losses(label_map, probs, labels, len(points))
        return estimator.mean_loss(losses), estimator.gradient(losses, directions)

    return gradient


@dataclass
class RunResult:
    """`weights` is the program selected on the validation split; `final_weights` the last."""

    run_dir: Path | None
    weights: FloatArray
    final_weights: FloatArray
    label_map: LabelMap
    test_accuracy: float
    zero_shot_accuracy: float
    best_val_accuracy: float
    steps: int
    stopped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Runs one configuration against one QueryService, optionally in a run folder.

    Randomness is derived from (seed, epoch) for shuffling and (seed, step) for directions,
    so a resumed run repeats exactly the queries an uninterrupted one would make.
    """

    def __init__(self, config: RunConfig, service: QueryService, split: Split,
                 folder: RunFolder | None = None,
                 make_gradient: Callable[[Task, LabelMap], GradientFn] | None = None,
                 progress: bool = False) -> None:
        self.config = config
        self.service = service
        self.task = Task(config, split)
        self.folder = folder
        self.progress = progress
        self.estimator = config.estimator()
        self._make_gradient = make_gradient

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.task.split.train.labels) // self.config.batch)

    @property
    def total_steps(self) -> int:
        return 0 if self.config.method == "zero-shot" else self.steps_per_epoch * self.config.epochs

    def _log(self, record: dict[str, Any]) -> None:
        if self.folder is not None:
            self.folder.log(record)

    def _save(self, state: dict[str, Any], optimizer: Optimizer) -> None:
        if self.folder is None:
            return
        arrays = {"weights": state["weights"], "best_weights": state["best_weights"],
                  "label_map": state["label_map"].assignment}
        opt_arrays = {f"opt_{k}": v for k, v in optimizer.state.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in state.items()
                if k not in ("weights", "best_weights", "label_map")}
        meta["optimizer_t"] = optimizer.state["t"]
        # the RNG state is a pure function of these: default_rng([seed, 0, epoch]) shuffles,
        # default_rng([seed, 1, step]) draws the step's directions
        meta["rng"] = {"seed": self.config.seed, "next_step": state["step"]}
        meta["stats"] = vars(self.service.stats).copy()
        save_checkpoint(self.folder.checkpoint, {**arrays, **opt_arrays}, meta)

    def _restore(self, optimizer: Optimizer) -> dict[str, Any] | None:
        if self.folder is None or not self.folder.checkpoint.exists():
            return None
        arrays, meta = load_checkpoint(self.folder.checkpoint)
        optimizer.state = {"t": meta.pop("optimizer_t"),
                           **{k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}}
        stats = meta.pop("stats")
        meta.pop("rng", None)
        for key, value in stats.items():
            setattr(self.service.stats, key, value)
        if meta["n_sources"] != self.service.adapter.n_sources:
            raise ConfigError(f"{self.folder.path}: checkpoint was made with a black box of "
                              f"{meta['n_sources']} outputs, this one has "
                              f"{self.service.adapter.n_sources}")
        self.folder.truncate_metrics(meta["step"])
        return {**meta, "weights": arrays["weights"], "best_weights": arrays["best_weights"],
                "label_map": LabelMap(arrays["label_map"], meta["n_sources"])}

    async def _validate(self, state: dict[str, Any]) -> None:
        ev = await evaluate(self.service, self.task, state["label_map"], state["weights"], "val")
        state["validated_step"] = state["step"]
        record = {"event": "val", "step": state["step"], "val_loss": ev.loss,
                  "val_accuracy": ev.accuracy, "queries": self.service.stats.images}
        self._log(record)
        better = (ev.accuracy, -ev.loss) > (state["best_val_accuracy"], -state["best_val_loss"])
        if better:
            state.update(best_weights=state["weights"].copy(), best_val_accuracy=ev.accuracy,
                         best_val_loss=ev.loss, best_step=state["step"])

    async def run(self) -> RunResult:
        c = self.config
        optimizer = Optimizer(c.optimizer, c.lr, c.decay, self.steps_per_epoch)
        state = self._restore(optimizer)
        if state is None:
            if self.folder is not None:
                self.folder.truncate_metrics(-1)  # records of an attempt that never checkpointed
            label_map = await build_label_map(self.service, self.task)
            weights = self.task.program.zeros()
            zero_shot = await self._test(label_map, weights)
            state = {"step": 0, "weights": weights, "best_weights": weights.copy(),
                     "best_val_accuracy": -1.0, "best_val_loss": float("inf"), "best_step": 0,
                     "label_map": label_map, "zero_shot_test_accuracy": zero_shot,
                     "finished": False, "n_sources": self.service.adapter.n_sources,
                     "classes": list(self.task.split.train.classes)}
            self._log({"event": "start", "step": 0, "zero_shot_test_accuracy": zero_shot,
                       "queries": self.service.stats.images})
            if c.method != "zero-shot" and c.evaluate:
                await self._validate(state)
            self._save(state, optimizer)
        stopped = None
        try:
            await self._train(state, optimizer)
        except (BudgetExhausted, FatalProviderError) as exc:
            stopped = str(exc)
            self._log({"event": "stopped", "step": state["step"], "reason": stopped})
        test = state["zero_shot_test_accuracy"]
        if c.method != "zero-shot":
            try:
                test = await self._test(state["label_map"], state["best_weights"])
            except BudgetExhausted as exc:
                test, stopped = float("nan"), stopped or f"{exc} (before the test evaluation)"
        state["finished"] = stopped is None
        self._save(state, optimizer)
        return RunResult(self.folder.path if self.folder else None, state["best_weights"],
                         state["weights"], state["label_map"], test, state["zero_shot_test_accuracy"],
                         state["best_val_accuracy"], state["step"], stopped,
                         {"best_step": state["best_step"]})

    async def _test(self, label_map: LabelMap, weights: FloatArray) -> float:
        """Test accuracy, or NaN when the split has no test part or evaluation is off."""
        if self.task.split.test is None or not self.config.evaluate:
            return float("nan")
        return (await evaluate(self.service, self.task, label_map, weights, "test")).accuracy

    async def _train(self, state: dict[str, Any], optimizer: Optimizer) -> None:
        c, task = self.config, self.task
        train = task.split.train
        if self._make_gradient is not None:
            gradient = self._make_gradient(task, state["label_map"])
        else:
            gradient = zo_gradient(self.service, task, state["label_map"], self.estimator, c.seed)
        eval_every = c.eval_every or self.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not self.progress,
                   unit="step", dynamic_ncols=True)
        start = time.monotonic()

        def validation_due(step: int) -> bool:
            return c.evaluate and step > 0 and (step % eval_every == 0 or step == self.total_steps)

        try:
            if validation_due(state["step"]) and state.get("validated_step") != state["step"]:
                await self._validate(state)  # interrupted (e.g. by the budget) before it ran
                self._save(state, optimizer)
            while state["step"] < self.total_steps:
                step = state["step"]
                epoch, position = divmod(step, self.steps_per_epoch)
                order = np.random.default_rng([c.seed, 0, epoch]).permutation(len(train.labels))
                batch = order[position * c.batch:(position + 1) * c.batch]
                loss, grad = await gradient(state["weights"], task.windows["train"][batch],
                                            train.labels[batch], step)
                lr = optimizer.step_size()
                state["weights"] = optimizer.step(state["weights"], grad)
                state["step"] = step + 1
                self._log({"event": "step", "step": step + 1, "epoch": epoch, "loss": loss,
                           "lr": lr, "queries": self.service.stats.images,
                           "billed": self.service.stats.billed_images,
                           "dollars": self.service.budget.spent,
                           "elapsed": time.monotonic() - start})
                if not c.evaluate:
                    state["best_weights"], state["best_step"] = state["weights"], state["step"]
                elif validation_due(state["step"]):
                    await self._validate(state)
                self._save(state, optimizer)
                bar.update(1)
                postfix = {"loss": f"{loss:.3f}", "queries": self.service.stats.images}
                if self.service.budget.limit is not None:
                    postfix["$"] = f"{self.service.budget.spent:.2f}/{self.service.budget.limit:.2f}"
                bar.set_postfix(postfix)
        finally:
            bar.close()


def run_sync(trainer: Trainer) -> RunResult:
    """Run a trainer from synchronous code (the CLI, the scikit-learn estimator)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(trainer.run())
    raise ConfigError("run_sync was called inside a running event loop; await Trainer.run()")
