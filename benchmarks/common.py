"""Shared helpers: result files with machine facts, and Markdown tables."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from barapi.run_folder import package_versions

RESULTS = Path(__file__).parent / "results"
CODE = ("barapi", "adapters", "budgets", "benchmarks", ":(exclude)benchmarks/results")


@functools.cache
def code_version() -> str | None:
    """The checkout's commit (short hash), with "+changes" when barapi's or the benchmarks'
    code (not their results) differs from it; None outside a git checkout."""
    root = Path(__file__).parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                  "--untracked-files=no", "--", *CODE],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changes else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that ran benchmark `module` with `argv` (None: this process's arguments),
    as its results file records it."""
    return " ".join([f"python -m benchmarks.{module}", *(sys.argv[1:] if argv is None else argv)])


def write_results(name: str, rows: list[dict[str, Any]], command: str, **extra: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
               "code": code_version(), "machine": machine(), "versions": package_versions(),
               "rows": rows, **extra}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """`columns`: (key, header) pairs; floats below 1 are shown as percentages."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1%}" if 0 <= value <= 1 else f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval (n − 1 degrees of freedom) of paired differences, in
    their own units; the bounds are NaN for fewer than two."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def paired(diffs: list[float]) -> str:
    """Paired differences of fractions as "+m.m [lo, hi]" points (95% t-interval)."""
    if not diffs:
        return "–"
    mean, low, high = interval(diffs)
    if np.isnan(low):
        return f"{100 * mean:+.1f}"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
