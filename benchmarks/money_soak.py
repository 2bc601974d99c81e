"""Money soak: randomized budgets, concurrency and faults against the loopback emulators,
counting what the server billed (issues 15, 29 and 32).

Every run checks the two money invariants against the emulator's own count of billed images:
the server's bill never exceeds the budget, and barapi's ledger never counts fewer images than
the server billed (equal where every outcome was known: no lost answers, outages or kills).
Each kind adds its own checks (`Outcome.violations`); any violation fails the soak.

Kinds of run, drawn at random:
- `service`: a QueryService (budget, ledger, cache, adaptive limiter, retries) asks a random
  number of batches through one provider's adapter against its emulator (`PROVIDERS`:
  Clarifai over gRPC and Azure over HTTP in most runs; AWS Rekognition through boto3, Google
  Cloud Vision SafeSearch and label detection, and an Open Inference Protocol server priced as
  a metered deployment, in the others) until done or out of budget, at a random concurrency,
  under random faults that provider's emulator supports (`random_faults`): billed-then-lost
  answers, throttling below the rate barapi is told, outages, failed inputs (Clarifai's
  MIXED_STATUS, an error inside a Google batch), invalid answers, a quota (AWS, Google),
  answers that leave out a concept or tag, concepts, tags or labels renamed (in the answers,
  or in the Clarifai app). Each row served or cached must be what the emulator answers for
  that image after the provider's own transform, computed with the emulator's and adapter's
  own functions (`Rig.expected`: Rekognition's labels under MinConfidence read as the
  threshold, SafeSearch's levels, label detection's floor and top-k fill, OIP's
  probabilities of the resized image). Its cache folder may be poisoned before the run
  (planted pickles whose loading would make a marker folder, a row naming a file outside the
  cache, tampered float records: NaN, out of range, all zero, wrong length, garbage) under
  the very keys the run asks for, or its cache.db damaged (header, index page, garbage,
  truncated). Checked: no marker made, no file touched; every row served and every row the
  cache holds afterwards is what the box answers for that image (so no incomplete or
  renamed-away answer is served or kept); a damaged cache stops the run with CacheUnusable
  and $0 billed.
- `kill9`: `barapi run` against the Clarifai emulator, killed with SIGKILL mid-run, then
  resumed without --budget (the folder remembers it).
- `concurrent`: two `barapi run --resume` of one folder started together (one must refuse).
- `version`: `barapi run` stopped (SIGKILL, or its budget), then the emulator publishes a new
  model version, keeping the old one served or not. Kept: the resume goes on, and nothing
  is billed on the new version. Gone: the resume is refused in one line naming both versions
  and `--accept-version NEW`, with $0 billed; a resume with `--accept-version NEW` goes on.

    python -m benchmarks.money_soak [--runs 320] [--cli-runs 30] [--seed 0]

Writes benchmarks/results/money_soak.json. The emulators answer from a numpy model, so that
the money logic, not a network's speed, is what is soaked. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.adapters.base import Adapter
from barapi.adapters.boxes import MODERATION
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.adapters.google_vision import MAX_RESULTS, SAFE_SEARCH, GoogleVisionAdapter
from barapi.adapters.oip import OIPAdapter
from barapi.adapters.rekognition import RekognitionAdapter
from barapi.api import default_cache
from barapi.budget import Budget, read_ledger
from barapi.cache import ProbabilityCache, cache_identity, encode_row, image_keys
from barapi.cards import Card, load_card
from barapi.emulate import (
    AzureEmulator,
    ClarifaiEmulator,
    ClarifaiEmulatorThread,
    Counters,
    Faults,
    GoogleVisionEmulator,
    OIPEmulator,
    RekognitionEmulator,
    box_version,
    concept_scores,
)
from barapi.emulate.rekognition import moderation_labels
from barapi.errors import BarapiError
from barapi.keys import Secret
from barapi.query import QueryService, invalid_rows
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy
from benchmarks.common import markdown_table, write_results
from benchmarks.loopback import NumpyModel

KEY = "soak-emulator-key"  # the loopback emulators' own key, not a secret
TAGS = ["negative", "positive"]
CACHE_STATES = ["clean"] * 6 + ["poisoned"] * 3 + ["corrupt"]
"""What a service run's cache folder holds before it starts, drawn uniformly from this list."""
DAMAGES = ["header", "index page", "garbage", "truncated"]
CLI_KINDS = ["kill9", "concurrent", "version"]


@dataclass
class Outcome:
    kind: str
    provider: str
    budget: float
    price_per_1000: float
    faults: dict[str, Any]
    server_billed: int
    ledger_images: int
    uncertain_images: int
    ledger_dollars: float
    ended: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    """What the kind's own checks found wrong (see the module's docstring); [] when none."""

    @property
    def server_dollars(self) -> float:
        return self.server_billed * self.price_per_1000 / 1000

    @property
    def over_budget(self) -> bool:
        return self.server_dollars > self.budget + 1e-9

    @property
    def ledger_short(self) -> bool:
        return self.ledger_images < self.server_billed

    @property
    def certain_mismatch(self) -> bool:
        """Every outcome known, yet ledger and server disagree."""
        return self.uncertain_images == 0 and self.ledger_images != self.server_billed

    @property
    def failed(self) -> bool:
        return self.over_budget or self.ledger_short or self.certain_mismatch or bool(self.violations)


def random_faults(rng: random.Random, rate: float, provider: str) -> Faults:
    """Faults the provider's emulator supports, drawn: transport faults (throttling below
    `rate`, outages, billed-then-lost answers), failed inputs where the API fails one image of
    a batch, invalid answers, a quota (AWS and Google), and the provider's words (omitted and
    renamed concepts or tags; renamed labels for Google label detection, where any
    `answer_names` means "rename the labels the first answer bound": see `google_labels_rig`)."""
    if provider in ("clarifai", "azure"):
        if provider == "clarifai":
            answer_names = rng.choice([{}, {}, {}, {"gore": "sangre", "drug": "droga"},
                                       {"safe": "sûr"}])
            concept_names = rng.choice([{}, {}, {}, {"explicit": "nsfw", "gore": "blood"}])
        else:
            answer_names, concept_names = rng.choice([{}, {}, {}, {"negative": "négatif"}]), {}
        return Faults(max_rps=rng.choice([0.0, 0.0, rate / 2, rate * 0.8]),
                      unavailable_every=rng.choice([0, 0, 0, 7, 13]),
                      fail_input_every=rng.choice([0, 0, 10]),
                      drop_every=rng.choice([0, 0, 3, 5, 11]),
                      bad_answer_every=rng.choice([0, 0, 0, 0, 37]),
                      omit_every=rng.choice([0, 0, 0, 2, 9, 31]),
                      answer_names=answer_names, concept_names=concept_names)
    faults = Faults(max_rps=rng.choice([0.0, 0.0, rate / 2, rate * 0.8]),
                    unavailable_every=rng.choice([0, 0, 0, 7, 13]),
                    drop_every=rng.choice([0, 0, 3, 5, 11]))
    if provider != "oip":  # an inference server of one's own: no quota, no bad answers
        faults.bad_answer_every = rng.choice([0, 0, 0, 0, 37])
        faults.quota_images = rng.choice([None, None, None, rng.randint(1, 100)])
    if provider.startswith("google"):  # an image can fail inside a batch (responses[i].error)
        faults.fail_input_every = rng.choice([0, 0, 10])
    if provider == "google-labels":
        faults.answer_names = rng.choice([{}, {"bound": "renamed"}])
    return faults


# --- a poisoned or damaged cache folder ----------------------------------------------------------

class Planted:
    """A pickled value whose loading makes the folder `marker`: what a planted entry in a
    shared cache folder would run (python-diskcache#357)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


VICTIM_TEXT = "a file outside the cache: never read, never deleted"


def poison(folder: Path, keys: Sequence[str], k: int, rng: random.Random, markers: Path,
           victim: Path) -> tuple[dict[str, int], set[str]]:
    """Plant, the way plain diskcache stores values, bad entries under a random share of
    `keys` (answers of `k` values): pickles (one runs code when loaded, one is an answer as
    barapi once stored it), tampered float32 records, and a row naming the file `victim`.
    Returns how many of each kind were planted, and under which keys."""
    import diskcache

    tampered = {"nan": encode_row(np.full(k, np.nan)), "above 1": encode_row(np.full(k, 2.0)),
                "all zero": encode_row(np.zeros(k)), "wider": encode_row(np.full(k + 1, 0.1)),
                "narrower": encode_row(np.full(k - 1, 0.5)),  # k = 1: an empty record, never
                # a valid one-value row (0.5 is a SafeSearch level, or a one-label score)
                "truncated": encode_row(np.full(k, 0.5))[:-2],
                "garbage": rng.randbytes(rng.randint(0, 64))}
    kinds = ["code", "old pickle", "file", *tampered]
    chosen = rng.sample(list(keys), max(1, round(len(keys) * rng.uniform(0.3, 1.0))))
    counts = dict.fromkeys(kinds, 0)
    victim.write_text(VICTIM_TEXT)
    with diskcache.Cache(str(folder)) as raw:
        for n, key in enumerate(chosen):
            what = kinds[n % len(kinds)] if n < len(kinds) else rng.choice(kinds)
            counts[what] += 1
            if what == "code":
                raw.set(key, Planted(markers / f"m{n}"))
            elif what == "old pickle":
                raw.set(key, np.full(k, 1 / k, np.float32))
            elif what == "file":  # plain diskcache keeps a large value in a file its row names
                raw.set(key, b"\0" * 40_000)
            else:
                raw.set(key, tampered[what])
    if counts["file"]:
        with sqlite3.connect(folder / "cache.db") as con:
            con.execute("UPDATE Cache SET filename = ? WHERE filename IS NOT NULL", (str(victim),))
    return counts, set(chosen)


async def damage(folder: Path, how: str) -> None:
    """Fill a cache at `folder` with answers, then damage its cache.db: `how` is one of
    DAMAGES (the file's header page or its key index's root page overwritten, the whole
    file replaced by random bytes, or cut in half)."""
    cache = ProbabilityCache(folder)
    await cache.set_many([f"k{i}" for i in range(300)], np.full((300, 5), 0.2, np.float32))
    cache.close()
    database = folder / "cache.db"
    with sqlite3.connect(database) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,), (size,) = (con.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                                        "'Cache_key_raw'").fetchone(),
                            con.execute("PRAGMA page_size").fetchone())
    data = bytearray(database.read_bytes())
    if how in ("header", "index page"):
        start = 0 if how == "header" else (root - 1) * size
        data[start:start + size] = b"\xff" * size
    elif how == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:
        data = data[:len(data) // 2]
    database.write_bytes(bytes(data))


def wrong_rows(rows: NDArray[np.float32], expected: NDArray[np.float32], kind: str) -> int:
    """How many of (N, K) `rows` are invalid answers or not the box's `expected` answers
    (a column left at zero for a renamed or omitted concept, a tampered record served)."""
    bad = invalid_rows(rows, kind) | ~np.isclose(rows, expected, rtol=1e-4, atol=1e-6).all(axis=1)
    return int(bad.sum())


async def cached_wrong(folder: Path, keys: list[str], expected: NDArray[np.float32],
                       kind: str, planted: set[str]) -> int:
    """How many rows a fresh look at the cache at `folder` holds for `keys` that a lookup
    would serve (they decode and are valid) yet are not the box's `expected` (len(keys), K)
    answers (an incomplete answer kept, a column left at zero), or that barapi wrote invalid
    (only entries `planted` under their key before the run may be invalid: they are misses)."""
    cache = ProbabilityCache(folder)
    try:
        rows = await cache.get_many(keys, expected.shape[1])
    finally:
        cache.close()
    held = [i for i, row in enumerate(rows) if row is not None]
    if not held:
        return 0
    found = np.stack([row for row in rows if row is not None]).astype(np.float32)
    invalid = invalid_rows(found, kind)
    differs = ~np.isclose(found, expected[held], rtol=1e-4, atol=1e-6).all(axis=1)
    ours = np.array([keys[i] not in planted for i in held])
    return int((~invalid & differs).sum() + (invalid & ours).sum())


# --- service runs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a service run of one provider draws from: its card (with `fields` set as
    ``--card-set`` would), the request rates barapi is told, the largest budget (dollars) and
    batch (images) drawn."""

    card: str
    rates: tuple[float, ...]
    max_budget: float
    max_batch: int
    fields: tuple[tuple[str, float], ...] = ()

    def load(self) -> Card:
        """The card, as `barapi run --card-set` would make it."""
        return load_card(self.card, **dict(self.fields))


OIP_PRICE = 1.0
"""Dollars per 1,000 images of the soak's OIP deployment: a metered one (the ``oip`` card is
free: a server of one's own), so that money is at stake; set as ``--card-set
price_per_1000=1`` sets it."""
PLANS = {
    "clarifai": Plan("clarifai-moderation", (20.0, 40.0), 0.3, 60),
    "azure": Plan("azure-s0-nostore", (20.0,), 0.08, 8),
    # the card's 5 requests/s is a conservative guess for a real account (aws-rekognition.toml);
    # against the emulator barapi is told 20, so that throttling still happens below it
    "rekognition": Plan("aws-rekognition", (20.0,), 0.05, 8),
    "google-safe-search": Plan("google-vision-safesearch", (30.0,), 0.3, 40),
    "google-labels": Plan("google-vision-labels", (30.0,), 0.3, 40),
    "oip": Plan("oip", (20.0, 40.0), 0.15, 60,
                (("price_per_1000", OIP_PRICE), ("requests_per_second", 20.0))),
}
PROVIDERS = ["clarifai"] * 6 + ["azure"] * 3 + ["rekognition", "google-safe-search",
                                                "google-labels", "oip"]
"""A service run's provider, drawn uniformly from this list: the old two keep most runs."""
AWS_KEY_ID, AWS_SECRET = "AKIDBARAPISOAK", "soak-emulator-secret"  # the emulator's own, not secrets
REKOGNITION_LABELS = ["Explicit", "Explicit Nudity", "Non-Explicit Nudity of Intimate parts and "
                      "Kissing", "Non-Explicit Nudity", "Drugs & Tobacco", "Products", "Violence",
                      "Graphic Violence", "Gambling"]
"""Rekognition columns drawn from: labels the emulator answers (each flagged concept's level-1
and level-2 label) and one it never does (Gambling: always the threshold)."""


@dataclass
class Rig:
    """One provider's emulator (started) and the adapter that asks it.

    `expected(images)`: the (N, K) rows barapi should serve for (N, H, W, 3) images, computed
    with the emulator's and the adapter's own functions, outside the HTTP path (blocking: run
    it in a thread). `rename`: called after the first answer bound names to ids (Azure's tags,
    Google's label mids), to rename them in the answers from then on; None: nothing renamed."""

    adapter: Any
    counters: Counters
    stop: Callable[[], Awaitable[None]]
    expected: Callable[[NDArray[np.uint8]], NDArray[np.float32]]
    rename: Callable[[], None] | None = None


def stopper(server: Any) -> Callable[[], Awaitable[None]]:
    """An async stop for an emulator run as a context manager."""
    async def stop() -> None:
        server.__exit__()

    return stop


async def clarifai_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                       first: NDArray[np.uint8]) -> Rig:
    """PostModelOutputs over gRPC: the box's concepts, folded i mod K."""
    emulator = ClarifaiEmulator(model, KEY, faults)
    port = await emulator.start()
    adapter = ClarifaiAdapter(key=Secret(KEY), endpoint=f"127.0.0.1:{port}", insecure=True,
                              timeout=5.0)
    return Rig(adapter, emulator.counters, emulator.stop,
               lambda x: asyncio.run(concept_scores(model, x, len(adapter.labels))))


async def azure_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                    first: NDArray[np.uint8]) -> Rig:
    """Custom Vision over HTTP: two tags; `faults.answer_names` renames them once the first
    answer bound them to their ids."""
    renames, faults.answer_names = dict(faults.answer_names), {}
    azure = AzureEmulator(model, KEY, TAGS, faults).__enter__()
    adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS, timeout=5.0,
                                       endpoint=f"http://127.0.0.1:{azure.port}")

    def rename() -> None:
        faults.answer_names = renames

    return Rig(adapter, azure.counters, stopper(azure),
               lambda x: asyncio.run(concept_scores(model, x, len(TAGS))),
               rename if renames else None)


async def rekognition_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                          first: NDArray[np.uint8]) -> Rig:
    """DetectModerationLabels through boto3 (SigV4 checked), at a drawn MinConfidence and
    columns; a row's label left out reads as the threshold (the adapter's `_read`)."""
    import boto3

    emulator = RekognitionEmulator(model, {AWS_KEY_ID: AWS_SECRET}, concepts=MODERATION,
                                   faults=faults).__enter__()
    emulator.throttle_code = rng.choice(["ThrottlingException",
                                         "ProvisionedThroughputExceededException"])
    labels = rng.choice([None, rng.sample(REKOGNITION_LABELS, rng.randint(1, 4))])
    session = boto3.session.Session(aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
                                    region_name="us-east-1")
    adapter = RekognitionAdapter(region="us-east-1", labels=labels, timeout=5.0, session=session,
                                 endpoint=f"http://127.0.0.1:{emulator.port}",
                                 min_confidence=rng.choice([1.0, 20.0, 50.0]))

    def expected(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        rows = []
        for image in x:  # one image per call, as the emulator answers them
            scores = asyncio.run(concept_scores(emulator.model, image[None], len(MODERATION)))[0]
            answer = {"ModerationLabels": moderation_labels([float(v) for v in scores], MODERATION,
                                                            adapter.min_confidence),
                      "ModerationModelVersion": emulator.version}
            rows.append(adapter._read(answer, image))
        return np.stack(rows).astype(np.float32)

    return Rig(adapter, emulator.counters, stopper(emulator), expected)


async def google_safe_search_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                                 first: NDArray[np.uint8]) -> Rig:
    """SafeSearch: the box's moderation concepts as five likelihoods, read as levels."""
    emulator = GoogleVisionEmulator(model, None, KEY, faults).__enter__()
    labels = rng.choice([[], rng.sample(SAFE_SEARCH, rng.randint(1, 4))])
    adapter = GoogleVisionAdapter("safe-search", key=Secret(KEY), labels=labels, timeout=5.0,
                                  endpoint=f"http://127.0.0.1:{emulator.port}")

    def expected(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        return np.stack([adapter._read_safe_search(
            {"safeSearchAnnotation": emulator._safe_search(model, image, False)})
            for image in x]).astype(np.float32)

    return Rig(adapter, emulator.counters, stopper(emulator), expected)


async def google_labels_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                            first: NDArray[np.uint8]) -> Rig:
    """Label detection from the box's classes: columns some labels that the run's `first`
    image is answered with (bound to their mids by its answer) and some drawn at random
    (mostly left out: the floor, or the lowest score of a full answer). A non-empty
    `faults.answer_names` asks for every label the first answer bound to be renamed in the
    answers after it (the names are only known then); `faults.answer_names` then says which."""
    rename_bound, faults.answer_names = bool(faults.answer_names), {}
    emulator = GoogleVisionEmulator(None, model, KEY, faults).__enter__()
    answered = [a["description"] for a in
                await asyncio.to_thread(emulator._labels, model, first, MAX_RESULTS, False)]
    labels = list(dict.fromkeys([*rng.sample(answered, min(len(answered), rng.randint(1, 3))),
                                 *rng.sample(list(model.labels), rng.randint(1, 2))]))
    adapter = GoogleVisionAdapter("labels", key=Secret(KEY), labels=labels, timeout=5.0,
                                  endpoint=f"http://127.0.0.1:{emulator.port}")
    by_description = {str(name).casefold(): str(name) for name in model.labels}

    def rename() -> None:
        bound = adapter.pinned().get("mids", {})
        faults.answer_names = {by_description[label.casefold()]: f"{label} (renamed)"
                               for label in bound}

    def expected(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        renamed, emulator.faults.answer_names = emulator.faults.answer_names, {}
        try:  # the box's own names: a column not bound yet binds by them, as a fresh run would
            return np.stack([adapter._read_labels(
                {"labelAnnotations": emulator._labels(model, image, MAX_RESULTS, False)})
                for image in x]).astype(np.float32)
        finally:
            emulator.faults.answer_names = renamed

    return Rig(adapter, emulator.counters, stopper(emulator), expected,
               rename if rename_bound else None)


async def oip_rig(rng: random.Random, model: NumpyModel, faults: Faults,
                  first: NDArray[np.uint8]) -> Rig:
    """An Open Inference Protocol server of a few-output box taking a drawn input side (the
    adapter resizes the 16 px images to it): the box's probabilities of what it was sent."""
    box = NumpyModel(n_sources=rng.choice([2, 5, 10]))
    emulator = OIPEmulator({"box": box}, side=rng.choice([8, 16, 32]), faults=faults).__enter__()
    adapter = OIPAdapter("box", endpoint=f"http://127.0.0.1:{emulator.port}", labels=[], given={},
                         timeout=5.0)

    def expected(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        assert adapter.spec is not None
        tensor = adapter.spec.tensor(x)  # what the adapter sends, as the server decodes it
        return np.asarray(asyncio.run(box.predict_proba(tensor.astype(np.uint8))),
                          dtype=np.float32)

    return Rig(adapter, emulator.counters, stopper(emulator), expected)


RIGS: dict[str, Callable[[random.Random, NumpyModel, Faults, NDArray[np.uint8]],
                         Awaitable[Rig]]] = {
    "clarifai": clarifai_rig, "azure": azure_rig, "rekognition": rekognition_rig,
    "google-safe-search": google_safe_search_rig, "google-labels": google_labels_rig,
    "oip": oip_rig}


async def service_run(rng: random.Random, folder: Path, model: NumpyModel,
                      cache_state: str | None = None, faults: Faults | None = None,
                      provider: str | None = None, budget: float | None = None) -> Outcome:
    """One randomized run of the query layer. `cache_state` ("clean", "poisoned",
    "corrupt"), `faults`, `provider` (one of PLANS) and `budget` (dollars) are drawn unless
    given (tests pin them)."""
    provider = provider or rng.choice(PROVIDERS)
    plan = PLANS[provider]
    card = plan.load()
    card_rate = rng.choice(plan.rates)
    drawn = random_faults(rng, card_rate, provider)
    faults = faults or drawn
    drawn_budget = round(rng.uniform(0.0, plan.max_budget), 4)
    budget = drawn_budget if budget is None else budget
    batches = [rng.randint(1, plan.max_batch) for _ in range(rng.randint(1, 6))]
    concurrency = rng.choice([1, 2, 4, 8])
    cache_state = cache_state or rng.choice(CACHE_STATES)
    how = rng.choice(DAMAGES)
    ledger, cache_dir, markers = folder / "ledger.jsonl", folder / "cache", folder / "markers"
    markers.mkdir()
    start = time.monotonic()
    images = [np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (n, 16, 16, 3),
                                                                     dtype=np.uint8)
              for n in batches]
    extra: dict[str, Any] = {"concurrency": concurrency, "images_asked": sum(batches),
                             "cache": cache_state}
    violations: list[str] = []
    renames = dict(faults.answer_names)
    rig = await RIGS[provider](rng, model, faults, images[0][0])
    adapter = rig.adapter
    service: QueryService | None = None
    keys: list[list[str]] = []
    planted: set[str] = set()
    try:
        await adapter.ensure_checked()  # free: settles the identity the cache keys hold
        k = adapter.n_sources
        keys = [image_keys(cache_identity(adapter), x) for x in images]
        if cache_state == "poisoned":
            extra["planted"], planted = poison(cache_dir, [key for each in keys for key in each],
                                               k, rng, markers, folder / "precious.txt")
        elif cache_state == "corrupt":
            extra["damage"] = how
            await damage(cache_dir, how)
        cache = default_cache(card, cache_dir=cache_dir)  # as the CLI and the API open it
        service = QueryService(
            adapter, Budget(card.price_per_1000, budget, ledger), cache, RateLimiter(card_rate),
            RetryPolicy(attempts=8, base=0.01, cap=0.2, deadline=30, input_attempts=6),
            max_batch=card.max_images_per_request, max_concurrency=concurrency)
        if rig.rename is not None:  # the first answer binds the names, then they change
            await service.predict_proba(images[0][:1])
            rig.rename()
        results = await asyncio.gather(*(service.predict_proba(x) for x in images),
                                       return_exceptions=True)
        ended, why = first_error(results)
    except BarapiError as exc:
        ended, why, results = type(exc).__name__, str(exc), []
    finally:
        if service is not None and service.cache is not None:
            service.cache.close()
        await adapter.aclose()
        await rig.stop()
    counters = rig.counters
    expected = [await asyncio.to_thread(rig.expected, x) for x in images]
    served = [(r, e) for r, e in zip(results, expected, strict=False) if isinstance(r, np.ndarray)]
    if why:
        extra["error"] = why[:300]
    extra["bad_rows_served"] = sum(wrong_rows(r, e, adapter.answers) for r, e in served)
    extra["markers"] = len(list(markers.iterdir()))
    if cache_state == "corrupt":
        extra["bad_rows_cached"] = 0
        if ended != "CacheUnusable" or counters.billed_images:
            violations.append(f"damaged cache.db ({how}): ended {ended} with "
                              f"{counters.billed_images} images billed (expected CacheUnusable, $0)")
    else:
        extra["bad_rows_cached"] = await cached_wrong(
            cache_dir, [key for each in keys for key in each], np.concatenate(expected),
            adapter.answers, planted)
    if service is not None:
        extra.update(throttles=service.limiter.throttles, invalid_answers=service.stats.invalid_answers,
                     failed_inputs=service.stats.failed_inputs,
                     bad_entries=service.cache.bad_entries if service.cache is not None else 0)
    victim = folder / "precious.txt"
    if cache_state == "poisoned" and not (victim.is_file() and victim.read_text() == VICTIM_TEXT):
        violations.append("a planted row's file outside the cache was deleted or changed")
    if (renames or faults.concept_names) and not faults.omit_every and "answered without" in why:
        violations.append(f"renamed concepts or tags read as missing: {why}")
    for what in ("markers", "bad_rows_served", "bad_rows_cached"):
        if extra[what]:
            violations.append(f"{what}: {extra[what]}")
    totals = read_ledger(ledger)
    return Outcome("service", provider, budget, card.price_per_1000, asdict(faults),
                   counters.billed_images, totals.images, totals.uncertain_images,
                   totals.spent_nano / 1e9, ended, time.monotonic() - start, extra, violations)


def first_error(results: list[Any]) -> tuple[str, str]:
    """("done", "") or the name and message of the first barapi error among gathered
    results (others raise)."""
    for result in results:
        if isinstance(result, BarapiError):
            return type(result).__name__, str(result)
        if isinstance(result, BaseException):
            raise result
    return "done", ""


# --- CLI runs ------------------------------------------------------------------------------------

class NextVersion(NumpyModel):
    """Another version of the CLI runs' box: other weights under another identity, hence
    another `box_version`."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.identity = f"numpy/1000/v{seed}"
        self.matrix = np.random.default_rng(seed).standard_normal(self.matrix.shape)


def publish(server: ClarifaiEmulatorThread, model: Adapter, keep_old: bool) -> None:
    """`ClarifaiEmulator.publish`, on the emulator's own event loop."""
    async def move() -> None:
        server.emulator.publish(model, keep_old=keep_old)

    asyncio.run_coroutine_threadsafe(move(), server.loop).result(30)


def cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CLARIFAI_PAT": KEY}
    return subprocess.Popen([sys.executable, "-m", "barapi", "run", *args], cwd=cwd, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


RUN = ["--provider", "clarifai", "--model", "moderation-recognition", "--insecure",
       "--canvas", "32", "--window", "16", "--resolution", "4", "--q", "2", "--epochs", "2",
       "--classes", "0,1", "--batch", "10", "--patience", "0", "--yes", "--runs-dir", "runs",
       "--cache-dir", "cache", "--json"]


class Processes:
    """The CLI processes of one soak run: their exit codes and whether any printed a traceback."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.codes: list[int | None] = []
        self.tracebacks = 0

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        return cli(args, self.folder)

    def finish(self, process: subprocess.Popen[str], kill_after_lines: int | None = None
               ) -> tuple[int | None, str]:
        """Wait for `process` (after SIGKILL once its run's ledger holds `kill_after_lines`
        lines, if given); (exit code, stderr)."""
        if kill_after_lines is not None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                ledger = list((self.folder / "runs").glob("*/ledger.jsonl"))
                if ledger and ledger[0].read_bytes().count(b"\n") >= kill_after_lines:
                    break
                time.sleep(0.01)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=300)
        self.codes.append(process.returncode)
        self.tracebacks += "Traceback" in err
        return process.returncode, err

    def run(self, args: list[str], kill_after_lines: int | None = None) -> tuple[int | None, str]:
        return self.finish(self.start(args), kill_after_lines)

    def folders(self) -> list[Path]:
        return sorted((self.folder / "runs").glob("*"))


def cli_run(rng: random.Random, folder: Path, kind: str, keep_old: bool | None = None) -> Outcome:
    """One CLI run of `kind` (one of CLI_KINDS); `keep_old` (version kind) is drawn unless
    given."""
    faults = Faults(drop_every=rng.choice([0, 5]), fail_input_every=rng.choice([0, 10]),
                    max_rps=rng.choice([0.0, 7.5]))
    budget = round(rng.uniform(0.05, 0.6), 3)
    per_class = rng.choice([10, 20, 30])
    box = NumpyModel()
    server = ClarifaiEmulatorThread(box, KEY, faults)
    start = time.monotonic()
    args = [*RUN, "--endpoint", f"127.0.0.1:{server.port}", "--per-class", str(per_class),
            "--seed", str(rng.randrange(100))]
    runs = Processes(folder)
    extra: dict[str, Any] = {}
    violations: list[str] = []
    try:
        if kind == "kill9":
            runs.run([*args, "--budget", str(budget)], kill_after_lines=rng.randint(1, 40))
            if runs.folders():  # resumed without --budget: the folder remembers it
                runs.run(["--resume", str(runs.folders()[0])])
        elif kind == "concurrent":
            runs.run([*args, "--budget", str(budget / 2)])
            if runs.folders():
                pair = [runs.start(["--resume", str(runs.folders()[0]), "--budget", str(budget)])
                        for _ in range(2)]
                for process in pair:
                    runs.finish(process)
                extra["refusals"] = runs.codes[1:].count(2)
        else:
            budget = version_run(rng, server, box, args, budget, runs, keep_old, extra,
                                 violations)
    finally:
        server.stop()
    if runs.tracebacks:
        violations.append(f"{runs.tracebacks} process(es) printed a traceback")
    ledgers = list((folder / "runs").glob("*/ledger.jsonl"))
    totals = read_ledger(ledgers[0]) if ledgers else None
    price = load_card("clarifai-moderation").price_per_1000
    return Outcome(kind, "clarifai", budget, price, asdict(faults),
                   server.emulator.counters.billed_images, totals.images if totals else 0,
                   totals.uncertain_images if totals else 0,
                   totals.spent_nano / 1e9 if totals else 0.0, f"exit {runs.codes}",
                   time.monotonic() - start, {"exit_codes": runs.codes, **extra}, violations)


def version_run(rng: random.Random, server: ClarifaiEmulatorThread, box: Adapter,
                args: list[str], budget: float, runs: Processes, keep_old: bool | None,
                extra: dict[str, Any], violations: list[str]) -> float:
    """Run, stop (SIGKILL, or the budget), publish a new version of `box` (the one `server`
    answers from), keeping the old one served or not, resume; records into `extra` and
    `violations`. Returns the whole run's budget."""
    counters = server.emulator.counters
    keep_old = rng.random() < 0.5 if keep_old is None else keep_old
    stop = rng.choice(["kill9", "budget"])
    if stop == "budget":  # less than the run needs: it stops, and the resume brings more
        first, budget = round(rng.uniform(0.04, 0.1), 3), round(budget + 0.1, 3)
        runs.run([*args, "--budget", str(first)])
    else:
        runs.run([*args, "--budget", str(budget)], kill_after_lines=rng.randint(1, 12))
    found = runs.folders()
    if not found:
        violations.append(f"no run folder after the first run (exit {runs.codes})")
        return budget
    old = box_version(box)
    new_box = NextVersion(rng.randrange(1, 2**16))
    new = box_version(new_box)
    publish(server, new_box, keep_old)
    extra.update(stop=stop, keep_old=keep_old, finished_before_stop=runs.codes[0] == 0)
    resume = ["--resume", str(found[0]), *(["--budget", str(budget)] if stop == "budget" else [])]
    if not keep_old:
        billed = counters.billed_images
        code, err = runs.run(resume)
        last = err.strip().splitlines()[-1:] or [""]
        errors = [line for line in err.splitlines() if line.startswith("barapi: error:")]
        one_line = (code == 2 and errors == last and f"pinned to model version {old}" in last[0]
                    and f"--accept-version {new}" in last[0])
        extra["refusals"] = int(one_line and counters.billed_images == billed)
        if not one_line:
            violations.append(f"resume after the version moved: exit {code}, not one line "
                              f"naming {old}, {new} and --accept-version: {err[-300:]!r}")
        if counters.billed_images != billed:
            violations.append(f"the refused resume was billed {counters.billed_images - billed} "
                              f"images")
        unpinned = counters.billed_by_version.get(new, 0)
        runs.run([*resume, "--accept-version", new])
        extra["accepted_billed_on_new"] = counters.billed_by_version.get(new, 0) - unpinned
    else:
        runs.run(resume)
        unpinned = counters.billed_by_version.get(new, 0)
    extra["unpinned_billed"] = unpinned
    if unpinned:
        violations.append(f"{unpinned} images billed on version {new}, not the pinned {old}")
    if runs.codes[-1] not in (0, 3):
        violations.append(f"the resume ended with exit {runs.codes[-1]}")
    return budget


# --- the soak ------------------------------------------------------------------------------------

COLUMNS = [
    ("kind", "kind"), ("provider", "provider"), ("runs", "runs"), ("over_budget", "server bill > budget"),
    ("ledger_below_server", "ledger < server"), ("known_but_unequal", "known, unequal"),
    ("violations", "other violations"), ("out_of_budget", "stopped by budget"),
    ("server_images", "server billed"), ("ledger_images", "ledger"),
    ("uncertain_images", "uncertain"), ("max_server_share_of_budget", "max bill/budget"),
    ("poisoned", "poisoned caches"), ("corrupt", "damaged cache.db"),
    ("markers", "markers executed"), ("bad_rows_served", "bad rows served"),
    ("bad_rows_cached", "bad rows cached"), ("incomplete_stops", "stopped: incomplete answers"),
    ("unpinned_billed", "billed on unpinned version"), ("refusals", "refused, $0")]


def summarize(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per kind of run and provider (service runs: each of PLANS): counts of
    violations and of what was tried."""
    summary = []
    for kind, provider in [*(("service", p) for p in PLANS), *((k, "clarifai") for k in CLI_KINDS)]:
        rows = [o for o in outcomes if o.kind == kind and o.provider == provider]
        if not rows:
            continue

        def total(key: str, rows: list[Outcome] = rows) -> int:
            return sum(int(o.extra.get(key, 0)) for o in rows)

        summary.append({
            "kind": kind, "provider": provider, "runs": len(rows),
            "over_budget": sum(o.over_budget for o in rows),
            "ledger_below_server": sum(o.ledger_short for o in rows),
            "known_but_unequal": sum(o.certain_mismatch for o in rows),
            "violations": sum(bool(o.violations) for o in rows),
            "out_of_budget": sum("Budget" in o.ended for o in rows),
            "server_images": sum(o.server_billed for o in rows),
            "ledger_images": sum(o.ledger_images for o in rows),
            "uncertain_images": sum(o.uncertain_images for o in rows),
            "max_server_share_of_budget": max((o.server_dollars / o.budget for o in rows
                                               if o.budget > 0), default=0.0),
            "poisoned": sum(o.extra.get("cache") == "poisoned" for o in rows),
            "corrupt": sum(o.extra.get("cache") == "corrupt" for o in rows),
            "markers": total("markers"), "bad_rows_served": total("bad_rows_served"),
            "bad_rows_cached": total("bad_rows_cached"),
            "incomplete_stops": sum(o.ended == "InvalidAnswer" and bool(o.faults["omit_every"])
                                    for o in rows),
            "unpinned_billed": total("unpinned_billed"),
            "refusals": total("refusals") + sum(o.ended == "CacheUnusable" for o in rows),
        })
    return summary


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=320, help="randomized service-level runs")
    parser.add_argument("--cli-runs", type=int, default=30,
                        help="runs of the CLI: kill -9, concurrent resumes, a moved version "
                             "(a third each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only (tests)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    model = NumpyModel()
    logging.getLogger("barapi").setLevel(logging.ERROR)  # bad entries: counted, not printed
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="barapi-soak-") as tmp:
        for i in range(args.runs):
            folder = Path(tmp) / f"s{i}"
            folder.mkdir()
            outcomes.append(asyncio.run(service_run(rng, folder, model)))
        for i in range(args.cli_runs):
            folder = Path(tmp) / f"c{i}"
            folder.mkdir()
            outcomes.append(cli_run(rng, folder, CLI_KINDS[i % len(CLI_KINDS)]))
    summary = summarize(outcomes)
    print(markdown_table(summary, COLUMNS))
    bad = [o for o in outcomes if o.failed]
    for o in bad[:10]:
        print("VIOLATION", json.dumps(asdict(o)))
    if not args.no_write:
        path = write_results("money_soak", [asdict(o) for o in outcomes],
                             " ".join(["python -m benchmarks.money_soak", *(argv or sys.argv[1:])]),
                             summary=summary)
        print(f"wrote {path}")
    if bad:
        sys.exit(1)
    return outcomes


if __name__ == "__main__":
    main()
