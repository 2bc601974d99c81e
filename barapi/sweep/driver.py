"""The sweep's driver: a sweep folder, Ray, the wallet, Ray Tune, and the results table.

    SWEEP_DIR/
      sweep.json        the spec, the budget, the sweep's id and the commands that ran it
      wallet.jsonl      the sweep's wallet (barapi.sweep.ledger), fsynced
      trials/NNN-…/     one ordinary run folder per trial (`barapi evaluate/predict` work on it)
      tune/             Ray Tune's experiment (its state and the trials' reports)
      results.json, results.csv, accuracy_vs_dollars.png
      .lock             held (flock) by the one driver of the sweep

`run_sweep` starts Ray in this process (or joins a cluster at `address`), starts the wallet
on this node, runs the trials through `tune.Tuner` (restored with `Tuner.restore` on a
resume), then writes the results. The best trial is chosen on validation accuracy, never
on test accuracy.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from barapi.budget import NANO, format_dollars, read_ledger, to_nano
from barapi.config import check_budget_dollars
from barapi.errors import ConfigError, LedgerDamaged
from barapi.files import read_small_text
from barapi.run_folder import lock_folder, new_folder
from barapi.sweep.spec import SweepSpec, Trial, parse_spec, read_spec
from barapi.sweep.trial import SweepContext, read_summary, run_trial, trial_folder

NAMESPACE = "barapi"
LEASES_PER_BUDGET = 100
"""Automatic lease size: the sweep's budget over this many (and at least one request)."""
COLUMNS = ("index", "name", "status", "val_accuracy", "test_accuracy", "billed_images",
           "dollars", "wall_seconds", "steps", "stopped", "node", "run_dir")


@dataclass
class SweepResult:
    """What a sweep left: `rows` (one per trial, see COLUMNS, plus the varied settings),
    the best trial by validation accuracy (None when no trial finished), the wallet's
    figures in dollars, and the trials stopped before finishing."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    budget: float
    spent: float
    stopped: list[str] = field(default_factory=list)

    @property
    def left(self) -> float:
        return max(0.0, self.budget - self.spent)


class SweepFolder:
    """A sweep's folder, locked by its driver (flock, released when the process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        self._lock: IO[str] | None = None

    @classmethod
    def create(cls, root: Path, spec: SweepSpec, budget: float) -> SweepFolder:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{stamp}-{Path(spec.path).stem}"
        path = new_folder(base, f"sweeps folder {root}: cannot create a sweep folder in it")
        folder = cls(path)
        folder.lock()
        ident = hashlib.sha256(f"{path}|{time.time()}".encode()).hexdigest()[:12]
        folder.write({"id": ident, "spec_file": str(Path(spec.path).resolve()),
                      "spec": spec.to_toml_dict(), "budget": budget, "commands": []})
        (path / "trials").mkdir()
        return folder

    @classmethod
    def open(cls, path: Path) -> SweepFolder:
        if not (Path(path) / "sweep.json").is_file():
            raise ConfigError(f"{path}: not a barapi sweep folder (no sweep.json)")
        folder = cls(path)
        folder.lock()
        return folder

    def lock(self) -> None:
        self._lock = lock_folder(self.path, "one driver at a time per sweep")

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def read(self) -> dict[str, Any]:
        """sweep.json; ConfigError (one line) when it is unreadable, not a JSON object, or its
        budget is not an amount of dollars."""
        path = self.path / "sweep.json"
        try:
            data = json.loads(read_small_text(path, "sweep file", 16 << 20))
        except ValueError as exc:
            raise ConfigError(f"{path}: not readable ({' '.join(str(exc).split())}); restore "
                              f"it from a backup") from None
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict) \
                or not isinstance(data.get("id"), str):
            raise ConfigError(f"{path}: not a barapi sweep record (an object with its id, spec "
                              f"and budget); restore it from a backup")
        check_budget_dollars(data.get("budget"), f"{path}: budget")
        return data

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path / ".sweep.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path / "sweep.json")

    def spec(self) -> SweepSpec:
        data = self.read()
        return parse_spec(data["spec"], Path(str(data.get("spec_file", self.path / "sweep.json"))))

    @property
    def wallet_path(self) -> Path:
        return self.path / "wallet.jsonl"

    @property
    def tune_dir(self) -> Path:
        return self.path / "tune"


def _lease_nano(spec: SweepSpec, budget: float) -> int:
    if spec.options.lease_dollars > 0:
        return to_nano(spec.options.lease_dollars)
    return to_nano(budget) // LEASES_PER_BUDGET


def preflight(spec: SweepSpec, budget: float) -> None:
    """Check what a trial would check before anything is created: the first trial's data,
    black box and card (`api.prepare` without a run folder or a query), and that `budget`
    dollars pay for at least its first phase (label mapping, or one request) on a priced
    card: a sweep that can pay for nothing is refused, not started."""
    from barapi import api

    trial = spec.trials()[0]
    cache_dir = Path(spec.options.cache_dir) if spec.options.cache_dir else None
    try:
        config, adapter = trial.plan(build=True)
        session = api.prepare(config, adapter=adapter, card_fields=spec.card,
                              cache_dir=cache_dir, use_cache=False, start=False, sends=False)
    except ConfigError as exc:
        raise ConfigError(f"{spec.path}: trial {trial.name}: {exc}") from exc
    card = session.card
    if card.price_per_1000 > 0:
        first = session.estimate()[0]
        images = first.images or 1
        need = session.service.budget.cost_nano(images)
        if need > to_nano(budget):
            raise ConfigError(
                f"--budget {format_dollars(budget)}: the sweep's trials pay {card.name}'s "
                f"{format_dollars(card.price_per_1000)} per 1,000 images, and its first trial's "
                f"{first.name if first.images else 'first request'} alone ({images:,} images) "
                f"costs {format_dollars(need, nano=True)}; give a budget that pays for the "
                f"trials")


def _start_ray(address: str | None, ray_init: dict[str, Any] | None) -> bool:
    """Start Ray in this process, or join the cluster at `address`; True if this call
    started or joined it (and so must stop it: `_stop_ray`). Ray started here is watched
    (`barapi.sweep.reaper`): its processes end with this one, even after a kill -9. Raises
    ConfigError (one line) when the cluster cannot be joined or Ray cannot start."""
    import ray

    from barapi.sweep.reaper import Watcher, session_folder

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "configure_logging": True, "logging_level": "warning"}
    options.update(ray_init or {})
    if address:
        _check_reachable(address)
    try:
        if address:
            options = {k: v for k, v in options.items()
                       if k not in ("num_cpus", "num_gpus", "object_store_memory",
                                    "include_dashboard", "_temp_dir")}
            ray.init(address=address, **options)
        else:
            _WATCHERS.append(Watcher())  # first: it must outlive this process
            ray.init(**options)
            _WATCHERS[-1].watch(session_folder() or "")
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, OSError) as exc:
        _stop_ray()
        what = f"--address {address}: cannot join the Ray cluster" if address else \
            "cannot start Ray in this process"
        raise ConfigError(f"{what} ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]})") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError unless the Ray cluster at `address` (HOST:PORT, or ray://HOST:PORT; "auto"
    is left to Ray) accepts a TCP connection within `timeout` s: Ray itself would retry for
    minutes."""
    import socket

    text = address.removeprefix("ray://")
    if address == "auto":
        return
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there "
                          f"({exc.strerror or type(exc).__name__}); is `ray start --head` "
                          f"running on it?") from None


def _stop_ray() -> None:
    """Shut down the Ray this process started or joined, and end what it left (its
    watcher ends any process of it still running)."""
    import ray

    ray.shutdown()
    while _WATCHERS:
        _WATCHERS.pop().stop()


_WATCHERS: list[Any] = []
"""The watchers (`barapi.sweep.reaper.Watcher`) of the Ray this process started."""


def run_sweep(spec: SweepSpec | Path | str | None = None, budget: float | None = None, *,
              sweeps_dir: Path | str = "sweeps", resume: Path | str | None = None,
              address: str | None = None, max_concurrent: int | None = None,
              progress: bool = True, ray_init: dict[str, Any] | None = None) -> SweepResult:
    """Run the sweep `spec` (a SweepSpec or a TOML file) with `budget` dollars for all its
    trials together, or continue the sweep folder `resume` (its spec; `budget`, if given, is
    the new total for the whole sweep). `address`: join that Ray cluster ("auto", or
    HOST:PORT) instead of starting Ray in this process; `max_concurrent`: trials at a time
    (default: the spec's, else Ray's resources); `ray_init`: extra `ray.init` options.

    Raises ConfigError (one line) for a bad spec, a missing budget or an unusable folder,
    before anything is created; RunFolderBusy when another driver holds the sweep;
    ModuleNotFoundError (name "ray") without the `sweep` extra."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")
    folder: SweepFolder | None = None
    if resume is not None:
        folder = SweepFolder.open(Path(resume))
        try:
            stored = folder.read()
            spec = folder.spec()
            budget = float(stored["budget"]) if budget is None else check_budget_dollars(budget)
        except BaseException:
            folder.unlock()
            raise
    else:
        if spec is None:
            raise ConfigError("give a sweep spec (a TOML file) or --resume SWEEP_DIR")
        spec = spec if isinstance(spec, SweepSpec) else read_spec(spec)
        if budget is None:
            raise ConfigError("give the sweep's budget in dollars (--budget; budget= in Python): "
                              "all trials together spend at most that")
        budget = check_budget_dollars(budget)
        preflight(spec, budget)
    assert budget is not None and isinstance(spec, SweepSpec)
    # Tune warns on every forced snapshot of its state (the snapshots are what a resume
    # after kill -9 reads): keep it quiet
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        started = _start_ray(address, ray_init)  # before a new folder: a bad address leaves none
        try:
            if folder is None:
                folder = SweepFolder.create(Path(sweeps_dir), spec, budget)
            return _drive(folder, spec, budget, resume is not None, address, max_concurrent,
                          progress)
        finally:
            if started:
                _stop_ray()
    finally:
        if folder is not None:
            folder.unlock()


def _drive(folder: SweepFolder, spec: SweepSpec, budget: float, resumed: bool,
           address: str | None, max_concurrent: int | None, progress: bool) -> SweepResult:
    """The sweep in `folder` on the Ray this process started or joined: the wallet, the
    limiters, the trials (Tune), then the results."""
    from barapi.sweep.ledger import start_wallet
    from barapi.sweep.limiter import start_limiters

    data = folder.read()
    data["budget"] = budget
    data["commands"] = [*data.get("commands", []), {"argv": sys.argv, "time": time.time(),
                                                     "address": address, "resume": resumed}]
    folder.write(data)
    ident = data["id"]
    trials = spec.trials()
    ctx = SweepContext(sweep_dir=str(folder.path), wallet=f"barapi-wallet-{ident}",
                       limiter=f"barapi-limiter-{ident}", namespace=NAMESPACE,
                       card=spec.card, cache_dir=spec.options.cache_dir,
                       use_cache=spec.options.cache, lease_nano=_lease_nano(spec, budget))
    import ray

    # (the handle is kept: a non-detached actor ends when its owner's handles do)
    wallet = start_wallet(folder.wallet_path, to_nano(budget), ctx.wallet, NAMESPACE)
    limiters = start_limiters(ctx.limiter, NAMESPACE)
    errors = _fit(folder, spec, trials, ctx, resumed, max_concurrent, progress)
    totals = ray.get(wallet.totals.remote())
    data["limiters"] = ray.get(limiters.state.remote())
    folder.write(data)
    for handle in (wallet, limiters):
        ray.kill(handle)
    return write_results(folder.path, trials, budget, totals["committed"] / NANO, errors)


def _fit(folder: SweepFolder, spec: SweepSpec, trials: list[Trial], ctx: SweepContext,
         resumed: bool, max_concurrent: int | None, progress: bool) -> dict[int, str]:
    """Run (or restore) the Tune experiment; {trial index: error} of the trials that did
    not finish."""
    from ray import tune

    trainable = tune.with_resources(run_trial, {"cpu": spec.options.cpus_per_trial,
                                                "gpu": spec.options.gpus_per_trial})
    param_space = {"trial": tune.grid_search([t.model_dump() for t in trials]),
                   "sweep": ctx.as_dict()}
    if resumed and tune.Tuner.can_restore(str(folder.tune_dir)):
        tuner = tune.Tuner.restore(str(folder.tune_dir), trainable, resume_unfinished=True,
                                   restart_errored=True, param_space=param_space)
    else:
        from barapi.sweep.progress import Progress

        callbacks: list[tune.Callback] = [Progress(ctx.wallet, NAMESPACE, len(trials))] if progress else []
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent or spec.options.max_concurrent,
                trial_dirname_creator=_dirname),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(folder.path), verbose=0, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    with contextlib.redirect_stdout(sys.stderr):  # Tune's own output: stdout is the caller's
        grid = tuner.fit()
    errors: dict[int, str] = {}
    for result in (grid[i] for i in range(len(grid))):
        if result.error is not None and result.config:
            errors[int(result.config["trial"]["index"])] = str(result.error).strip().splitlines()[-1][:300]
    return errors


def _dirname(trial: Any) -> str:
    return f"trial-{trial.config['trial']['index']:03d}"


def trial_row(sweep_dir: Path, trial: Trial, error: str | None = None) -> dict[str, Any]:
    """One row of the results table, from the trial's run folder (its summary and ledger)."""
    folder = trial_folder(sweep_dir, trial)
    summary = read_summary(folder) or {}
    try:
        spent = read_ledger(folder / "ledger.jsonl", allow_gaps=True)
    except LedgerDamaged:
        spent = None
    if summary and not summary.get("stopped"):
        status = "done"
    elif summary or (folder / "config.json").exists():
        status = "stopped"
    else:
        status = "pending"

    def number(key: str) -> float | None:
        value = summary.get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    return {"index": trial.index, "name": trial.name, **trial.varied, "status": status,
            "val_accuracy": number("best_val_accuracy"), "test_accuracy": number("test_accuracy"),
            "billed_images": spent.images if spent else summary.get("billed_images", 0),
            "dollars": round(spent.spent_nano / NANO, 9) if spent else summary.get("dollars", 0.0),
            "wall_seconds": number("wall_seconds"), "steps": summary.get("steps"),
            "stopped": summary.get("stopped") or (error if status != "done" else None),
            "node": summary.get("node"), "run_dir": str(folder) if folder.exists() else None}


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest validation accuracy (ties: fewer dollars, then
    the lower index); test accuracy never decides."""
    done = [r for r in rows if r["status"] == "done" and r["val_accuracy"] is not None]
    if not done:
        return None
    return min(done, key=lambda r: (-r["val_accuracy"], r["dollars"], r["index"]))


def write_results(sweep_dir: Path, trials: list[Trial], budget: float, spent: float,
                  errors: dict[int, str] | None = None) -> SweepResult:
    """results.json, results.csv and accuracy_vs_dollars.png in the sweep folder."""
    errors = errors or {}
    rows = [trial_row(sweep_dir, t, errors.get(t.index)) for t in trials]
    best = best_trial(rows)
    stopped = [r["name"] for r in rows if r["status"] != "done"]
    result = SweepResult(sweep_dir, rows, best, budget, spent, stopped)
    payload = {"budget": budget, "spent": spent, "left": result.left,
               "trials_spent": round(sum(r["dollars"] or 0 for r in rows), 9),
               "best": best, "unfinished": stopped, "trials": rows}
    (sweep_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    varied = [k for k in rows[0] if k not in COLUMNS] if rows else []
    with (sweep_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["index", "name", *varied, *COLUMNS[2:]])
        writer.writeheader()
        writer.writerows(rows)
    save_accuracy_png(sweep_dir / "accuracy_vs_dollars.png", rows, best)
    return result


def save_accuracy_png(path: Path, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
    """Validation and test accuracy against dollars, one point per trial; the best ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, marker, name in (("val_accuracy", "o", "validation"), ("test_accuracy", "x", "test")):
        points = [(r["dollars"], r[key], r["index"]) for r in rows if r[key] is not None]
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=name)
            for x, y, i in points if key == "val_accuracy" else []:
                ax.annotate(str(i), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if best is not None:
        ax.scatter([best["dollars"]], [best["val_accuracy"]], s=200, facecolors="none",
                   edgecolors="red", label=f"best by validation ({best['index']})")
    ax.set_xlabel("dollars spent by the trial")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
