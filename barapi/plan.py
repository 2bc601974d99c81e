"""Budget-shaped runs: the validation and test sizes and the training steps a budget pays for.

Without a plan, a run's validation and test splits are full-size and its epochs fixed, so a
small budget can be spent on training and validation before the test split is ever asked
(a run with no test accuracy). `plan_run` chooses, before anything is sent:

1. the test and validation sizes: enough for a test accuracy within `TEST_MARGIN`, but
   their queries (the zero-shot pass and the final test on the test split, a validation
   pass per epoch) take at most `EVALUATION_SHARE` of what the budget leaves after label
   mapping, and never fewer than `MIN_TEST_PER_CLASS` test images per class (or the whole
   test part); validation keeps the split's own ratio to test;
2. the training steps (`max_steps`, and the epochs they span) that the rest pays for;
3. when training needs less than the rest, larger test and validation parts again.

Every cost comes from `barapi.estimate.estimate`, so a plan and `barapi estimate` agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from barapi.budget import NANO, Budget
from barapi.cards import Card
from barapi.config import RunConfig
from barapi.errors import ConfigError
from barapi.estimate import Phase, estimate, step_sizes, total_steps

EVALUATION_SHARE = 0.3
"""Most of the budget (after label mapping) that validation and test may take when the
budget is too small for the configured run: enough for a test accuracy within about ±5
points on a binary task at a few dollars, while training keeps most of the money (our choice;
see docs/method.md, "Budget plans")."""

TEST_MARGIN = 0.05
"""Half-width of the 95% interval a plan aims at for a test accuracy near 80% (246 images);
a plan gives the test part more only when training needs less than the budget's rest."""

MIN_TEST_PER_CLASS = 20
"""Fewest test images per class a plan keeps (fewer: a 95% interval wider than ±15 points on
a binary task); a budget that cannot pay for them and one training step is refused."""


@dataclass(frozen=True)
class Plan:
    """The settings a budget pays for, and what they cost.

    Attributes:
        config: the run's settings with `val_size`, `test_size` and `max_steps`/`epochs` set.
        phases: `estimate` of `config` (dollars per phase, "total" last).
        n_val, n_test: validation and test images the run will query (images).
        steps: training steps (each: batch × (q + 1) images).
        shaped: False when the configured run already fitted the budget (nothing changed).
    """

    config: RunConfig
    phases: list[Phase]
    n_val: int
    n_test: int
    steps: int
    shaped: bool

    @property
    def dollars(self) -> float:
        return self.phases[-1].dollars

    def test_margin(self, accuracy: float = 0.5) -> float:
        """Half-width of the normal 95% interval of a test accuracy near `accuracy`
        measured on `n_test` images (a fraction; 0.5 is the widest)."""
        return 1.96 * math.sqrt(accuracy * (1 - accuracy) / max(self.n_test, 1))


def _cost(config: RunConfig, n_train: int, n_val: int, n_test: int, card: Card,
          per_request: int | None, label_images: int) -> int:
    """Nanodollars of the whole run."""
    phases = estimate(config, n_train, n_val, n_test, card, per_request, label_images)
    return Budget(card.price_per_1000).cost_nano(phases[-1].images)


def _largest(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
    """Largest n in [low, high] with fits(n), for fits monotone (true, then false); None if
    not even `low` fits."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def plan_run(config: RunConfig, n_train: int, n_val: int, n_test: int, n_classes: int,
             card: Card, budget: float, per_request: int | None = None,
             label_images: int = 0) -> Plan:
    """The largest run of `config` that `budget` dollars pay for, test accuracy included.

    `n_val` / `n_test` are the split's full validation and test parts (images); the result
    never asks for more than the config already caps them at. Raises ConfigError when the
    budget cannot pay for label mapping, `MIN_TEST_PER_CLASS` test images per class, a
    validation pass and one training step (it names the smallest budget that can)."""
    limit = Budget(card.price_per_1000, budget).limit_nano
    assert limit is not None

    def shaped(val: int, test: int, steps: int) -> RunConfig:
        if config.method != "bar":
            return config.model_copy(update={"val_size": val, "test_size": test})
        epochs = max(1, -(-steps // len(step_sizes(config, n_train))))
        return config.model_copy(update={"val_size": val, "test_size": test,
                                          "max_steps": steps, "epochs": epochs})

    def cost(val: int, test: int, steps: int) -> int:
        return _cost(shaped(val, test, steps), n_train, val, test, card, per_request,
                     label_images)

    def val_for(test: int) -> int:  # the split's own val:test ratio, one per class at least
        return max(min(n_classes, n_val), min(n_val, round(test * n_val / max(n_test, 1))))

    def phases_of(val: int, test: int, steps: int) -> list[Phase]:
        return estimate(shaped(val, test, steps), n_train, val, test, card, per_request,
                        label_images)

    full_steps = total_steps(config, n_train) if config.method == "bar" else 0
    if cost(n_val, n_test, full_steps) <= limit:
        return Plan(config, phases_of(n_val, n_test, full_steps), n_val, n_test, full_steps,
                    False)
    floor = min(n_test, MIN_TEST_PER_CLASS * n_classes)
    least = 1 if config.method == "bar" else 0
    if cost(val_for(floor), floor, least) > limit:
        cents = -(-cost(val_for(floor), floor, least) // (NANO // 100))  # rounded up: enough
        raise ConfigError(f"--budget ${budget:g} cannot pay for label mapping, "
                          f"{'one training step and ' if least else ''}a test of {floor} images "
                          f"({MIN_TEST_PER_CLASS} per class); the smallest such run costs "
                          f"${cents // 100:,}.{cents % 100:02d} (rounded up to the cent)")
    if config.method != "bar":  # nothing to train: the largest measurement that fits
        test = _largest(floor, n_test, lambda t: cost(val_for(t), t, 0) <= limit) or floor
        return Plan(shaped(val_for(test), test, 0), phases_of(val_for(test), test, 0),
                    val_for(test), test, 0, True)
    mapping = Budget(card.price_per_1000).cost_nano(phases_of(n_val, n_test, 1)[0].images)
    share = EVALUATION_SHARE * max(limit - mapping, 0)

    def evaluation(test: int) -> int:  # validation and test alone, at the configured steps
        images = phases_of(val_for(test), test, full_steps)[2].images
        return Budget(card.price_per_1000).cost_nano(images)

    goal = min(n_test, max(floor, math.ceil(1.96**2 * 0.8 * 0.2 / TEST_MARGIN**2)))
    test = _largest(floor, goal, lambda t: evaluation(t) <= share) or floor
    steps = _largest(1, full_steps, lambda s: cost(val_for(test), test, s) <= limit) or 1
    if steps == full_steps:  # training is cheap: give the rest to the measurement
        test = _largest(test, n_test, lambda t: cost(val_for(t), t, steps) <= limit) or test
    val = val_for(test)
    return Plan(shaped(val, test, steps), phases_of(val, test, steps), val, test, steps, True)
