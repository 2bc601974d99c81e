"""Default BAR against its references on scikit-learn digits and the local EfficientNet-Lite0.

    python -m benchmarks.digits [--seeds 0 1 2] [--quick]

Methods on identical splits and seeds: zero-shot label mapping (no program), barapi's
default black-box BAR, and white-box AR with the same program, map and loss. Prints a
Markdown table (accuracy, billable images, wall time) and writes benchmarks/results/digits.json.
`--quick` runs a tiny configuration (CI proves the script works; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from barapi import api
from benchmarks.common import markdown_table, write_results

METHODS = {"zero-shot": {"method": "zero-shot"}, "BAR (barapi default)": {"method": "bar"},
           "AR (white-box)": {"method": "ar"}}
QUICK = {"canvas": 32, "window": 16, "input_size": 32, "resolution": 4, "per_class": 10,
         "q": 2, "epochs": 1, "m": 2}


def run_one(overrides: dict[str, Any]) -> dict[str, Any]:
    config = api.make_config(**overrides)
    start = time.monotonic()
    session = api.prepare(config)
    result = session.run()
    return {"test_accuracy": result.test_accuracy, "zero_shot": result.zero_shot_accuracy,
            "images": session.service.stats.billed_images, "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    base = dict(QUICK) if args.quick else {}
    base["device"] = args.device
    print(f"expected duration: about {2 if args.quick else 10 * len(args.seeds)} min "
          f"(2-core CPU)", file=sys.stderr)
    rows = []
    for name, method in METHODS.items():
        runs = []
        for seed in args.seeds:
            runs.append(run_one({**base, **method, "seed": seed}))
            print(f"{name} seed {seed}: {runs[-1]}", file=sys.stderr)
        accuracies = [r["test_accuracy"] for r in runs]
        rows.append({"method": name, "test_accuracy": statistics.mean(accuracies),
                     "std": statistics.pstdev(accuracies), "seeds": len(runs),
                     "images": round(statistics.mean(r["images"] for r in runs)),
                     "seconds": statistics.mean(r["seconds"] for r in runs)})
    table = markdown_table(rows, [("method", "method"), ("test_accuracy", "test accuracy"),
                                  ("std", "± std"), ("seeds", "seeds"),
                                  ("images", "billable images"), ("seconds", "wall s")])
    print(table)
    if not args.quick:
        command = "python -m benchmarks.digits " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"wrote {write_results('digits', rows, command, table=table)}")
    return rows


if __name__ == "__main__":
    main()
