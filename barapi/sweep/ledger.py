"""The sweep's wallet: one budget for all trials, in a file on the driver, spent by leases.

A trial never sends a request that its own run folder's Budget has not reserved (its ledger
still records every request, so `barapi evaluate` and the per-trial summary keep working);
the wallet is an additional gate in front of it. Before reserving, the trial's
`LeasedBudget` checks that the request fits in what the wallet has leased to it; if not, it
asks the wallet (a Ray actor holding a `SweepLedger`) for a lease — a block of dollars — and
the wallet writes the lease to its file, fsynced, before granting it. A lease counts as
spent for the whole sweep until the trial settles it: at each new lease and at its end the
trial reports its spend (its own ledger's total, requests in flight counted as billed) and
returns what it did not use. So the sum of all trials' spend never exceeds the sweep's
budget, whatever the concurrency, and a trial lost with its node leaves its unused lease
counted as spent (billed, as far as the sweep knows) until the trial is run again: when it
reopens its run folder (whose lock proves the old process gone) the wallet takes the trial's
ledger total as the truth (`open`).

Why leases, not a wallet call per request: one actor round trip and one fsync per lease
instead of per request (measured in `benchmarks/sweep.py`); near the end of the budget the
leases shrink to a fair share of what is left, down to a single request.

Wallet file lines (JSON, fsynced; amounts in integer nanodollars):

    {"limit": 5000000000, "time": ...}                  the sweep's budget (last line wins)
    {"trial": "003-seed1", "lease": 150000000, "time": ...}
    {"trial": "003-seed1", "spent": 120000000, "held": 30000000, "time": ...}

Replaying the file gives each trial's spent and held amounts (a torn lease line counts as
held at the amount it shows); the sweep's spend is the sum of both over trials, and a
reloaded wallet never records less than the file.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from barapi.budget import Budget, Ticket, format_dollars
from barapi.errors import BudgetExhausted, LedgerDamaged

_LEASE = re.compile(r'"trial":\s*"([^"]*)",\s*"lease":\s*(\d+)')


class SweepBudgetExhausted(BudgetExhausted):
    """The sweep's wallet cannot pay for the next request, or a shared object of the sweep
    (wallet, rate limiter) cannot be reached: nothing is sent, the trial checkpoints and
    stops."""


@dataclass
class TrialAccount:
    spent: int = 0
    held: int = 0


@dataclass
class SweepLedger:
    """The wallet of a sweep whose budget is `limit_nano` nanodollars, on the file `path`
    (None: in memory). Loading an existing file replays it; raises LedgerDamaged when it
    cannot be read."""

    path: Path | None
    limit_nano: int
    accounts: dict[str, TrialAccount] = field(default_factory=dict)
    leases: int = 0

    def __post_init__(self) -> None:
        stored = self._replay()
        if stored is None or stored != self.limit_nano:
            self._append({"limit": self.limit_nano})

    def _replay(self) -> int | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise LedgerDamaged(f"{self.path}: cannot read the sweep's wallet ({exc.strerror})") from exc
        limit = None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                found = _LEASE.search(line)
                if found:  # torn by a crash: the lease may have been granted
                    self.accounts.setdefault(found[1], TrialAccount()).held += int(found[2])
                continue
            if "limit" in entry:
                limit = int(entry["limit"])
            elif "lease" in entry:
                self.accounts.setdefault(entry["trial"], TrialAccount()).held += int(entry["lease"])
            elif "spent" in entry:
                self.accounts[entry["trial"]] = TrialAccount(int(entry["spent"]), int(entry["held"]))
        if not text.endswith("\n"):
            self._append(None)
        return limit

    def _append(self, entry: dict[str, Any] | None) -> None:
        if self.path is None:
            return
        data = b"\n" if entry is None else (json.dumps({**entry, "time": round(time.time(), 3)})
                                            + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def committed_nano(self) -> int:
        """Spent plus leased-and-unsettled, over all trials: what the sweep counts as spent."""
        return sum(a.spent + a.held for a in self.accounts.values())

    @property
    def left_nano(self) -> int:
        return max(0, self.limit_nano - self.committed_nano)

    def set_limit(self, limit_nano: int) -> None:
        """A new budget for the whole sweep (a resume with --budget)."""
        if limit_nano != self.limit_nano:
            self.limit_nano = limit_nano
            self._append({"limit": limit_nano})

    def open(self, trial: str, spent_nano: int, new_folder: bool) -> int:
        """Trial `trial` (re)starts, holding its run folder's lock, whose ledger records
        `spent_nano`: that is its spend, and nothing is held. `new_folder`: its run folder is
        being created (raises LedgerDamaged when the wallet says the trial already spent:
        its folder went missing). Returns the sweep's limit."""
        account = self.accounts.get(trial)
        if new_folder and account is not None and account.spent + account.held > 0:
            raise LedgerDamaged(f"trial {trial}: the sweep's wallet records "
                                f"{format_dollars(account.spent + account.held, nano=True)} for it "
                                f"but its run folder is missing; restore the folder")
        if account is None or (account.spent, account.held) != (spent_nano, 0):
            self.accounts[trial] = TrialAccount(spent_nano, 0)
            self._append({"trial": trial, "spent": spent_nano, "held": 0})
        return self.limit_nano

    def lease(self, trial: str, need: int, want: int, spent: int, held: int) -> int:
        """Settle `trial` at `spent` (its ledger's total) and `held` (what it still holds),
        then lease it at least `need` and at most `want` nanodollars; the grant is capped at
        a fair share of what is left (left / trials holding leases, this one included) but
        never below `need`. Returns 0, leasing nothing, when `need` does not fit."""
        self.settle(trial, spent, held)
        left = self.left_nano
        if need > left:
            return 0
        active = 1 + sum(1 for t, a in self.accounts.items() if t != trial and a.held > 0)
        grant = max(need, min(want, left // active))
        self.accounts[trial].held += grant
        self.leases += 1
        self._append({"trial": trial, "lease": grant})
        return grant

    def settle(self, trial: str, spent: int, held: int) -> None:
        """`trial` has spent `spent` in all (its ledger's total) and still holds `held`; a
        settlement never makes the trial's total grow (only a lease does)."""
        account = self.accounts.setdefault(trial, TrialAccount())
        if spent + held > account.spent + account.held:
            raise LedgerDamaged(f"trial {trial}: reports {format_dollars(spent + held, nano=True)}, "
                                f"more than the {format_dollars(account.spent + account.held, nano=True)} "
                                f"the sweep's wallet leased to it")
        if (account.spent, account.held) != (spent, held):
            account.spent, account.held = spent, held
            self._append({"trial": trial, "spent": spent, "held": held})

    def totals(self) -> dict[str, Any]:
        """{"limit", "committed", "left", "held", "leases"} in nanodollars (leases: count)."""
        return {"limit": self.limit_nano, "committed": self.committed_nano, "left": self.left_nano,
                "held": sum(a.held for a in self.accounts.values()), "leases": self.leases,
                "trials": {t: [a.spent, a.held] for t, a in self.accounts.items()}}


class Wallet(Protocol):
    """What a trial's budget needs of the wallet (an actor handle behind a client)."""

    def lease(self, need: int, want: int, spent: int, held: int) -> int: ...

    def settle(self, spent: int, held: int) -> None: ...


@dataclass
class LeasedBudget(Budget):
    """A trial's Budget (on its run folder's ledger, with the trial's own limit) that also
    spends from the sweep's wallet: a request is reserved only when it fits in what the
    wallet has leased to this trial (`allowance_nano`, counted from the trial's whole spend),
    and a lease of `lease_nano` (or what the request needs) is asked for when it does not.
    Raises SweepBudgetExhausted when the wallet refuses or cannot be reached."""

    wallet: Wallet | None = None
    allowance_nano: int = 0
    lease_nano: int = 0

    def reserve(self, images: int) -> Ticket:
        cost = self.cost_nano(images)
        limit = self.limit_nano
        if limit is not None and self.spent_nano + self.reserved_nano + cost > limit:
            return super().reserve(images)  # the trial's own limit: its own message
        shortfall = self.spent_nano + self.reserved_nano + cost - self.allowance_nano
        if shortfall > 0 and cost > 0:
            if self.wallet is None:
                raise SweepBudgetExhausted("no sweep wallet: nothing is sent")
            held = max(0, self.allowance_nano - self.spent_nano)
            granted = self.wallet.lease(shortfall, max(shortfall, self.lease_nano),
                                        self.spent_nano, held)
            if granted < shortfall:
                raise SweepBudgetExhausted(
                    f"the sweep's budget is spent: the next request costs "
                    f"{format_dollars(cost, nano=True)} and the sweep's wallet cannot pay it")
            self.allowance_nano = self.spent_nano + held + granted
        return super().reserve(images)

    def attach(self, ledger: Path) -> None:
        super().attach(ledger)
        self.allowance_nano = max(self.allowance_nano, self.spent_nano)

    def close(self) -> None:
        """Settle with the wallet and give back what was not used (end of the trial)."""
        if self.wallet is not None:
            self.wallet.settle(self.spent_nano, 0)
            self.allowance_nano = self.spent_nano


WALLET_TIMEOUT = 60.0
"""Seconds a trial waits for the wallet's answer before taking it as unreachable."""


def start_wallet(path: Path, limit_nano: int, name: str, namespace: str) -> Any:
    """The sweep's wallet as a Ray actor named `name`, pinned to this (the driver's) node so
    that its file is the driver's; it reloads `path` if it exists. Lives as long as the
    driver (a killed driver takes the wallet with it: trials can then send nothing new)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor: Any = ray.remote(SweepLedger).options(
        name=name, namespace=namespace, num_cpus=0, max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    handle = actor.remote(path, limit_nano)
    ray.get(handle.totals.remote())  # raises here if it could not load its file
    return handle


@dataclass
class WalletClient:
    """A trial's side of the wallet: calls to the actor `handle` on behalf of `trial`. Any
    failure to get an answer (actor dead, timeout) raises SweepBudgetExhausted: without the
    wallet, nothing is sent."""

    handle: Any
    trial: str
    calls: int = 0
    seconds: float = 0.0

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        start = time.perf_counter()
        try:
            return ray.get(getattr(self.handle, method).remote(self.trial, *args),
                           timeout=WALLET_TIMEOUT)
        except LedgerDamaged:
            raise
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, LedgerDamaged):
                raise cause from None
            raise SweepBudgetExhausted(f"the sweep's wallet cannot be reached ({type(exc).__name__}); "
                                       f"nothing is sent") from exc
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start

    def open(self, spent: int, new_folder: bool) -> int:
        return int(self._call("open", spent, new_folder))

    def lease(self, need: int, want: int, spent: int, held: int) -> int:
        return int(self._call("lease", need, want, spent, held))

    def settle(self, spent: int, held: int) -> None:
        self._call("settle", spent, held)
