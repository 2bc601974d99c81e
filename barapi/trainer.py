"""The BAR training loop: label map, minibatch steps, validation, checkpoints, test.

This module is the black-box path: it sees the model only through `QueryService`
(8-bit images in, probabilities out) and never imports torch. A white-box gradient
(`whitebox.py`) can be plugged in for the AR baseline through `make_gradient`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from barapi.checkpoint import save_checkpoint
from barapi.config import RunConfig
from barapi.data import Split
from barapi.errors import BudgetExhausted, ConfigError, FatalProviderError, ProgramDiverged
from barapi.estimate import EVAL_CHUNK, total_steps
from barapi.head import REFIT_MAX_SOURCES, AnswerWindow, LinearHead, OutputHead
from barapi.labelmap import LabelMap, check_fits, frequency_map, random_map
from barapi.losses import batched_focal_loss, class_weights, sample_focal_losses
from barapi.optim import Optimizer
from barapi.program import Canvas, Program
from barapi.progress import EVERY, ProgressLines
from barapi.query import QueryService
from barapi.run_folder import RunFolder
from barapi.run_state import RunState, config_fingerprint, load_state
from barapi.zo import PriorGuided, ZOEstimator, prgf_lambda, unchanged_share

log = logging.getLogger("barapi.run")
"""Progress lines (`barapi.progress.ProgressLines`) and the run's phases, at INFO."""

FloatArray = NDArray[np.float32]
Probabilities = NDArray[np.float32]
GradientFn = Callable[[FloatArray, OutputHead, NDArray[np.uint8], NDArray[np.int64], int],
                      Awaitable[tuple[float, FloatArray, Probabilities]]]
"""(W, head, windows (B, w, w, 3), labels (B,), step) → (loss at W through the head, its
gradient in W, the (V·B, K) probabilities the step obtained: V variants, variant-major)."""


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

    def losses(self, head: OutputHead, probs: NDArray[np.float32], labels: NDArray[np.int64],
               n_variants: int, per_sample: bool = False) -> NDArray[np.float64]:
        """Loss per program variant (V,) from (V·B, K) probabilities, variant-major; with
        `per_sample`, each sample's own loss under each variant (V, B)."""
        h = head.scores(probs).reshape(n_variants, len(labels), -1)
        if per_sample:
            return sample_focal_losses(h, labels, self.gamma, self.weights)
        return batched_focal_loss(h, labels, self.gamma, self.weights)


async def query_program(service: QueryService, program: Program, windows: NDArray[np.uint8],
                        weights: FloatArray) -> NDArray[np.float32]:
    """(N, K) black-box probabilities of N samples under program W, in chunks."""
    parts = [await service.predict_proba(program.images(windows[i:i + EVAL_CHUNK], weights))
             for i in range(0, len(windows), EVAL_CHUNK)]
    return np.concatenate(parts)


async def evaluate(service: QueryService, task: Task, head: OutputHead, weights: FloatArray,
                   part: str = "test") -> Evaluation:
    probs = await query_program(service, task.program, task.windows[part], weights)
    return score(task, head, probs, part)


def score(task: Task, head: OutputHead, probs: NDArray[np.float32], part: str) -> Evaluation:
    """Loss and accuracy of `head` on the (N, K) answers for split `part`."""
    data = getattr(task.split, part)
    h = head.scores(probs)
    loss = float(batched_focal_loss(h[None], data.labels, task.gamma, task.weights)[0])
    predictions = h.argmax(axis=1)
    return Evaluation(loss, float((predictions == data.labels).mean()), predictions)


async def build_heads(service: QueryService, task: Task,
                      observe: Callable[[NDArray[np.uint8], Probabilities], None] | None = None
                      ) -> tuple[LabelMap | None, OutputHead]:
    """The label map (None where the black box has too few outputs for it and the head does
    not need it) and the head to train: that map, or a linear head fitted to the answers on
    the unprogrammed training samples (the linear probe)."""
    c, train = task.config, task.split.train
    n_sources = service.adapter.n_sources
    if c.head == "map":
        check_fits(train.n_classes, c.m, n_sources)
    fits = train.n_classes * c.m <= n_sources
    probs = None
    if c.head == "linear" or (fits and c.mapping == "frequency"):
        probs = await query_program(service, task.program, task.windows["train"],
                                    task.program.zeros())
        if observe is not None:
            observe(task.program.images(task.windows["train"], task.program.zeros()), probs)
    label_map = None
    if fits:
        label_map = (frequency_map(probs, train.labels, train.n_classes, c.m)
                     if probs is not None and c.mapping == "frequency"
                     else random_map(train.n_classes, c.m, n_sources, c.seed))
    if c.head == "map":
        assert label_map is not None
        return label_map, label_map
    assert probs is not None
    return label_map, LinearHead.fit(probs, train.labels, train.n_classes, task.gamma,
                                     task.weights, c.head_l2)


def zo_gradient(service: QueryService, task: Task, estimator: ZOEstimator,
                seed: int) -> GradientFn:
    """The black-box gradient: q random directions (shared by the minibatch, or each sample's
    own when the estimator is `per_sample`), minibatch × (q + 1) queried images. The
    directions of step t come from default_rng([seed, 1, t]), so a resumed run repeats them."""

    async def gradient(weights: FloatArray, head: OutputHead, windows: NDArray[np.uint8],
                       labels: NDArray[np.int64], step: int) -> tuple[float, FloatArray,
                                                                      Probabilities]:
        rng = np.random.default_rng([seed, 1, step])
        directions = estimator.sample(rng, task.program.shape, len(labels))
        points = estimator.points(weights, directions)
        images = task.program.compose(windows, task.program.perturbation(points))
        probs = await service.predict_proba(images)
        losses = task.losses(head, probs, labels, len(points), estimator.per_sample)
        return estimator.mean_loss(losses), estimator.gradient(losses, directions), probs

    return gradient


def prior_guided_gradient(service: QueryService, task: Task, estimator: PriorGuided, seed: int,
                          surrogate: Any) -> GradientFn:
    """The black-box gradient guided by `surrogate`'s prior (`barapi.surrogate.Surrogate`):
    the same q + 1 queried variants per sample as `zo_gradient`; each step's answers refit the
    proxy, and its prior difference updates the alignment estimate that sets λ."""
    dim = task.program.dim

    async def gradient(weights: FloatArray, head: OutputHead, windows: NDArray[np.uint8],
                       labels: NDArray[np.int64], step: int) -> tuple[float, FloatArray,
                                                                      Probabilities]:
        rng = np.random.default_rng([seed, 1, step])
        prior = surrogate.prior(weights, head, windows, labels)
        if prior is None or not np.any(prior):  # nothing fitted yet: a random direction
            prior = rng.standard_normal(task.program.shape).astype(np.float32)
        lam = prgf_lambda(surrogate.alpha2, dim, estimator.q - 1)
        directions = estimator.sample(rng, prior, lam)
        points = estimator.points(weights, directions)
        images = task.program.compose(windows, task.program.perturbation(points))
        probs = await service.predict_proba(images)
        surrogate.observe(images, probs)
        surrogate.fit()
        losses = task.losses(head, probs, labels, len(points))
        alpha2 = estimator.sample_alpha2(losses, lam, dim)
        if alpha2 is not None:
            surrogate.alpha2 = ALPHA_MEMORY * surrogate.alpha2 + (1 - ALPHA_MEMORY) * alpha2
        surrogate.lam = lam
        return float(losses[0]), estimator.gradient(losses, directions), probs

    return gradient


ALPHA_MEMORY = 0.8
"""Weight of the past in the running estimate of α² (one step's estimate is noisy: the
minibatch changes every step, and answers are 8-bit images' ones). Our choice."""


@dataclass
class RunResult:
    """`weights` and `head` are the program and head selected on the validation split;
    `final_weights` the last program; `head` is None when the run stopped before its head
    was built (budget or provider refusal before the first checkpoint). `zero_shot_accuracy`
    is the label map's on the unprogrammed test split (NaN where the black box has too few outputs for a map);
    `probe_accuracy` the fitted linear head's there (NaN with a label-map head)."""

    run_dir: Path | None
    weights: FloatArray
    final_weights: FloatArray
    head: OutputHead | None
    test_accuracy: float
    zero_shot_accuracy: float
    probe_accuracy: float
    best_val_accuracy: float
    steps: int
    stopped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Runs one configuration against one QueryService, optionally in a run folder.

    Randomness is derived from (seed, epoch) for shuffling and (seed, step) for directions,
    so a resumed run repeats exactly the queries an uninterrupted one would make. A linear
    head is trained alongside the program, by Adam on its exact gradient from the step's
    answers (no extra queries).
    """

    def __init__(self, config: RunConfig, service: QueryService, split: Split,
                 folder: RunFolder | None = None,
                 make_gradient: Callable[[Task], GradientFn] | None = None,
                 progress: bool = False) -> None:
        self.config = config
        self.service = service
        self.task = Task(config, split)
        self.folder = folder
        self.progress = progress
        self.estimator = config.estimator()
        self._make_gradient = make_gradient
        self.answers: AnswerWindow | None = None
        """The last epoch's answers the linear head is refitted to (None: Adam steps only);
        chosen once the black box's outputs are known (`_choose_head_training`)."""
        self.surrogate: Any = None
        if config.surrogate is not None and config.method == "bar" and make_gradient is None:
            from barapi.surrogate import make_surrogate

            self.surrogate = make_surrogate(config, self.task, service.adapter)
        self.wall_offset = 0.0
        """Wall-clock seconds of the run's earlier parts (a resumed run)."""
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        """Called with each metrics record after it is written (a sweep reports them)."""
        self.lines: Callable[[dict[str, Any]], None] | None = None
        self._unchanged: list[float] = []
        """Progress lines on the ``barapi.run`` logger (default: one every few seconds, only
        at validations when the tqdm bar is shown); the estimator sets its own."""
        self._started = time.monotonic()

    def wall_seconds(self) -> float:
        """Wall-clock seconds of the whole run so far, earlier parts included."""
        return self.wall_offset + time.monotonic() - self._started

    def save_record(self) -> None:
        """The run folder's budget.json: spend, billed and uncertain images as the ledger has
        them, wall time and the rate the limiter has learned (with when)."""
        if self.folder is None:
            return
        budget, limiter = self.service.budget, self.service.limiter
        self.folder.record_spend(budget, limit=budget.limit,
                                 wall_seconds=round(self.wall_seconds(), 3),
                                 requests_per_second=limiter.rate or None,
                                 rate_saved_at=round(time.time(), 3),
                                 throttled_requests=limiter.throttles)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.task.split.train.labels) // self.config.batch)

    @property
    def total_steps(self) -> int:
        c = self.config
        return 0 if c.method == "zero-shot" else total_steps(c, len(self.task.split.train.labels))

    UNCHANGED_WARNING = 0.5
    """Share of unchanged perturbed answers (`zo.unchanged_share`) over a run's first epoch
    above which the run says so, once (our choice: most differences then carry nothing)."""

    def _say_unchanged(self, share: float, step: int) -> None:
        """Accumulate the first epoch's unchanged shares; at its end, warn once when most of
        its finite differences saw no change (the API's answers too coarse, or β too small)."""
        if step >= self.steps_per_epoch:
            return
        self._unchanged.append(share)
        if step + 1 == self.steps_per_epoch and np.mean(self._unchanged) > self.UNCHANGED_WARNING:
            what = self.service.adapter.form.describe()
            log.warning("%.0f%% of the first epoch's perturbed answers equal their unperturbed "
                        "ones (%s): most finite differences see no change, so the estimate "
                        "learns slowly; see docs/results.md, \"Coarse answers\"",
                        100 * float(np.mean(self._unchanged)),
                        f"the answers: {what}" if what else
                        f"the smoothing radius β = {self.config.beta:g} may not survive the "
                        f"8-bit wire: try a larger --beta")

    def _log(self, record: dict[str, Any]) -> None:
        """Write one metrics record; each carries the run's spend so far ("dollars", uncertain
        included): a witness the ledger is checked against on every open."""
        record.setdefault("dollars", self.service.budget.spent)
        if self.folder is not None:
            self.folder.log(record)
        if self.lines is not None:
            self.lines(record)
        if self.on_record is not None:
            self.on_record(record)

    def _save(self, state: RunState, optimizers: dict[str, Optimizer]) -> None:
        if self.folder is None:
            return
        arrays, meta = state.to_checkpoint()
        for name, optimizer in optimizers.items():
            arrays.update({f"{name}.{k}": v for k, v in optimizer.state.items()
                           if isinstance(v, np.ndarray)})
            meta[f"{name}_t"] = optimizer.state["t"]
        # the RNG state is a pure function of these: default_rng([seed, 0, epoch]) shuffles,
        # default_rng([seed, 1, step]) draws the step's directions
        if self.surrogate is not None:
            arrays.update(self.surrogate.arrays())
        if self.answers is not None:
            arrays.update(self.answers.arrays())
        meta["rng"] = {"seed": self.config.seed, "next_step": state.step}
        meta["config"] = config_fingerprint(self.config)
        meta["stats"] = vars(self.service.stats).copy()
        budget = self.service.budget
        meta["ledger"] = {"spent_nanodollars": budget.spent_nano, "billed_images": budget.spent_images}
        save_checkpoint(self.folder.checkpoint, arrays, meta)
        self.save_record()

    def _restore(self, optimizers: dict[str, Optimizer]) -> RunState | None:
        """The run's state from its checkpoint (None without one), checked before anything
        is built from it (see `run_state.load_state`): ConfigError naming the file when it
        belongs to another configuration or black box, or holds NaN or ±inf."""
        if self.folder is None or not self.folder.checkpoint.exists():
            return None
        path = self.folder.checkpoint
        state, arrays, meta = load_state(path, self.config, self.service.adapter.n_sources)
        if list(state.classes) != list(self.task.split.train.classes):
            raise ConfigError(f"{path}: made for the classes {state.classes}, this run's split "
                              f"has {list(self.task.split.train.classes)}; restore this run's "
                              f"own checkpoint, or delete it to train the run again")
        moved: dict[str, NDArray[Any]] = {"opt": state.weights}
        if isinstance(state.head, LinearHead):
            moved["head_opt"] = state.head.parameters
        try:
            for name, optimizer in optimizers.items():
                prefix = f"{name}."
                optimizer.state = {"t": int(meta[f"{name}_t"]),
                                   **{k[len(prefix):]: v for k, v in arrays.items()
                                      if k.startswith(prefix)}}
                for key, value in optimizer.state.items():
                    if isinstance(value, np.ndarray) and value.shape != moved[name].shape:
                        raise ValueError(f"{name}.{key} has shape {value.shape}")
            if self.surrogate is not None:
                self.surrogate.load(arrays)
            self._choose_head_training()
            if self.answers is not None:
                self.answers.load(arrays)
            stats = dict(meta["stats"])
            for key, value in stats.items():
                setattr(self.service.stats, key, int(value))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"{path}: does not fit this run ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]}); restore this run's own "
                              f"checkpoint, or delete it to train the run again") from None
        self.folder.truncate_metrics(state.step)
        return state

    def _check_finite(self, state: RunState, step: int) -> None:
        """Raise ProgramDiverged, before any request is built from them, when the program or
        the head became NaN or ±inf at `step`."""
        part = state.non_finite()
        if part is None:
            return
        c = self.config
        cause = (f"--head-lr {c.head_lr:g} too large?" if "head" in part
                 else f"learning rate {c.lr:g} too large?")
        where = (f"; the last finite checkpoint of {self.folder.path} (step {step - 1}) and "
                 f"every answer paid for are kept" if self.folder is not None else "")
        raise ProgramDiverged(f"{part} became non-finite (NaN or infinite) at step {step} "
                              f"({cause}); nothing was sent from it{where}. Start a new run "
                              f"with a smaller step size")

    def _choose_head_training(self) -> None:
        """Refit the linear head after every step (an answer window) where the config asks
        for it and the black box has at most REFIT_MAX_SOURCES outputs; else Adam steps."""
        c, n_sources = self.config, self.service.adapter.n_sources
        refit = c.head == "linear" and c.head_refit and 0 < n_sources <= REFIT_MAX_SOURCES
        self.answers = AnswerWindow(self.steps_per_epoch) if refit else None

    async def _learn_labels(self) -> None:
        """Labels that only a paid answer tells (Azure's tags): one image —
        the first training sample under the blank program — asked through the query service,
        and the answer kept in the run folder so that a resume never asks again."""
        adapter = self.service.adapter
        if not adapter.paid_labels:
            return
        image = self.task.program.images(self.task.windows["train"][:1], self.task.program.zeros())
        folder = self.folder
        keep = (lambda found: folder.write_record(labels=found)) if folder is not None else None
        labels = await self.service.discover_labels(image[0], keep=keep)
        self._log({"event": "labels", "step": 0, "labels": labels})
        adapter.use_labels(labels)  # ConfigError for a --labels name the service lacks

    async def _validate(self, state: RunState) -> None:
        ev = await evaluate(self.service, self.task, state.head, state.weights, "val")
        self._log({"event": "val", "step": state.step, "val_loss": ev.loss,
                   "val_accuracy": ev.accuracy, "queries": self.service.stats.images})
        state.record_validation(ev.accuracy, ev.loss)

    async def _start(self) -> RunState:
        """Initial state: heads built, zero-shot (and probe) test accuracy measured."""
        self._choose_head_training()
        surrogate, answers, labels = self.surrogate, self.answers, self.task.split.train.labels

        def observe(images: NDArray[np.uint8], probs: Probabilities) -> None:
            """The probe pass's answers: the surrogate's first data, the window's first step."""
            if surrogate is not None:
                surrogate.observe(images, probs)
            if answers is not None:
                answers.add(probs, labels)

        label_map, head = await build_heads(self.service, self.task, observe)
        if self.surrogate is not None:
            self.surrogate.fit()
        weights = self.task.program.zeros()
        zero_shot = probe = float("nan")
        if self.task.split.test is not None and self.config.evaluate:
            probs = await query_program(self.service, self.task.program, self.task.windows["test"],
                                        weights)
            if label_map is not None:
                zero_shot = score(self.task, label_map, probs, "test").accuracy
            if isinstance(head, LinearHead):
                probe = score(self.task, head, probs, "test").accuracy
        self._log({"event": "start", "step": 0, "zero_shot_test_accuracy": zero_shot,
                   "probe_test_accuracy": probe, "queries": self.service.stats.images})
        return RunState.start(weights, head, self.service.adapter.n_sources,
                              list(self.task.split.train.classes), zero_shot, probe)

    async def run(self) -> RunResult:
        c = self.config
        optimizers = {"opt": Optimizer(c.optimizer, c.lr, c.decay, self.steps_per_epoch)}
        if c.head == "linear":  # a label map has nothing to train
            optimizers["head_opt"] = Optimizer("adam", c.head_lr, c.decay, self.steps_per_epoch)
        self._started = time.monotonic()
        if self.lines is None:
            self.lines = ProgressLines(self.total_steps, self.steps_per_epoch, c.epochs,
                                       self.service.budget.limit,
                                       every=None if self.progress else EVERY)
        state = self._restore(optimizers)
        if state is not None and state.validated_step is not None \
                and isinstance(self.lines, ProgressLines):  # a resume's lines keep the best
            self.lines.best_accuracy = state.best_val_accuracy
        if state is None:
            if self.folder is not None:
                self.folder.truncate_metrics(-1)  # records of an attempt that never checkpointed
            try:
                await self._learn_labels()
                state = await self._start()
            except (BudgetExhausted, FatalProviderError) as exc:
                # before the first checkpoint: what was paid is in the cache for the resume
                self._log({"event": "stopped", "step": 0, "reason": str(exc)})
                self.save_record()
                return self._unstarted(str(exc), isinstance(exc, FatalProviderError))
            if c.method != "zero-shot" and c.evaluate:
                try:
                    await self._validate(state)
                except (BudgetExhausted, FatalProviderError) as exc:
                    self._save(state, optimizers)  # the resume validates first
                    self._log({"event": "stopped", "step": 0, "reason": str(exc)})
                    return self._result(state, float("nan"), str(exc))
            self._save(state, optimizers)
        stopped = None
        try:
            await self._train(state, optimizers)
        except (BudgetExhausted, FatalProviderError) as exc:
            stopped = str(exc)
            self._log({"event": "stopped", "step": state.step, "reason": stopped})
        test = (state.probe_test_accuracy if isinstance(state.head, LinearHead)
                else state.zero_shot_test_accuracy)
        if c.method != "zero-shot":
            if self.task.split.test is not None and c.evaluate:
                log.info("testing the selected program (step %d) on %d test images",
                         state.best_step, len(self.task.split.test.labels))
            try:
                test = await self._test(state.best_head, state.best_weights)
            except BudgetExhausted as exc:
                test, stopped = float("nan"), stopped or f"{exc} (before the test evaluation)"
        state.finished = stopped is None
        self._save(state, optimizers)
        return self._result(state, test, stopped)

    def _result(self, state: RunState, test: float, stopped: str | None) -> RunResult:
        best_val = state.best_val_accuracy if state.validated_step is not None else float("nan")
        return RunResult(self.folder.path if self.folder else None, state.best_weights,
                         state.weights, state.best_head, test, state.zero_shot_test_accuracy,
                         state.probe_test_accuracy, best_val, state.step,
                         stopped, {"best_step": state.best_step, "early_stop": state.early_stop})

    def _unstarted(self, stopped: str, refused: bool) -> RunResult:
        """A run stopped before its heads were built: nothing learned. `refused`: by the
        provider (a bad key, an unknown model), not by the budget."""
        weights, nan = self.task.program.zeros(), float("nan")
        return RunResult(self.folder.path if self.folder else None, weights, weights, None,
                         nan, nan, nan, nan, 0, stopped,
                         {"best_step": 0, "early_stop": False, "unstarted": True,
                          "refused": refused})

    async def _test(self, head: OutputHead, weights: FloatArray) -> float:
        """Test accuracy, or NaN when the split has no test part or evaluation is off."""
        if self.task.split.test is None or not self.config.evaluate:
            return float("nan")
        return (await evaluate(self.service, self.task, head, weights, "test")).accuracy

    def _update_head(self, state: RunState, optimizer: Optimizer, probs: Probabilities,
                     labels: NDArray[np.int64]) -> None:
        """One Adam step of the linear head on the step's answers (every variant's)."""
        head = state.head
        assert isinstance(head, LinearHead)
        tiled = np.tile(labels, len(probs) // len(labels))
        _, grad = head.loss_and_gradient(probs, tiled, self.task.gamma, self.task.weights)
        state.head = head.with_parameters(optimizer.step(head.parameters, grad))

    def _out_of_patience(self, state: RunState, eval_every: int) -> bool:
        """`patience` validations in a row found neither a better program nor a lower
        validation loss, since the program first improved on its start. Before that, no run
        is stopped: on a few-output box the program's first epochs are often a plateau no
        better than the unprogrammed start, and it leaves it later (NudeNet, docs/results.md);
        the epochs and the budget bound such a run, as they bound every run."""
        c = self.config
        return (c.evaluate and c.patience > 0 and state.progress_step > 0
                and state.step - state.progress_step >= c.patience * eval_every
                and state.validated_step == state.step)

    async def _train(self, state: RunState, optimizers: dict[str, Optimizer]) -> None:
        c, task = self.config, self.task
        train = task.split.train
        optimizer = optimizers["opt"]
        if self._make_gradient is not None:
            gradient = self._make_gradient(task)
        elif self.surrogate is not None:
            gradient = prior_guided_gradient(self.service, task, PriorGuided(c.q, c.beta),
                                             c.seed, self.surrogate)
        else:
            gradient = zo_gradient(self.service, task, self.estimator, c.seed)
        eval_every = c.eval_every or self.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=state.step, disable=not self.progress,
                   unit="step", dynamic_ncols=True)
        above_bar = ExitStack()  # log lines printed above the bar, not through it
        if self.progress:
            above_bar.enter_context(logging_redirect_tqdm([logging.getLogger("barapi")]))
        start = time.monotonic()

        def validation_due(step: int) -> bool:
            return c.evaluate and step > 0 and (step % eval_every == 0 or step == self.total_steps)

        # a validation interrupted (e.g. by the budget) before it ran: the first one too
        first = state.step == 0 and c.evaluate and c.method != "zero-shot"
        try:
            if (validation_due(state.step) or first) and state.validated_step != state.step:
                await self._validate(state)
                self._save(state, optimizers)
            while state.step < self.total_steps and not self._out_of_patience(state, eval_every):
                step = state.step
                epoch, position = divmod(step, self.steps_per_epoch)
                order = np.random.default_rng([c.seed, 0, epoch]).permutation(len(train.labels))
                batch = order[position * c.batch:(position + 1) * c.batch]
                labels = train.labels[batch]
                loss, grad, probs = await gradient(state.weights, state.head,
                                                   task.windows["train"][batch], labels, step)
                lr = optimizer.step_size()
                with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                    state.weights = optimizer.step(state.weights, grad)
                    if self.answers is not None:
                        self.answers.add(probs, labels)
                        assert isinstance(state.head, LinearHead)
                        state.head = self.answers.refit(state.head, task.gamma, task.weights)
                    elif "head_opt" in optimizers:
                        self._update_head(state, optimizers["head_opt"], probs, labels)
                self._check_finite(state, step + 1)
                state.step = step + 1
                unchanged = unchanged_share(probs, len(probs) // len(labels),
                                            c.two_sided and self.surrogate is None)
                self._say_unchanged(unchanged, step)
                self._log({"event": "step", "step": step + 1, "epoch": epoch, "loss": loss,
                           "unchanged": round(unchanged, 4),
                           "lr": lr, "queries": self.service.stats.images,
                           "billed": self.service.stats.billed_images,
                           "dollars": self.service.budget.spent,
                           "elapsed": time.monotonic() - start,
                           **({"prior_weight": self.surrogate.lam,
                               "prior_alpha2": self.surrogate.alpha2}
                              if self.surrogate is not None else {})})
                if not c.evaluate:
                    state.best_weights, state.best_head = state.weights, state.head
                    state.best_step = state.step
                elif validation_due(state.step):
                    await self._validate(state)
                self._save(state, optimizers)
                bar.update(1)
                postfix = {"loss": f"{loss:.3f}", "queries": self.service.stats.images}
                if self.service.budget.limit is not None:
                    postfix["$"] = f"{self.service.budget.spent:.2f}/{self.service.budget.limit:.2f}"
                bar.set_postfix(postfix)
            if state.step < self.total_steps and not state.early_stop:
                state.early_stop = True
                self._log({"event": "early_stop", "step": state.step,
                           "best_step": state.best_step})
                self._save(state, optimizers)
        finally:
            bar.close()
            above_bar.close()


def run_sync(trainer: Trainer) -> RunResult:
    """Run a trainer from synchronous code (the CLI, the scikit-learn estimator)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(trainer.run())
    raise ConfigError("run_sync was called inside a running event loop; await Trainer.run()")
