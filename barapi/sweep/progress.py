"""The sweep's progress display: a Ray Tune callback (this module imports ray)."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray import tune

from barapi.budget import format_dollars

log = logging.getLogger("barapi.sweep")
"""The sweep's progress lines, at INFO (the command line shows them on stderr; -q hides them)."""


class Progress(tune.Callback):
    """One INFO line on the ``barapi.sweep`` logger — trials running, done, stopped and
    pending; dollars spent and left (from the sweep's wallet) — at most every `every` seconds
    and at each trial's end.
    Picklable (it finds the wallet by name), so a restored sweep keeps it."""

    def __init__(self, wallet: str, namespace: str, total: int, every: float = 5.0) -> None:
        self.wallet, self.namespace, self.total, self.every = wallet, namespace, total, every
        self._last = 0.0

    def line(self, trials: list[Any]) -> str:
        states = [t.status for t in trials]
        running, done, stopped = (states.count(s) for s in ("RUNNING", "TERMINATED", "ERROR"))
        pending = self.total - running - done - stopped
        try:
            totals: Any = ray.get(ray.get_actor(self.wallet, namespace=self.namespace)
                             .totals.remote(), timeout=10)
            money = (f"{format_dollars(totals['committed'], nano=True)} spent, "
                     f"{format_dollars(totals['left'], nano=True)} left")
        except Exception:  # the display never stops a sweep
            money = "wallet not reachable"
        return (f"sweep: {running} running · {done} done · {stopped} stopped · {pending} "
                f"pending of {self.total} · {money}")

    def _show(self, trials: list[Any], force: bool = False) -> None:
        now = time.monotonic()
        if not log.isEnabledFor(logging.INFO):
            return
        if force or now - self._last >= self.every:
            self._last = now
            log.info("%s", self.line(trials))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self._show(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._show(trials, force=True)
