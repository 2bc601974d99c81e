"""Python API: assemble a run (adapter, query service, trainer) and read finished runs back.

    >>> from barapi import api
    >>> result = api.train(api.make_config(epochs=1), runs_root="runs")
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.adapters.registry import create_adapter
from barapi.budget import Budget
from barapi.cache import ProbabilityCache
from barapi.cards import load_card
from barapi.checkpoint import load_checkpoint
from barapi.config import RunConfig, make_config
from barapi.data import Split, load_dataset, stratified_split
from barapi.errors import ConfigError
from barapi.labelmap import LabelMap, check_fits
from barapi.program import Canvas, Program
from barapi.query import QueryService
from barapi.ratelimit import RateLimiter
from barapi.report import save_curves_png, save_program_png
from barapi.run_folder import RunFolder
from barapi.trainer import RunResult, Trainer, evaluate, query_program, run_sync

__all__ = ["FittedProgram", "RunFolder", "Session", "evaluate", "load_run", "load_split", "make_config",
           "make_service", "open_adapter", "prepare", "train"]


def open_adapter(config: RunConfig) -> Adapter:
    return create_adapter(config.provider, model=config.model, device=config.device,
                          input_size=config.input_size)


def load_split(config: RunConfig) -> Split:
    return stratified_split(load_dataset(config.dataset), config.val_fraction,
                            config.test_fraction, config.seed, config.per_class, config.rebalance)


def make_service(adapter: Adapter, budget: float | None = None, ledger: Path | None = None,
                 cache: ProbabilityCache | None = None) -> QueryService:
    card = load_card(adapter.card)
    return QueryService(adapter, Budget(card.price_per_1000, budget, ledger), cache,
                        RateLimiter(card.requests_per_second),
                        max_batch=card.max_images_per_request)


@dataclass
class Session:
    """A validated, assembled run: nothing has been queried yet."""

    config: RunConfig
    adapter: Adapter
    service: QueryService
    trainer: Trainer
    folder: RunFolder | None

    def run(self, progress: bool = False) -> RunResult:
        self.trainer.progress = progress
        result = run_sync(self.trainer)
        stats = self.service.stats
        result.extra.update(queries=stats.images, billed_images=stats.billed_images,
                            cached_images=stats.cached_images, dollars=self.service.budget.spent)
        if self.folder is not None:
            task = self.trainer.task
            save_program_png(self.folder.path / "program.png", task.program, result.weights,
                             task.windows["val"][0])
            save_curves_png(self.folder.path / "curves.png", self.folder.metrics())
        return result


def prepare(config: RunConfig, *, adapter: Adapter | None = None, split: Split | None = None,
            runs_root: Path | str | None = None, resume: Path | str | None = None,
            budget: float | None = None, cache: ProbabilityCache | None = None) -> Session:
    """Validate and assemble a run of `config` (or the run folder `resume`).

    Every check on the input (data, model, geometry, label map) happens here, before a run
    folder is created or a query is sent. `adapter` replaces the provider named in the
    config (bring your own black box); `split` replaces the dataset. Without `runs_root` or
    `resume` nothing is written to disk.
    """
    resumed = RunFolder.open(Path(resume)) if resume is not None else None
    if resumed is not None:
        config = resumed.config()
    split = split or load_split(config)
    adapter = adapter or open_adapter(config)
    check_fits(split.train.n_classes, config.m, adapter.n_sources)
    make_gradient = None
    if config.method == "ar":
        from barapi.whitebox import autograd_gradient, check_white_box

        check_white_box(adapter)
        make_gradient = functools.partial(autograd_gradient, adapter)
    trainer = Trainer(config, QueryService(adapter), split, None, make_gradient)
    folder = resumed or (RunFolder.create(Path(runs_root), config) if runs_root else None)
    service = make_service(adapter, budget, folder.ledger if folder else None, cache)
    trainer.service, trainer.folder = service, folder
    return Session(config, adapter, service, trainer, folder)


def train(config: RunConfig, progress: bool = False, **options: Any) -> RunResult:
    """`prepare(config, **options).run(progress)`: the one-call lower-level API."""
    return prepare(config, **options).run(progress)


@dataclass
class FittedProgram:
    """A learned program with its label map: predicts target classes through a black box."""

    config: RunConfig
    weights: NDArray[np.float32]
    label_map: LabelMap
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
        return self.label_map.scores(probs)


def load_run(path: Path | str) -> FittedProgram:
    folder = RunFolder.open(Path(path))
    if not folder.checkpoint.exists():
        raise ConfigError(f"{path}: run has no checkpoint yet")
    config = folder.config()
    arrays, meta = load_checkpoint(folder.checkpoint)
    label_map = LabelMap(arrays["label_map"], meta["n_sources"])
    return FittedProgram(config, arrays["best_weights"], label_map, meta["classes"])

