"""`barapi sweep`: many runs on Ray Tune, one budget and one rate limit for the account.

    from barapi.sweep import run_sweep
    result = run_sweep("sweep.toml", budget=25.0)        # Ray in this process
    result = run_sweep(resume=result.sweep_dir)          # continue it

Modules: `spec` (the TOML spec → trials), `ledger` (the sweep's wallet: leases, a file on the
driver), `limiter` (a shared AIMD rate limiter per provider account), `trial` (the Tune
trainable: one ordinary run folder per trial), `driver` (Tuner, resume, results), `progress`
(the display). Needs the `sweep` extra (Ray Tune); importing this package does not import
ray, only running a sweep does.
"""

from __future__ import annotations

from barapi.sweep.driver import SweepResult, run_sweep
from barapi.sweep.spec import SweepSpec, Trial, read_spec

__all__ = ["SweepResult", "SweepSpec", "Trial", "read_spec", "run_sweep"]
