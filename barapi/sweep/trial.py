"""A sweep's trial: the Ray Tune trainable that runs one ordinary barapi run.

Each trial's run folder is ``SWEEP_DIR/trials/NNN-…`` (named by the trial's index and its
varied settings, so that a resumed sweep finds it whatever Tune calls the trial). A trial
that finds its folder continues it with barapi's own resume (same program as an
uninterrupted run, nothing paid twice beyond requests in flight); one that finds it finished
reports its summary and queries nothing. Its Budget is a `LeasedBudget` on its own ledger
that spends from the sweep's wallet; its rate limiter is the account's shared one.

It reports through `ray.tune.report` after every validation and at its end (metrics:
node, val_accuracy, best_val_accuracy, test_accuracy, dollars, billed_images,
wall_seconds, step, finished, stopped), without a Tune checkpoint. A trial stopped
by the sweep's budget raises TrialStopped after its last report, so that Tune marks it
errored and `barapi sweep --resume` restarts it (it then continues from its run folder).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from barapi.budget import Budget
from barapi.errors import ConfigError, RunFolderBusy
from barapi.run_folder import RunFolder
from barapi.sweep.ledger import LeasedBudget, SweepBudgetExhausted, WalletClient
from barapi.sweep.spec import Trial

LOCK_WAIT = 30.0
"""Seconds a restarted trial waits for its run folder's lock (held by a process of the
killed sweep that is still shutting down) before giving up."""


class TrialStopped(RuntimeError):
    """The trial stopped before finishing (the sweep's budget, a provider refusal): its run
    folder is checkpointed, and `barapi sweep --resume` continues it."""


@dataclass
class SweepContext:
    """What every trial of a sweep shares (JSON-compatible: it travels in Tune's
    param_space)."""

    sweep_dir: str
    wallet: str
    limiter: str
    namespace: str
    card: dict[str, Any]
    cache_dir: str | None
    use_cache: bool | None
    lease_nano: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_folder(sweep_dir: Path | str, trial: Trial) -> Path:
    return Path(sweep_dir) / "trials" / trial.name


def read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def final_metrics(summary: dict[str, Any], trial: Trial) -> dict[str, Any]:
    def number(key: str) -> float:
        value = summary.get(key)
        return float(value) if value is not None else math.nan

    return {"index": trial.index, "node": _node(), "val_accuracy": number("best_val_accuracy"),
            "best_val_accuracy": number("best_val_accuracy"),
            "test_accuracy": number("test_accuracy"), "dollars": number("dollars"),
            "billed_images": int(summary.get("billed_images") or 0),
            "wall_seconds": number("wall_seconds"), "step": int(summary.get("steps") or 0),
            "finished": True, "stopped": summary.get("stopped") or ""}


def _node() -> str:
    """The Ray node this trial runs on ("" outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


class _Reporter:
    """Sends a run's validations to Ray Tune, with a checkpoint naming its run folder."""

    def __init__(self, trial: Trial, folder: Path, budget: Budget) -> None:
        self.trial, self.folder, self.budget = trial, folder, budget
        self.best = math.nan

    def report(self, metrics: dict[str, Any]) -> None:
        """Report `metrics` to Tune, without a Tune checkpoint: the trial's state is its run
        folder, which a restarted trial finds and resumes by itself. (A Tune checkpoint
        could be named in Tune's saved state yet be gone from storage after a kill -9,
        and Tune's restore then fails: seen in CI.)"""
        from ray import tune

        tune.report(metrics)

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("event") != "val":
            return
        accuracy = float(record["val_accuracy"])
        self.best = accuracy if math.isnan(self.best) else max(self.best, accuracy)
        self.report({"index": self.trial.index, "node": _node(), "val_accuracy": accuracy,
                     "best_val_accuracy": self.best, "test_accuracy": math.nan,
                     "dollars": self.budget.spent, "billed_images": self.budget.spent_images,
                     "wall_seconds": math.nan, "step": int(record["step"]), "finished": False,
                     "stopped": ""})


def overhead(attempts: int, wallet: WalletClient, limiter: Any) -> dict[str, Any]:
    """What the sweep's shared objects cost this trial: calls and seconds waiting for the
    wallet (leases) and the limiter (slots; the wait for the slot itself not included), per
    request sent (`attempts`), in milliseconds."""
    calls = getattr(limiter, "calls", 0)
    seconds = getattr(limiter, "seconds", 0.0)
    per = max(1, attempts)
    return {"requests": attempts, "wallet_calls": wallet.calls,
            "wallet_ms_per_request": round(1000 * wallet.seconds / per, 4),
            "limiter_calls": calls, "limiter_ms_per_request": round(1000 * seconds / per, 4),
            "ms_per_request": round(1000 * (wallet.seconds + seconds) / per, 4)}


def _open_folder(folder: Path) -> Path | None:
    """The trial's run folder to resume, or None to create it. A folder left without its
    config.json (killed while being created, nothing paid) is removed."""
    if (folder / "config.json").is_file():
        deadline = time.monotonic() + LOCK_WAIT
        while True:  # the lock of a killed sweep's trial is released when its process ends
            probe = RunFolder(folder)
            try:
                probe.lock()
                probe.unlock()
                return folder
            except RunFolderBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
    if folder.exists():
        ledger = folder / "ledger.jsonl"
        if ledger.exists() and ledger.stat().st_size:
            raise ConfigError(f"{folder}: has a ledger but no config.json; restore it")
        shutil.rmtree(folder)
    return None


def run_trial(params: dict[str, Any]) -> None:
    """The Tune trainable: `params` = {"trial": Trial as a dict, "sweep": SweepContext as a
    dict}. Raises TrialStopped when the run stopped before finishing."""
    import ray
    from ray import tune

    from barapi import api
    from barapi.sweep.limiter import SharedRateLimiter, account_key

    trial, ctx = Trial(**params["trial"]), SweepContext(**params["sweep"])
    folder = trial_folder(ctx.sweep_dir, trial)
    summary = read_summary(folder)
    if summary is not None and not summary.get("stopped"):
        tune.report(final_metrics(summary, trial))  # finished before: nothing to query
        return
    wallet = WalletClient(ray.get_actor(ctx.wallet, namespace=ctx.namespace), trial.name)
    resume = _open_folder(folder)
    sweep_limit: list[int] = []

    def budget_factory(price: float, limit: float | None, resumed: RunFolder | None) -> Budget:
        budget = LeasedBudget(price, None, wallet=wallet, lease_nano=ctx.lease_nano)
        if resumed is not None:
            resumed.budget(price, None)  # raises LedgerDamaged for a cut or missing ledger
            budget.attach(resumed.ledger)
        sweep_limit.append(wallet.open(budget.spent_nano, resumed is None))
        budget.limit = sweep_limit[0] / 1e9  # a trial may spend the sweep's budget, no more
        return budget

    config, adapter = trial.plan(build=True)
    session = api.prepare(config, adapter=adapter, runs_root=folder.parent, run_name=folder.name,
                          resume=resume, card_fields=ctx.card,
                          cache_dir=Path(ctx.cache_dir) if ctx.cache_dir else None,
                          use_cache=ctx.use_cache, start=False, budget_factory=budget_factory)
    budget = session.service.budget
    assert isinstance(budget, LeasedBudget)
    card, config = session.card, session.config
    if card.requests_per_second > 0 or card.price_per_1000 > 0:
        key = account_key(config.provider, config.endpoint, card.name)
        handle = ray.get_actor(ctx.limiter, namespace=ctx.namespace)
        session.service.limiter = SharedRateLimiter(handle, key, card.requests_per_second)
    reporter = _Reporter(trial, folder, budget)
    session.trainer.on_record = reporter
    try:
        try:
            result = session.run()
        except SweepBudgetExhausted as exc:  # before the run started (e.g. its label lookup)
            raise TrialStopped(str(exc)) from exc
        summary = {**api.run_summary(result), "node": _node(),
                   "sweep_overhead": overhead(session.service.stats.attempts, wallet,
                                              session.service.limiter)}
        folder_ = session.folder
        if folder_ is not None:
            (folder_.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        # settle with the wallet and give back the unused lease; if the wallet is gone, the
        # lease stays counted as spent (safe)
        with contextlib.suppress(SweepBudgetExhausted):
            budget.close()
        if session.folder is not None:  # the trial's own budget closes with the sweep's
            session.folder.write_record(limit=budget.spent)
    reporter.report(final_metrics(summary, trial))
    if result.stopped:
        raise TrialStopped(result.stopped)
