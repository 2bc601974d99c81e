"""`barapi sweep` against a rate-limited loopback endpoint: the aggregate request rate of
concurrent trials sharing one account's limit, and what the shared wallet and limiter cost.

    python -m benchmarks.sweep [--rate 10] [--trials 4] [--quick]

The endpoint is `barapi emulate clarifai` (its own process) limited to R requests/s by a
token bucket of 2 (a gateway's small burst: one request early by jitter passes, a sustained
rate above R does not), answering CONN_THROTTLED beyond it; the card says R. Four trials run at
once (Ray in this process), each an ordinary BAR run with many small requests. Measured from
the trials' ledgers (every request sent, with its outcome and time): the rate of accepted
requests while all trials were running (from 3 s after the first request to the last
request of the first trial to finish) against R, and the throttled requests after those
first seconds. Then the overhead of the shared objects, per request: the trials' own time
waiting for the wallet and the limiter's answers (not for the slot itself), and, in a micro
benchmark, one limiter call, one lease (an fsynced line) and one reservation inside a lease.

Goals (issue 17): ratio ≥ 0.95 with no throttling beyond the first seconds; overhead under
2 ms per request. Writes benchmarks/results/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, write_results

KEY = "benchmark-key"
WARMUP = 3.0
BURST = 2.0


def spec_text(port: int, rate: float, cache: Path, trials: int, epochs: int) -> str:
    classes = [f"{2 * i},{2 * i + 1}" for i in range(trials)]
    return f"""
[run]
provider = "clarifai"
endpoint = "127.0.0.1:{port}"
insecure = true
canvas = 32
window = 16
resolution = 4
per_class = 40
q = 1
batch = 5
epochs = {epochs}
patience = 0
[grid]
classes = {json.dumps(classes)}
[card]
requests_per_second = {rate}
[sweep]
cpus_per_trial = {2 / trials}
cache_dir = "{cache}"
"""


def ledger_requests(folder: Path) -> list[tuple[float, str]]:
    """(time sent, outcome) of each request in a trial's ledger."""
    sent: dict[int, float] = {}
    outcome: dict[int, str] = {}
    for line in (folder / "ledger.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "sent" in entry:
            sent[entry["id"]] = entry["sent"]
        elif "outcome" in entry:
            outcome[entry["id"]] = entry["outcome"]
    return [(t, outcome.get(i, "unknown")) for i, t in sorted(sent.items())]


def sweep_rate(rate: float, trials: int, epochs: int) -> dict[str, Any]:
    import ray

    from barapi.sweep import run_sweep

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        counters = root / "counters.json"
        env = {**os.environ, "CLARIFAI_PAT": KEY}
        emulator = subprocess.Popen(
            [sys.executable, "-m", "barapi", "emulate", "clarifai", "--port", "0", "--input-size",
             "32", "--max-rps", str(rate), "--burst", str(BURST), "--counters-file",
             str(counters)], stderr=subprocess.PIPE, text=True, env=env)
        assert emulator.stderr is not None
        port = int(emulator.stderr.readline().strip().rsplit(":", 1)[1])
        os.environ["CLARIFAI_PAT"] = KEY
        spec = root / "sweep.toml"
        spec.write_text(spec_text(port, rate, root / "cache", trials, epochs))
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                 log_to_driver=False, logging_level=logging.WARNING)
        start = time.monotonic()
        try:
            result = run_sweep(spec, 100.0, sweeps_dir=root / "sweeps", max_concurrent=trials,
                               progress=False)
        finally:
            ray.shutdown()
            emulator.terminate()
            emulator.communicate(timeout=30)
        wall = time.monotonic() - start
        seen = json.loads(counters.read_text())
        per_trial = [ledger_requests(Path(r["run_dir"])) for r in result.rows]
        overheads = [json.loads((Path(r["run_dir"]) / "summary.json").read_text())["sweep_overhead"]
                     for r in result.rows]
    first = min(r[0][0] for r in per_trial)
    busy_end = min(r[-1][0] for r in per_trial)  # the first trial to finish
    accepted = sorted(t for r in per_trial for t, o in r if o in ("answered", "partial"))
    throttled = sorted(t for r in per_trial for t, o in r if o == "refused")
    window = [t for t in accepted if first + WARMUP <= t <= busy_end]
    achieved = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else float("nan")
    requests = sum(o["requests"] for o in overheads)
    ms = sum(o["ms_per_request"] * o["requests"] for o in overheads) / requests
    return {"limit_rps": rate, "trials": trials, "requests": len(accepted),
            "busy_seconds": round(busy_end - first - WARMUP, 1),
            "achieved_rps": round(achieved, 3), "ratio": round(achieved / rate, 3),
            "throttled": len(throttled),
            "throttled_after_warmup": sum(1 for t in throttled if t > first + WARMUP),
            "emulator_accepted": len(seen["accepted_times"]),
            "emulator_billed_images": seen["billed_images"],
            "ledger_billed_images": sum(r["billed_images"] for r in result.rows),
            "overhead_ms_per_request": round(ms, 3),
            "wallet_calls": sum(o["wallet_calls"] for o in overheads),
            "limiter_ms_per_request": round(sum(o["limiter_ms_per_request"] * o["requests"]
                                                for o in overheads) / requests, 3),
            "wallet_ms_per_request": round(sum(o["wallet_ms_per_request"] * o["requests"]
                                               for o in overheads) / requests, 3),
            "dollars": round(result.spent, 4), "wall_seconds": round(wall, 1)}


def micro(calls: int) -> dict[str, Any]:
    """Milliseconds per limiter call and per lease (actor round trips, Ray in this process),
    and per reservation inside a lease (no actor call)."""
    import ray

    from barapi.budget import NANO
    from barapi.sweep.ledger import LeasedBudget, start_wallet
    from barapi.sweep.limiter import start_limiters

    with tempfile.TemporaryDirectory() as scratch:
        ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80 * 2**20,
                 log_to_driver=False, logging_level=logging.WARNING)
        try:
            limiters = start_limiters("bench-limiter", "barapi-bench")
            ray.get(limiters.delay.remote("k", 0.0))
            start = time.perf_counter()
            for _ in range(calls):
                ray.get(limiters.delay.remote("k", 0.0, 1))
            limiter_ms = 1000 * (time.perf_counter() - start) / calls
            wallet = start_wallet(Path(scratch) / "wallet.jsonl", 10**6 * NANO, "bench-wallet",
                                  "barapi-bench")
            start = time.perf_counter()
            for i in range(calls):
                ray.get(wallet.lease.remote("t", NANO, NANO, i * NANO, 0))
            lease_ms = 1000 * (time.perf_counter() - start) / calls
        finally:
            ray.shutdown()

        class Unlimited:
            def lease(self, need: int, want: int, spent: int, held: int) -> int:
                return want

            def settle(self, spent: int, held: int) -> None:
                return None

        budget = LeasedBudget(1.2, None, wallet=Unlimited(), lease_nano=10**6 * NANO)
        start = time.perf_counter()
        for _ in range(calls):
            budget.release(budget.reserve(128))
        reserve_ms = 1000 * (time.perf_counter() - start) / calls
    return {"limiter_call_ms": round(limiter_ms, 3), "lease_ms": round(lease_ms, 3),
            "reserve_in_lease_ms": round(reserve_ms, 4)}


def per_request_ms(row: dict[str, Any], small: dict[str, Any]) -> float:
    """The shared objects' cost per request, uncontended: one limiter call, a reservation,
    and the sweep's leases spread over its requests."""
    leases = row["wallet_calls"] / max(1, row["requests"] + row["throttled"])
    return small["limiter_call_ms"] + small["reserve_in_lease_ms"] + leases * small["lease_ms"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0, help="the endpoint's limit R")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and calls")
    parser.add_argument("--repeat", type=int, default=1, help="sweeps to run (the machine is "
                        "shared: its load moves the figures)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for _ in range(args.repeat):
        rows.append(sweep_rate(args.rate, args.trials, 2 if args.quick else 3))
        rows[-1]["load_average"] = os.getloadavg()[0]
    row = sorted(rows, key=lambda r: r["ratio"])[len(rows) // 2]  # the median sweep
    small = micro(200 if args.quick else 1000)
    small["per_request_ms"] = round(per_request_ms(row, small), 3)
    print(markdown_table([{**r, "ratio": f"{r['ratio']:.3f}",
                           "overhead_ms_per_request": f"{r['overhead_ms_per_request']:.2f}"}
                          for r in rows],
                         [("limit_rps", "limit (req/s)"), ("trials", "trials"),
                          ("achieved_rps", "achieved (req/s)"), ("ratio", "ratio"),
                          ("throttled", "throttled"),
                          ("throttled_after_warmup", f"throttled after {WARMUP:g} s"),
                          ("overhead_ms_per_request", "in-sweep wait for wallet + limiter (ms/request)"),
                          ("load_average", "load average")]))
    print(markdown_table([{k: f"{v:.4f}" for k, v in small.items()}],
                         [("limiter_call_ms", "limiter call (ms)"),
                          ("lease_ms", "lease, fsynced (ms)"),
                          ("reserve_in_lease_ms", "reserve in a lease (ms)"),
                          ("per_request_ms", "per request (ms)")]))
    goals = {"ratio_at_least_0.95": row["ratio"] >= 0.95,
             "no_throttling_after_warmup": row["throttled_after_warmup"] == 0,
             "overhead_under_2_ms": small["per_request_ms"] < 2.0,
             "ledgers_equal_emulator": row["ledger_billed_images"] == row["emulator_billed_images"]}
    print(json.dumps(goals))
    write_results("sweep", rows, command, micro=small, goals=goals, goals_from="the median sweep")
    return {"row": row, "rows": rows, "micro": small, "goals": goals}


if __name__ == "__main__":
    main()
