"""Python API: assemble a run (adapter, query service, trainer) and read finished runs back.

    >>> from barapi import api
    >>> result = api.train(api.make_config(epochs=1), runs_root="runs")
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.adapters.registry import create_adapter
from barapi.budget import NANO, Budget, to_nano
from barapi.cache import ProbabilityCache, check_writable
from barapi.cards import Card, build_card, load_card
from barapi.checkpoint import writing
from barapi.config import RunConfig, check_budget_dollars, make_config, with_connection
from barapi.data import Split, load_dataset, select_classes, stratified_split
from barapi.errors import ConfigError, WriteFailed
from barapi.estimate import Phase, reach
from barapi.estimate import estimate as estimate_cost
from barapi.head import OutputHead
from barapi.labelmap import check_fits
from barapi.plan import Plan, plan_run
from barapi.prepare import InputFormat
from barapi.program import Canvas, Program
from barapi.query import QueryService
from barapi.ratelimit import RateLimiter
from barapi.report import save_curves_png, save_program_png
from barapi.run_folder import RunFolder
from barapi.run_state import load_state
from barapi.trainer import RunResult, Trainer, evaluate, query_program, run_sync
from barapi.wire import worst_case_png_bytes

__all__ = ["FittedProgram", "RunFolder", "Session", "card_for", "default_cache", "evaluate",
           "load_run", "load_split", "make_config", "make_service", "open_adapter", "prepare",
           "run_service", "run_summary", "train"]


def open_adapter(config: RunConfig) -> Adapter:
    model = {"model": config.model} if config.model else {}
    return create_adapter(config.provider, **model, device=config.device,
                          input_size=config.input_size or None, endpoint=config.endpoint,
                          insecure=config.insecure, labels=config.labels,
                          key_file=config.key_file, weights=config.weights,
                          oip_input=config.oip_input)


def load_split(config: RunConfig) -> Split:
    data = load_dataset(config.dataset)
    if config.classes:
        data = select_classes(data, [c.strip() for c in config.classes.split(",") if c.strip()])
    return stratified_split(data, config.val_fraction, config.test_fraction, config.seed,
                            config.per_class, config.rebalance,
                            val_size=config.val_size, test_size=config.test_size)


def card_for(adapter: Adapter, card_file: Path | None = None,
             card_fields: dict[str, Any] | None = None) -> Card:
    """The adapter's price/limit card with the user's overrides (file, then fields)."""
    return load_card(adapter.card, card_file, **(card_fields or {}))


def default_cache(card: Card, use_cache: bool | None = None,
                  cache_dir: Path | None = None) -> ProbabilityCache | None:
    """The shared answer cache, on by default for priced providers only (a $0 local model
    is cheaper to ask again than to store 1,000 floats per image). Checked before anything
    is paid: a damaged cache raises CacheUnusable on a priced card, and is turned off with
    one warning on a free one (see `ProbabilityCache.preflight`)."""
    priced = card.price_per_1000 > 0
    if not (priced if use_cache is None else use_cache):
        return None
    cache = ProbabilityCache(cache_dir, priced=priced)
    cache.preflight()
    return cache


def make_service(adapter: Adapter, budget: float | Budget | None = None,
                 ledger: Path | None = None, cache: ProbabilityCache | None = None,
                 card: Card | None = None, rate: float | None = None,
                 require_budget: bool = True) -> QueryService:
    """A QueryService on `adapter` with the card's limits. `budget`: a limit in dollars (on
    `ledger`, if given) or a Budget to share; `rate`: a learned request rate to start at (at
    most the card's). A priced card needs a budget: raises ConfigError without one (unless
    `require_budget` is False: for a service that will only price, never send)."""
    card = card or card_for(adapter)
    if not isinstance(budget, Budget):
        budget = Budget(card.price_per_1000, budget, ledger)
    if require_budget and card.price_per_1000 > 0 and budget.limit is None:
        raise ConfigError(f"{card.name} costs ${card.price_per_1000:g} per 1,000 images: give a "
                          f"budget in dollars (--budget; budget= in Python)")
    ceiling = card.requests_per_second
    start = min(ceiling, rate) if rate and ceiling else (rate or ceiling)
    return QueryService(adapter, budget, cache, RateLimiter(start, ceiling),
                        max_batch=card.max_images_per_request,
                        max_bytes=card.max_bytes_per_request)


def check_card(card: Card, canvas: int) -> None:
    """The card's image limits against the canvas, before anything is sent: the side at
    least `min_image_side`, the worst-case encoded image within `max_image_bytes` and within
    `max_bytes_per_request`. Raises ConfigError naming the field."""
    if card.min_image_side is not None and canvas < card.min_image_side:
        raise ConfigError(f"--canvas {canvas}: {card.name} takes images of at least "
                          f"{card.min_image_side} px a side (card field min_image_side)")
    worst = worst_case_png_bytes((canvas, canvas, 3))
    for name in ("max_image_bytes", "max_bytes_per_request"):
        limit = getattr(card, name)
        if limit is not None and worst > limit:
            raise ConfigError(f"--canvas {canvas}: an image may encode to {worst:,} bytes, over "
                              f"{card.name}'s {limit:,} (card field {name}); use a smaller canvas")


@dataclass
class Session:
    """A validated, assembled run. Nothing has been queried yet; with `start=False` in
    `prepare` no run folder exists yet either (see `start`)."""

    config: RunConfig
    adapter: Adapter
    card: Card
    service: QueryService
    trainer: Trainer
    folder: RunFolder | None
    runs_root: Path | None = None
    run_name: str | None = None
    """The run folder's name under `runs_root` (default: time, dataset and method)."""
    _checked: bool = False

    def estimate(self, n_train: int | None = None) -> list[Phase]:
        """The run's cost per phase; `n_train` prices a training split of another size."""
        split = self.trainer.task.split
        n_test = len(split.test.labels) if split.test is not None else 0
        per_request = self.service.limit_for((self.config.canvas, self.config.canvas, 3))
        train = len(split.train.labels) if n_train is None else n_train
        return estimate_cost(self.config, train, len(split.val.labels), n_test, self.card,
                             per_request, label_images=int(self.adapter.paid_labels))

    def reach(self, budget: float) -> tuple[int, float]:
        """(training steps, epochs) that `budget` dollars pay for, after what is already spent
        and after the run's evaluation queries."""
        per_image = self.service.budget.cost_nano(1)
        left = to_nano(budget) - self.service.budget.spent_nano
        images = left // per_image if per_image else 10**12
        evaluation = next(p.images for p in self.estimate() if p.name == "evaluation")
        return reach(self.config, len(self.trainer.task.split.train.labels),
                     max(0, int(images) - evaluation))

    def plan(self, budget: float) -> Plan:
        """The validation/test sizes and training steps `budget` dollars pay for, test
        accuracy included (see `barapi.plan.plan_run`; ConfigError when none fits)."""
        split = self.trainer.task.split
        n_test = len(split.test.labels) if split.test is not None else 0
        per_request = self.service.limit_for((self.config.canvas, self.config.canvas, 3))
        return plan_run(self.config, len(split.train.labels), len(split.val.labels), n_test,
                        split.train.n_classes, self.card, budget, per_request,
                        int(self.adapter.paid_labels))

    def start(self) -> None:
        """Create the run folder (if `runs_root` was given), lock it, record its budget and
        attach its spend ledger."""
        if self.folder is None and self.runs_root is not None:
            cache = self.service.cache
            self.folder = RunFolder.create(
                self.runs_root, self.config, self.run_name, card=self.card.model_dump(),
                cache={"enabled": cache is not None,
                       "dir": str(cache.directory.resolve()) if cache is not None else None},
                input=InputFormat.of(self.trainer.task.split.train).to_json())
            self.folder.write_record(limit=self.service.budget.limit, spent_nanodollars=0,
                                     billed_images=0, wall_seconds=0.0)
            self.service.budget.attach(self.folder.ledger)
            self.trainer.folder = self.folder
        elif self.folder is not None:
            self.folder.write_record(limit=self.service.budget.limit)
        if self.folder is not None:  # the model version and ids checked on every resume
            keep_pins(self.folder, self.adapter)

    def check(self) -> None:
        """Free preflight: the black box can be reached, and its labels are known (see
        `Adapter.check`); once per session."""
        if not self._checked:
            asyncio.run(self.adapter.ensure_checked())
            self._checked = True
            if self.config.head == "map":
                check_fits(self.trainer.task.split.train.n_classes, self.config.m,
                           self.adapter.n_sources)

    def run(self, progress: bool = False) -> RunResult:
        """Run (or continue) the run. A new run folder whose run failed before anything was
        billed (a bad key, an unknown model) is removed; otherwise it is kept, and the
        failure is logged in it."""
        self.check()
        try:
            try:
                self.start()
            except WriteFailed as exc:
                self._failed(str(exc))  # a new folder with nothing paid is removed
                raise
            return self._run(progress)
        except WriteFailed as exc:  # a full disk: one line, what is kept, how to go on
            raise (self.folder.write_failure(exc, self.service.budget) if self.folder is not None
                   else WriteFailed(exc.path, exc.reason, f"{exc}; nothing was sent and no run "
                                                          f"folder was kept")) from None
        finally:
            if self.folder is not None:
                self.folder.unlock()

    def _run(self, progress: bool) -> RunResult:
        self.trainer.progress = progress
        record = self.folder.record() if self.folder is not None else {}
        self.trainer.wall_offset = float(record.get("wall_seconds", 0.0))
        try:
            result = run_sync(self.trainer)
        except BaseException as exc:
            self._failed(str(exc) or type(exc).__name__)
            raise
        finally:
            if self.service.cache is not None:
                self.service.cache.close()
        return self._finish(result)

    def _finish(self, result: RunResult) -> RunResult:
        budget, stats = self.service.budget, self.service.stats
        if result.extra.get("refused") and result.stopped and budget.spent_images == 0 \
                and self.folder is not None and self.folder.created:
            self._failed(result.stopped)
            raise ProviderRefused(f"{result.stopped} (nothing was billed; no run folder was kept)")
        test = self.trainer.task.split.test
        result.extra.update(test_images=len(test.labels) if test is not None else 0,
                            queries=stats.images, billed_images=budget.spent_images,
                            uncertain_images=budget.uncertain_images,
                            uncertain_dollars=budget.uncertain_nano / NANO,
                            uncertain_reasons=dict(budget.uncertain_reasons),
                            cached_images=stats.cached_images, dollars=budget.spent,
                            dollars_left=budget.left,
                            wall_seconds=self.trainer.wall_seconds())
        if self.folder is not None:
            self.trainer.save_record()
            if self.folder.checkpoint.exists():
                task = self.trainer.task
                with writing(self.folder.path / "program.png"):
                    save_program_png(self.folder.path / "program.png", task.program,
                                     result.weights, task.windows["val"][0])
                with writing(self.folder.path / "curves.png"):
                    save_curves_png(self.folder.path / "curves.png", self.folder.metrics())
        return result

    def _failed(self, reason: str) -> None:
        """A failed run: its new folder goes if nothing was billed, else it is marked."""
        folder = self.folder
        if folder is None:
            return
        if folder.created and self.service.budget.spent_nano == 0 \
                and self.service.budget.spent_images == 0 and not folder.checkpoint.exists():
            folder.discard()
            self.folder = self.trainer.folder = None
            return
        try:  # best effort: a full disk may refuse these too, and the ledger is the truth
            folder.log({"event": "failed", "reason": reason[:500]})
            self.trainer.save_record()
        except WriteFailed:
            pass


def keep_pins(folder: RunFolder, adapter: Adapter) -> None:
    """Record in `folder` (budget.json, "pinned") what `adapter` is pinned to — the model
    version the service reported, the ids its columns are bound to — and keep doing so when
    an answer tells more (`Adapter.on_pinned`). A version other than the recorded one (accepted
    with --accept-version) is logged as a "model_version" event."""
    def record() -> None:
        pins = adapter.pinned()
        before = folder.record().get("pinned") or {}
        if not pins or pins == before:
            return
        if before.get("version") and pins.get("version") != before["version"]:
            folder.log({"event": "model_version", "from": before["version"],
                        "to": pins.get("version")})
        folder.write_record(pinned=pins)

    adapter.on_pinned = record
    record()


def pin_adapter(adapter: Adapter, folder: RunFolder | None, accept_version: str | None) -> None:
    """Hold `adapter` to what the run `folder` pinned at its start (see `Adapter.pin`);
    `accept_version`: a model version the user accepts knowingly instead (ConfigError
    without a run folder)."""
    if folder is None:
        if accept_version:
            raise ConfigError("--accept-version: only for a run folder (run --resume, evaluate, "
                              "predict): a new run pins the version the service serves")
        return
    pins = folder.record().get("pinned") or {}
    if not isinstance(pins, dict) or not isinstance(pins.get("version", ""), str):
        raise ConfigError(f"{folder.record_path}: field 'pinned' must be an object such as "
                          f"{{\"version\": \"...\"}}; restore it from a backup, or delete the "
                          f"field to pin the version the service serves now")
    adapter.pin(pins, accept_version or None)


class ProviderRefused(ConfigError):
    """The black box refused the run's first request for a configuration reason."""


def run_settings(folder: RunFolder | None, adapter: Adapter, card_file: Path | None = None,
                 card_fields: dict[str, Any] | None = None, use_cache: bool | None = None,
                 cache_dir: Path | None = None) -> tuple[Card, ProbabilityCache | None]:
    """Card and cache of a run: those stored in its folder (a resumed run keeps its prices
    and its cache), or the adapter's card and the default cache; explicit arguments win."""
    saved = folder.session() if folder is not None else {}
    if "card" in saved:
        card = build_card(saved["card"], card_file, card_fields)
    else:
        card = card_for(adapter, card_file, card_fields)
    if "cache" in saved:
        use_cache = saved["cache"]["enabled"] if use_cache is None else use_cache
        cache_dir = cache_dir or (Path(saved["cache"]["dir"]) if saved["cache"]["dir"] else None)
    return card, default_cache(card, use_cache, cache_dir)


def prepare(config: RunConfig, *, adapter: Adapter | None = None, split: Split | None = None,
            runs_root: Path | str | None = None, resume: Path | str | None = None,
            budget: float | None = None, cache: ProbabilityCache | None = None,
            card_file: Path | None = None, card_fields: dict[str, Any] | None = None,
            cache_dir: Path | None = None, use_cache: bool | None = None,
            start: bool = True, sends: bool = True, run_name: str | None = None,
            budget_factory: Callable[[float, float | None, RunFolder | None], Budget] | None = None,
            connection: dict[str, Any] | None = None,
            accept_version: str | None = None) -> Session:
    """Validate and assemble a run of `config` (or of the run folder `resume`).

    Every check on the input (data, model, geometry, label map, card) happens here, before a
    run folder is created or a query is sent. `adapter` replaces the provider named in the
    config (bring your own black box); `split` replaces the dataset. Without `runs_root` or
    `resume` nothing is written to disk. `cache` (or `use_cache`/`cache_dir`) chooses the
    answer cache; by default priced providers use the shared one under ~/.cache/barapi.
    A priced provider needs a `budget` (or the resumed run's own) unless `sends` is False
    (a session that only estimates). `run_name` names the new run folder. A sweep's trial
    passes `budget_factory` (price per 1,000, limit, resumed folder or None → the run's
    Budget: one that also spends from the sweep's wallet). `connection`: with `resume`, new values
    of `config.CONNECTION_FIELDS` (endpoint, insecure, key_file, device) for this session; the
    run folder keeps its own config. Raises ConfigError for any other field in `connection`.
    A resumed run is held to the model version it was pinned to (`Adapter.pin`): another is
    refused, unless it is `accept_version` (accepted knowingly; then pinned instead).
    """
    resumed = RunFolder.open(Path(resume)) if resume is not None else None
    record: dict[str, Any] = {}
    if resumed is not None:
        config = with_connection(resumed.config(), connection or {})
        record = resumed.record()
        if budget is None:  # a resume keeps the run's budget unless a new total is given
            budget = record.get("limit")
    if budget is not None:  # ConfigError for NaN, inf, negative, a bool, above MAX_BUDGET
        check_budget_dollars(budget, "budget")
    if runs_root is not None:
        check_writable(Path(runs_root), "runs folder")
    split = split or load_split(config)
    adapter = adapter or open_adapter(config)
    pin_adapter(adapter, resumed, accept_version)  # the version (and ids) it was trained against
    if record.get("labels") and adapter.paid_labels:  # learned by the run before: never again
        adapter.use_labels(list(record["labels"]))
    if config.head == "map" and adapter.n_sources:  # (unknown until `check` for some APIs)
        check_fits(split.train.n_classes, config.m, adapter.n_sources)
    card, stored_cache = run_settings(resumed, adapter, card_file, card_fields,
                                      False if cache is not None else use_cache, cache_dir)
    check_card(card, config.canvas)
    make_gradient = None
    if config.method == "ar":
        from barapi.whitebox import autograd_gradient, check_white_box

        check_white_box(adapter)
        make_gradient = functools.partial(autograd_gradient, adapter)
    trainer = Trainer(config, QueryService(adapter), split, None, make_gradient)
    cache = cache if cache is not None else stored_cache
    if budget_factory is not None:
        ledger_budget = budget_factory(card.price_per_1000, budget, resumed)
    elif resumed is not None:
        ledger_budget = resumed.budget(card.price_per_1000, budget)
    else:
        ledger_budget = Budget(card.price_per_1000, budget)
    service = make_service(adapter, ledger_budget, cache=cache, card=card,
                           rate=resumed.learned_rate(card.requests_per_second)
                           if resumed is not None else None, require_budget=sends)
    trainer.service, trainer.folder = service, resumed
    session = Session(config, adapter, card, service, trainer, resumed,
                      Path(runs_root) if runs_root is not None else None, run_name)
    if start:
        session.start()
    return session


def run_summary(result: RunResult) -> dict[str, Any]:
    """A run's numbers, as `summary.json` holds them (NaN as None); billed images, dollars
    and wall time are the whole run's (all its parts), queries are this part's."""
    import math

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {k: clean(v) for k, v in {
        "test_accuracy": result.test_accuracy,
        "zero_shot_test_accuracy": result.zero_shot_accuracy,
        "probe_test_accuracy": result.probe_accuracy,
        "test_images": result.extra.get("test_images"),
        "early_stop": result.extra.get("early_stop", False),
        "best_val_accuracy": result.best_val_accuracy, "steps": result.steps,
        "best_step": result.extra.get("best_step"), "queries": result.extra["queries"],
        "billed_images": result.extra["billed_images"],
        "uncertain_images": result.extra.get("uncertain_images", 0),
        "uncertain_dollars": result.extra.get("uncertain_dollars", 0.0),
        "uncertain_reasons": result.extra.get("uncertain_reasons", {}),
        "dollars": result.extra["dollars"], "dollars_left": result.extra.get("dollars_left"),
        "wall_seconds": round(result.extra.get("wall_seconds", 0.0), 1),
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "stopped": result.stopped}.items()}


def train(config: RunConfig, progress: bool = False, **options: Any) -> RunResult:
    """`prepare(config, **options).run(progress)`: the one-call lower-level API."""
    return prepare(config, **options).run(progress)


@dataclass
class FittedProgram:
    """A learned program with its output head: predicts target classes through a black box."""

    config: RunConfig
    weights: NDArray[np.float32]
    head: OutputHead
    classes: list[str]

    @property
    def program(self) -> Program:
        c = self.config
        canvas = Canvas(c.canvas, c.window_size, c.window_top, c.window_left)
        return Program(canvas, c.program_resolution)

    async def predict_proba(self, service: QueryService,
                            images: NDArray[np.uint8]) -> NDArray[np.float64]:
        """(N, C) target-class scores for (N, h, w, 3) uint8 samples."""
        windows = self.program.canvas.embed(images)
        probs = await query_program(service, self.program, windows, self.weights)
        return self.head.scores(probs)


def load_run(path: Path | str) -> FittedProgram:
    """The learned program and head of the run folder at `path` (read only, not locked)."""
    return load_run_folder(RunFolder.open(Path(path), lock=False))


def load_run_folder(folder: RunFolder) -> FittedProgram:
    path = folder.path
    if not folder.checkpoint.exists():
        raise ConfigError(f"{path}: run has no checkpoint yet")
    config = folder.config()
    state, _, _ = load_state(folder.checkpoint, config)
    return FittedProgram(config, state.best_weights, state.best_head, state.classes)


def run_service(path: Path | str, budget: float | None = None,
                connection: dict[str, Any] | None = None, accept_version: str | None = None
                ) -> tuple[FittedProgram, QueryService, RunFolder]:
    """A finished run's program, and a query service with the run's card, cache and ledger:
    evaluations and predictions are paid like the run's own queries, recorded in its ledger
    and cached alike. `budget`: the most this use may spend, in dollars; default: what is
    left of the run's budget. `connection`: new values of `config.CONNECTION_FIELDS` for
    this use (ConfigError for any other field). The black box is held to the model version
    the run was pinned to, or to `accept_version` (then pinned instead; see `Adapter.pin`).
    The run folder is locked until the process ends or `folder.unlock()`."""
    folder = RunFolder.open(Path(path))
    fitted = load_run_folder(folder)
    adapter = open_adapter(with_connection(fitted.config, connection or {}))
    pin_adapter(adapter, folder, accept_version)
    keep_pins(folder, adapter)
    card, cache = run_settings(folder, adapter)
    check_card(card, fitted.config.canvas)
    stored = folder.record().get("limit")
    ledger = folder.budget(card.price_per_1000, None)
    if budget is not None:
        limit: float | None = ledger.spent + to_nano(budget) / NANO
    else:
        limit = stored
    ledger.limit = limit
    service = make_service(adapter, ledger, cache=cache, card=card,
                           rate=folder.learned_rate(card.requests_per_second))
    return fitted, service, folder
