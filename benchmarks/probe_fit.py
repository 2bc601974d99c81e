"""The linear probe's fit: time, iterations and convergence (issue 18, item 6).

A 10-class task at 32 px (scikit-learn digits, canvas 32, EfficientNet-Lite0 at 32 px, the
1,000-output answers to the unprogrammed training split): `LinearHead.fit` as it is, against
the fit before 2026-11-30 (L-BFGS on barapi's objective, features recomputed at every
evaluation; reproduced here as the reference) and against scikit-learn's `LogisticRegression`
(lbfgs) called directly on the same standardised features and penalty (C = 1 / (N · l2)),
which `LinearHead.fit` now uses for cross-entropy. "objective" is barapi's penalised training
loss at the fitted head (lower is better; equal objectives mean the same optimum). Times are medians of
`--repeats` fits, in one process, so that their ratio is what matters.

    python -m benchmarks.probe_fit [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize

from barapi import make_config
from barapi.api import load_split
from barapi.head import FIT_ITERATIONS, LinearHead, centred_log_probs
from barapi.program import Canvas
from benchmarks.common import markdown_table, write_results


def reference_fit(probs: np.ndarray, labels: np.ndarray, n_classes: int,
                  l2: float) -> tuple[LinearHead, Any]:
    """The fit as it was: the features recomputed from the probabilities at every evaluation."""
    raw = centred_log_probs(probs)
    mean, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
    start = LinearHead(np.zeros((n_classes, raw.shape[1])), np.zeros(n_classes), mean, scale, l2)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        return start.with_parameters(flat).loss_and_gradient(probs, labels, 0.0, None)

    result = minimize(objective, start.parameters, jac=True, method="L-BFGS-B",
                      options={"maxiter": FIT_ITERATIONS})
    return start.with_parameters(result.x), result


def sklearn_fit(probs: np.ndarray, labels: np.ndarray, l2: float) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression

    raw = centred_log_probs(probs)
    mean, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
    model = LogisticRegression(C=1.0 / (len(labels) * l2), max_iter=FIT_ITERATIONS)
    model.fit((raw - mean) / scale, labels)
    return model, (mean, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few classes, one repeat (tests)")
    args = parser.parse_args()
    from barapi.adapters.local import create

    config = make_config(canvas=32, window=32, input_size=32, classes="0,1,2" if args.quick else None)
    split = load_split(config)
    canvas = Canvas(32, 32)
    adapter = create(device="cpu", input_size=32)
    start = time.monotonic()
    train = asyncio.run(adapter.predict_proba(canvas.embed(split.train.images)))
    assert split.test is not None
    test = asyncio.run(adapter.predict_proba(canvas.embed(split.test.images)))
    query_seconds = time.monotonic() - start
    assert split.test is not None
    y, y_test, c, l2 = split.train.labels, split.test.labels, split.train.n_classes, config.head_l2
    rows: list[dict[str, Any]] = []
    repeats = 1 if args.quick else args.repeats
    for name in ("reference (features per evaluation)", "LinearHead.fit", "scikit-learn lbfgs"):
        times, info = [], {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if name.startswith("reference"):
                    head, result = reference_fit(train, y, c, l2)
                    info = {"iterations": int(result.nit), "converged": bool(result.success)}
                    loss = head.loss_and_gradient(train, y, 0.0, None)[0]
                elif name == "LinearHead.fit":
                    head = LinearHead.fit(train, y, c, 0.0, None, l2)
                    info = {"converged": not any("without converging" in str(w.message)
                                                 for w in caught)}
                    loss = head.loss_and_gradient(train, y, 0.0, None)[0]
                else:
                    model, (mean, scale) = sklearn_fit(train, y, l2)
                    info = {"iterations": int(np.max(model.n_iter_)),
                            "converged": int(np.max(model.n_iter_)) < FIT_ITERATIONS}
                    loss = float("nan")
            times.append(time.perf_counter() - t0)
        if name == "scikit-learn lbfgs":
            accuracy = float((model.predict((centred_log_probs(test) - mean) / scale) == y_test).mean())
        else:
            accuracy = float((head.scores(test).argmax(axis=1) == y_test).mean())
        rows.append({"fit": name, "seconds": statistics.median(times), **info,
                     "train_objective": f"{loss:.5f}", "test_accuracy": accuracy})
    reference = float(rows[0]["seconds"])
    for row in rows:
        row["time_ratio"] = float(row["seconds"]) / reference
    print(f"{len(y)} training answers × 1,000 outputs, {c} classes; queries took "
          f"{query_seconds:.1f} s")
    print(markdown_table(rows, [("fit", "fit"), ("seconds", "s (median)"),
                                ("time_ratio", "× reference"), ("iterations", "iterations"),
                                ("converged", "converged"), ("train_objective", "objective"),
                                ("test_accuracy", "test acc.")]))
    if not args.quick:
        write_results("probe_fit", rows, "python -m benchmarks.probe_fit", query_seconds=query_seconds,
                      n_train=len(y), n_classes=int(c))


if __name__ == "__main__":
    main()
