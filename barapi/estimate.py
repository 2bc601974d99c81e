"""Cost of a run before any money moves: images, requests, dollars and wall time per phase.

Counts follow the trainer exactly: frequency mapping or fitting a linear head queries every
training image once under the blank program; each training step queries its minibatch under q + 1 (or 2q)
program variants; evaluation queries the test split for the zero-shot mapping, the
validation split at step 0, every `eval_every` steps and at the end, and the test split once
more for the selected program. Requests are what the query layer packs: at most the card's
images per request, within chunks of `EVAL_CHUNK` images for mapping and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from barapi.adapters.base import AnswerForm
from barapi.budget import NANO, Budget
from barapi.cards import Card
from barapi.config import RunConfig

EVAL_CHUNK = 512
"""Images per query-layer call when mapping and evaluating (the trainer uses it too)."""


@dataclass(frozen=True)
class Phase:
    name: str
    images: int
    requests: int
    dollars: float
    seconds: float | None


def _requests(images: int, per_request: int, chunk: int | None = None) -> int:
    if chunk is None:
        return math.ceil(images / per_request)
    full, rest = divmod(images, chunk)
    return full * math.ceil(chunk / per_request) + math.ceil(rest / per_request)


def _phase(name: str, images: int, requests: int, card: Card) -> Phase:
    dollars = Budget(card.price_per_1000).cost_nano(images) / NANO
    seconds = requests / card.requests_per_second if card.requests_per_second > 0 else None
    return Phase(name, images, requests, dollars, seconds)


def step_sizes(config: RunConfig, n_train: int) -> list[int]:
    """Samples in each training step of one epoch (the last may be partial)."""
    full, rest = divmod(n_train, config.batch)
    return [config.batch] * full + ([rest] if rest else [])


def total_steps(config: RunConfig, n_train: int) -> int:
    """Training steps of a run: `epochs` passes over the split, cut at `max_steps`."""
    steps = len(step_sizes(config, n_train)) * config.epochs
    return steps if config.max_steps is None else min(steps, config.max_steps)


def validation_count(config: RunConfig, n_train: int) -> int:
    """Validations in a run: at step 0, every `eval_every` steps, and after the last step."""
    steps_per_epoch = len(step_sizes(config, n_train))
    total = total_steps(config, n_train)
    every = config.eval_every or steps_per_epoch
    return 1 + sum(1 for s in range(1, total + 1) if s % every == 0 or s == total)


def estimate(config: RunConfig, n_train: int, n_val: int, n_test: int, card: Card,
             per_request: int | None = None, label_images: int = 0) -> list[Phase]:
    """Phases "label mapping", "training", "evaluation" (and their "total").

    `per_request`: images per request when the adapter allows fewer than the card;
    `label_images`: images (one request each) asked to learn the black box's labels (Azure's
    tags), counted with the label mapping.
    """
    m = min(card.max_images_per_request, per_request or card.max_images_per_request)
    mapping = mapping_images(config, n_train)
    phases = [_phase("label mapping", mapping + label_images,
                     _requests(mapping, m, EVAL_CHUNK) + label_images, card)]
    train_images = train_requests = 0
    if config.method == "bar":
        variants = config.estimator().n_evaluations
        sizes = step_sizes(config, n_train)
        for step in range(total_steps(config, n_train)):
            size = sizes[step % len(sizes)]
            train_images += size * variants
            train_requests += _requests(size * variants, m)
    phases.append(_phase("training", train_images, train_requests, card))
    evals: list[int] = []
    if config.evaluate:
        evals.append(n_test)  # zero-shot mapping on the test split
        if config.method != "zero-shot":
            evals += [n_val] * validation_count(config, n_train) + [n_test]
    phases.append(_phase("evaluation", sum(evals),
                         sum(_requests(n, m, EVAL_CHUNK) for n in evals), card))
    total_seconds = [p.seconds for p in phases]
    phases.append(Phase("total", sum(p.images for p in phases), sum(p.requests for p in phases),
                        sum(p.dollars for p in phases),
                        None if None in total_seconds else sum(s or 0.0 for s in total_seconds)))
    return phases


def mapping_images(config: RunConfig, n_train: int) -> int:
    """The unprogrammed training split is queried once for a frequency map or a linear head."""
    return n_train if config.mapping == "frequency" or config.head == "linear" else 0


def reach(config: RunConfig, n_train: int, budget_images: int) -> tuple[int, float]:
    """(training steps, epochs) that `budget_images` pays for after mapping, at this config."""
    variants = config.estimator().n_evaluations
    left = budget_images - mapping_images(config, n_train)
    sizes = step_sizes(config, n_train)
    steps = 0
    while left >= sizes[steps % len(sizes)] * variants:
        left -= sizes[steps % len(sizes)] * variants
        steps += 1
        if steps > 10_000_000:
            break
    return steps, steps / len(sizes)


def as_dicts(phases: list[Phase]) -> list[dict[str, object]]:
    return [asdict(p) for p in phases]


COARSE_THRESHOLD = 0.1
"""A threshold (in score units) above which an API's left-out scores make its answers coarse:
a concept under it shows no change at all (Google label detection's ~0.5; not Rekognition's
0.01, which barapi asks for)."""


def coarse_warning(form: AnswerForm, who: str) -> str | None:
    """One line when `form`'s answers are coarse enough that most finite differences will be
    0 (rounded to a few levels, or cut at a threshold of at least COARSE_THRESHOLD), saying
    what barapi does about it; None otherwise."""
    if form.levels is None and (form.threshold or 0.0) < COARSE_THRESHOLD:
        return None
    return (f"warning: {who} {form.describe()}: a small change of the program changes an answer "
            f"only where a score crosses a level or the threshold, so many finite differences "
            f"will be 0 and the linear probe sees little. barapi asks for every score the API "
            f"gives, keeps its smoothing radius (4× larger did worse on 5-level answers), says "
            f"after the first epoch how many differences saw no change; a program can still "
            f"learn there: docs/results.md, \"Coarse answers\"")
