"""Money soak: randomized budgets, concurrency and faults against the loopback emulators,
counting what the server billed (issue 15).

Every run checks the two money invariants against the emulator's own count of billed images:
the server's bill never exceeds the budget, and barapi's ledger never counts fewer images than
the server billed (equal where every outcome was known: no lost answers, outages or kills).

Kinds of run, drawn at random:
- `service`: a QueryService (budget, ledger, cache, adaptive limiter, retries) asks a random
  number of batches through the Clarifai adapter (gRPC) or the Azure adapter (HTTP) until done
  or out of budget, at a random concurrency, under random faults: billed-then-lost answers,
  throttling below the card's rate, 10% MIXED_STATUS inputs, outages, invalid answers.
- `kill9`: `barapi run` against the Clarifai emulator, killed with SIGKILL mid-run, then
  resumed without --budget (the folder remembers it).
- `concurrent`: two `barapi run --resume` of one folder started together (one must refuse).

    python -m benchmarks.money_soak [--runs 320] [--cli-runs 24] [--seed 0]

Writes benchmarks/results/money_soak.json. The emulators answer from a numpy model, so that
the money logic, not a network's speed, is what is soaked. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.budget import Budget, read_ledger
from barapi.cache import ProbabilityCache
from barapi.cards import load_card
from barapi.emulate import AzureEmulator, ClarifaiEmulator, Faults
from barapi.errors import BarapiError
from barapi.keys import Secret
from barapi.query import QueryService
from barapi.ratelimit import RateLimiter
from barapi.retry import RetryPolicy
from benchmarks.common import markdown_table, write_results
from benchmarks.loopback import NumpyModel

KEY = "soak-emulator-key"  # the loopback emulators' own key, not a secret
TAGS = ["negative", "positive"]


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


def random_faults(rng: random.Random, rate: float) -> Faults:
    return Faults(max_rps=rng.choice([0.0, 0.0, rate / 2, rate * 0.8]),
                  unavailable_every=rng.choice([0, 0, 0, 7, 13]),
                  fail_input_every=rng.choice([0, 0, 10]),
                  drop_every=rng.choice([0, 0, 3, 5, 11]),
                  bad_answer_every=rng.choice([0, 0, 0, 0, 37]))


async def service_run(rng: random.Random, folder: Path, model: NumpyModel) -> Outcome:
    provider = rng.choice(["clarifai", "clarifai", "azure"])
    card = load_card("clarifai-moderation" if provider == "clarifai" else "azure-s0-nostore")
    card_rate = rng.choice([20.0, 40.0]) if provider == "clarifai" else 20.0
    faults = random_faults(rng, card_rate)
    budget = round(rng.uniform(0.0, 0.3 if provider == "clarifai" else 0.08), 4)
    batches = [rng.randint(1, 60 if provider == "clarifai" else 8) for _ in range(rng.randint(1, 6))]
    concurrency = rng.choice([1, 2, 4, 8])
    ledger = folder / "ledger.jsonl"
    start = time.monotonic()

    def make(adapter: Any) -> QueryService:
        return QueryService(adapter, Budget(card.price_per_1000, budget, ledger),
                            ProbabilityCache(folder / "cache"),
                            RateLimiter(card_rate), RetryPolicy(attempts=8, base=0.01, cap=0.2,
                                                                deadline=30, input_attempts=6),
                            max_batch=card.max_images_per_request, max_concurrency=concurrency)

    images = [np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (n, 16, 16, 3),
                                                                     dtype=np.uint8)
              for n in batches]
    if provider == "clarifai":
        emulator = ClarifaiEmulator(model, KEY, faults)
        port = await emulator.start()
        adapter: Any = ClarifaiAdapter(key=Secret(KEY), endpoint=f"127.0.0.1:{port}", insecure=True,
                                       timeout=5.0)
        service = make(adapter)
        ended = first_error(await asyncio.gather(*(service.predict_proba(x) for x in images),
                                                 return_exceptions=True))
        await adapter.aclose()
        await emulator.stop()
        billed = emulator.counters.billed_images
    else:
        with AzureEmulator(model, KEY, TAGS, faults) as azure:
            adapter = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS, timeout=5.0,
                                               endpoint=f"http://127.0.0.1:{azure.port}")
            service = make(adapter)
            ended = first_error(await asyncio.gather(*(service.predict_proba(x) for x in images),
                                                     return_exceptions=True))
            await adapter.aclose()
            billed = azure.counters.billed_images
    if service.cache is not None:
        service.cache.close()
    totals = read_ledger(ledger)
    return Outcome("service", provider, budget, card.price_per_1000, asdict(faults), billed,
                   totals.images, totals.uncertain_images, totals.spent_nano / 1e9, ended,
                   time.monotonic() - start,
                   {"concurrency": concurrency, "images_asked": sum(batches),
                    "throttles": service.limiter.throttles})


def first_error(results: list[Any]) -> str:
    """"done", or the name of the first barapi error among gathered results (others raise)."""
    for result in results:
        if isinstance(result, BarapiError):
            return type(result).__name__
        if isinstance(result, BaseException):
            raise result
    return "done"


class BackgroundEmulator:
    """A Clarifai emulator serving from its own thread and event loop, for CLI subprocesses."""

    def __init__(self, faults: Faults) -> None:
        self.emulator = ClarifaiEmulator(NumpyModel(), KEY, faults)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.emulator.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def cli(args: list[str], cwd: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CLARIFAI_PAT": KEY}
    return subprocess.Popen([sys.executable, "-m", "barapi", "run", *args], cwd=cwd, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


RUN = ["--provider", "clarifai", "--model", "moderation-recognition", "--insecure",
       "--canvas", "32", "--window", "16", "--resolution", "4", "--q", "2", "--epochs", "2",
       "--classes", "0,1", "--batch", "10", "--patience", "0", "--yes", "--runs-dir", "runs",
       "--cache-dir", "cache", "--json"]


def cli_run(rng: random.Random, folder: Path, kind: str) -> Outcome:
    faults = Faults(drop_every=rng.choice([0, 5]), fail_input_every=rng.choice([0, 10]),
                    max_rps=rng.choice([0.0, 7.5]))
    budget = round(rng.uniform(0.05, 0.6), 3)
    per_class = rng.choice([10, 20, 30])
    server = BackgroundEmulator(faults)
    start = time.monotonic()
    args = [*RUN, "--endpoint", f"127.0.0.1:{server.port}", "--per-class", str(per_class),
            "--seed", str(rng.randrange(100))]
    codes: list[int | None] = []
    try:
        if kind == "kill9":
            victim = cli([*args, "--budget", str(budget)], folder, server.port)
            paid_lines = rng.randint(1, 40)  # kill after this many ledger lines, or at the end
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and victim.poll() is None:
                ledger = list((folder / "runs").glob("*/ledger.jsonl"))
                if ledger and ledger[0].read_bytes().count(b"\n") >= paid_lines:
                    break
                time.sleep(0.01)
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)
            victim.wait()
            codes.append(victim.returncode)
            runs = list((folder / "runs").glob("*"))
            if runs:
                resumed = cli(["--resume", str(runs[0])], folder, server.port)  # budget remembered
                resumed.communicate(timeout=300)
                codes.append(resumed.returncode)
        else:  # concurrent resumes of one folder
            first = cli([*args, "--budget", str(budget / 2)], folder, server.port)
            first.communicate(timeout=300)
            codes.append(first.returncode)
            runs = list((folder / "runs").glob("*"))
            if runs:
                pair = [cli(["--resume", str(runs[0]), "--budget", str(budget)], folder, server.port)
                        for _ in range(2)]
                for process in pair:
                    process.communicate(timeout=300)
                    codes.append(process.returncode)
    finally:
        server.close()
    ledgers = list((folder / "runs").glob("*/ledger.jsonl"))
    totals = read_ledger(ledgers[0]) if ledgers else None
    price = load_card("clarifai-moderation").price_per_1000
    return Outcome(kind, "clarifai", budget, price, asdict(faults),
                   server.emulator.counters.billed_images, totals.images if totals else 0,
                   totals.uncertain_images if totals else 0,
                   totals.spent_nano / 1e9 if totals else 0.0, f"exit {codes}",
                   time.monotonic() - start, {"exit_codes": codes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=320, help="randomized service-level runs")
    parser.add_argument("--cli-runs", type=int, default=24,
                        help="kill -9 and concurrent-resume runs of the CLI (half each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only (tests)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    model = NumpyModel()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="barapi-soak-") as tmp:
        for i in range(args.runs):
            folder = Path(tmp) / f"s{i}"
            folder.mkdir()
            outcomes.append(asyncio.run(service_run(rng, folder, model)))
        for i in range(args.cli_runs):
            folder = Path(tmp) / f"c{i}"
            folder.mkdir()
            outcomes.append(cli_run(rng, folder, "kill9" if i % 2 == 0 else "concurrent"))
    summary = []
    for kind in ("service", "kill9", "concurrent"):
        rows = [o for o in outcomes if o.kind == kind]
        if not rows:
            continue
        summary.append({
            "kind": kind, "runs": len(rows),
            "over_budget": sum(o.over_budget for o in rows),
            "ledger_below_server": sum(o.ledger_short for o in rows),
            "known_but_unequal": sum(o.certain_mismatch for o in rows),
            "out_of_budget": sum("Budget" in o.ended for o in rows),
            "server_images": sum(o.server_billed for o in rows),
            "ledger_images": sum(o.ledger_images for o in rows),
            "uncertain_images": sum(o.uncertain_images for o in rows),
            "max_server_share_of_budget": max((o.server_dollars / o.budget for o in rows
                                               if o.budget > 0), default=0.0),
        })
    print(markdown_table(summary, [
        ("kind", "kind"), ("runs", "runs"), ("over_budget", "server bill > budget"),
        ("ledger_below_server", "ledger < server"), ("known_but_unequal", "known, unequal"),
        ("out_of_budget", "stopped by budget"), ("server_images", "server billed"),
        ("ledger_images", "ledger"), ("uncertain_images", "uncertain"),
        ("max_server_share_of_budget", "max bill/budget")]))
    bad = [o for o in outcomes if o.over_budget or o.ledger_short or o.certain_mismatch]
    for o in bad[:10]:
        print("VIOLATION", json.dumps(asdict(o)))
    if not args.no_write:
        path = write_results("money_soak", [asdict(o) for o in outcomes],
                             " ".join(["python -m benchmarks.money_soak", *sys.argv[1:]]),
                             summary=summary)
        print(f"wrote {path}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
