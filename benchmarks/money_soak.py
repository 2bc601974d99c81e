"""Money soak: randomized budgets, concurrency and faults against the loopback emulators,
counting what the server billed (issues 15 and 29).

Every run checks the two money invariants against the emulator's own count of billed images:
the server's bill never exceeds the budget, and barapi's ledger never counts fewer images than
the server billed (equal where every outcome was known: no lost answers, outages or kills).
Each kind adds its own checks (`Outcome.violations`); any violation fails the soak.

Kinds of run, drawn at random:
- `service`: a QueryService (budget, ledger, cache, adaptive limiter, retries) asks a random
  number of batches through the Clarifai adapter (gRPC) or the Azure adapter (HTTP) until done
  or out of budget, at a random concurrency, under random faults: billed-then-lost answers,
  throttling below the card's rate, 10% MIXED_STATUS inputs, outages, invalid answers,
  answers that leave out a concept or tag, concepts or tags renamed (in the answers, or in
  the Clarifai app). Its cache folder may be poisoned before the run (planted pickles whose
  loading would make a marker folder, a row naming a file outside the cache, tampered float
  records: NaN, out of range, all zero, wrong length, garbage) under the very keys the run
  asks for, or its cache.db damaged (header, index page, garbage, truncated). Checked: no
  marker made, no file touched; every row served and every row the cache holds afterwards
  is what the box answers for that image (so no incomplete or renamed-away answer is served
  or kept); a damaged cache stops the run with CacheUnusable and $0 billed.
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.adapters.base import Adapter
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.api import default_cache
from barapi.budget import Budget, read_ledger
from barapi.cache import ProbabilityCache, cache_identity, encode_row, image_keys
from barapi.cards import load_card
from barapi.emulate import (
    AzureEmulator,
    ClarifaiEmulator,
    ClarifaiEmulatorThread,
    Faults,
    box_version,
    concept_scores,
)
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
    """Transport faults and the provider's words (omitted and renamed concepts or tags)."""
    if provider == "clarifai":
        answer_names = rng.choice([{}, {}, {}, {"gore": "sangre", "drug": "droga"}, {"safe": "sûr"}])
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
                "narrower": encode_row(np.full(max(k - 1, 1), 0.5)),
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

async def service_run(rng: random.Random, folder: Path, model: NumpyModel,
                      cache_state: str | None = None, faults: Faults | None = None,
                      provider: str | None = None, budget: float | None = None) -> Outcome:
    """One randomized run of the query layer. `cache_state` ("clean", "poisoned",
    "corrupt"), `faults`, `provider` and `budget` (dollars) are drawn unless given (tests
    pin them)."""
    provider = provider or rng.choice(["clarifai", "clarifai", "azure"])
    card = load_card("clarifai-moderation" if provider == "clarifai" else "azure-s0-nostore")
    card_rate = rng.choice([20.0, 40.0]) if provider == "clarifai" else 20.0
    drawn = random_faults(rng, card_rate, provider)
    faults = faults or drawn
    drawn_budget = round(rng.uniform(0.0, 0.3 if provider == "clarifai" else 0.08), 4)
    budget = drawn_budget if budget is None else budget
    batches = [rng.randint(1, 60 if provider == "clarifai" else 8) for _ in range(rng.randint(1, 6))]
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
    if provider == "clarifai":
        emulator = ClarifaiEmulator(model, KEY, faults)
        port = await emulator.start()
        adapter: Any = ClarifaiAdapter(key=Secret(KEY), endpoint=f"127.0.0.1:{port}", insecure=True,
                                       timeout=5.0)
        counters, stop = emulator.counters, emulator.stop
    else:
        faults.answer_names = {}  # renamed after the answer that binds the tags to their ids
        azure = AzureEmulator(model, KEY, TAGS, faults).__enter__()
        adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS, timeout=5.0,
                                           endpoint=f"http://127.0.0.1:{azure.port}")
        counters = azure.counters

        async def stop() -> None:
            azure.__exit__()
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
        if renames and provider == "azure":
            await service.predict_proba(images[0][:1])
            faults.answer_names = renames
        results = await asyncio.gather(*(service.predict_proba(x) for x in images),
                                       return_exceptions=True)
        ended, why = first_error(results)
    except BarapiError as exc:
        ended, why, results = type(exc).__name__, str(exc), []
    finally:
        if service is not None and service.cache is not None:
            service.cache.close()
        await adapter.aclose()
        await stop()
    expected = [await concept_scores(model, x, len(adapter.labels)) for x in images]
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
    faults.answer_names = renames
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
    ("kind", "kind"), ("runs", "runs"), ("over_budget", "server bill > budget"),
    ("ledger_below_server", "ledger < server"), ("known_but_unequal", "known, unequal"),
    ("violations", "other violations"), ("out_of_budget", "stopped by budget"),
    ("server_images", "server billed"), ("ledger_images", "ledger"),
    ("uncertain_images", "uncertain"), ("max_server_share_of_budget", "max bill/budget"),
    ("poisoned", "poisoned caches"), ("corrupt", "damaged cache.db"),
    ("markers", "markers executed"), ("bad_rows_served", "bad rows served"),
    ("bad_rows_cached", "bad rows cached"), ("incomplete_stops", "stopped: incomplete answers"),
    ("unpinned_billed", "billed on unpinned version"), ("refusals", "refused, $0")]


def summarize(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per kind of run: counts of violations and of what was tried."""
    summary = []
    for kind in ("service", *CLI_KINDS):
        rows = [o for o in outcomes if o.kind == kind]
        if not rows:
            continue

        def total(key: str, rows: list[Outcome] = rows) -> int:
            return sum(int(o.extra.get(key, 0)) for o in rows)

        summary.append({
            "kind": kind, "runs": len(rows),
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
