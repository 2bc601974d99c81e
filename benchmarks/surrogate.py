"""Can a local surrogate help BAR on an honest few-output box? Gradient alignment and priming.

    python -m benchmarks.surrogate [--boxes nudenet-moderation imagenet-moderation]
                                   [--seeds 0 1 2 3 4] [--walk 4] [--prime-steps 100] [--quick]

The two ways a surrogate is used in the literature both rest on one quantity: how well the
gradient of the task loss through the surrogate matches the gradient through the black box.

- Prior-guided ZO (P-RGF, Cheng et al., NeurIPS 2019) mixes the surrogate's gradient v into
  the random directions with weight λ; its optimal λ is 0 (plain random directions) unless
  α² = cos²(v, ∇f) > 1 / (d + 2q − 2) (their Theorem 1; d = 192 for a 3×8×8 program, q = 10:
  α > 0.069).
- Prime-then-reprogram (AReS, 2026) trains the program white-box on the surrogate plus a
  proxy layer fitted to the box's paid answers, then uses it on the black box.

For each box and seed (digits 0 vs 1, barapi's default canvas, 3×8×8 program, linear head)
this script pays for what a BAR run would have paid by then — the probe pass on the training
split and `--walk` steps of minibatch 20 × (q + 1 = 11) perturbed programs along a random walk
— fits the proxy (ridge regression from the surrogate's centred log-probabilities to the
box's log answers), then measures, at the walk's programs:

- cos(∇_W L through surrogate + proxy, ∇_W L through the box), the box's gradient taken by
  autograd on its differentiable reference (the white-box AR path, used here only to measure);
- the validation accuracy of the blank program (the linear probe) and of a program trained
  for `--prime-steps` Adam steps on the proxy, asked of the box as a black box.

The surrogate is EfficientNet-Lite0 (barapi's default local model), our own copy; the
imagenet box is built on that same network (so its numbers are flattered), NudeNet is a
YOLOv8 detector (an independent family). Writes benchmarks/results/surrogate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from barapi import api
from barapi.adapters.boxes import create_box
from barapi.adapters.local import LocalAdapter, create
from barapi.head import PROB_FLOOR, LinearHead
from barapi.trainer import Task
from barapi.whitebox import ProgramImages
from benchmarks.common import markdown_table, write_results

Q, BATCH, BETA = 10, 20, 0.05  # barapi's defaults (docs/method.md)


def centred_log(p: torch.Tensor) -> torch.Tensor:
    logp = p.clamp_min(PROB_FLOOR).log()
    return logp - logp.mean(dim=1, keepdim=True)


def head_loss(head: LinearHead, logp: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """Cross-entropy of the linear head on (N, K) log answers, differentiable."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    phi = (logp.double() - logp.double().mean(dim=1, keepdim=True) - t(head.mean)) / t(head.scale)
    h = torch.log_softmax(phi @ t(head.weights).T + t(head.bias), dim=1)
    return -h[torch.arange(len(labels)), torch.from_numpy(labels)].mean()


class Proxy:
    """Ridge regression from the surrogate's centred log-probabilities (1,000) to the box's
    log answers (K), fitted on every answer paid for so far."""

    def __init__(self, surrogate: LocalAdapter, l2: float = 1.0) -> None:
        self.surrogate, self.l2 = surrogate, l2
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []

    def observe(self, images: torch.Tensor, answers: np.ndarray) -> None:
        with torch.no_grad():
            self.x.append(centred_log(self.surrogate.probabilities(images)).numpy())
        self.y.append(np.log(np.clip(answers, PROB_FLOOR, 1.0)))

    def fit(self) -> float:
        """Fits; returns the training R² averaged over the K outputs that vary."""
        x, y = np.concatenate(self.x).astype(np.float64), np.concatenate(self.y)
        self.mx, self.my = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.mx, y - self.my
        gram = xc.T @ xc
        self.a = np.linalg.solve(gram + self.l2 * np.trace(gram) / len(gram) * np.eye(len(gram)),
                                 xc.T @ yc)
        resid, total = ((yc - xc @ self.a) ** 2).sum(axis=0), (yc ** 2).sum(axis=0)
        varying = total > 1e-12
        return float(np.mean(1 - resid[varying] / total[varying]))

    def log_answers(self, images: torch.Tensor) -> torch.Tensor:
        f = centred_log(self.surrogate.probabilities(images)).double()
        return (f - torch.from_numpy(self.mx)) @ torch.from_numpy(self.a) + torch.from_numpy(self.my)


def black_box(box: LocalAdapter, images: torch.Tensor) -> np.ndarray:
    """The box's answers to 8-bit images, through its black-box path (predict_proba)."""
    u8 = (images.detach().permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return asyncio.run(box.predict_proba(u8))


def gradient(loss: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    (g,) = torch.autograd.grad(loss, w)
    return g.numpy().ravel().astype(np.float64)


def one(box_name: str, seed: int, walk: int, prime_steps: int, quick: bool) -> dict[str, Any]:
    config = api.make_config(classes="0,1", per_class=100 if not quick else 10, seed=seed,
                             device="cpu")
    split = api.load_split(config)
    task = Task(config, split)
    box = create_box(box_name, device="cpu", input_size=config.input_size)
    surrogate = create(model="efficientnet-lite0", device="cpu", input_size=config.input_size)
    assert surrogate is not box and surrogate._model is not box._model
    make = ProgramImages(task.program, torch.device("cpu"))
    train, labels = task.windows["train"], split.train.labels
    rng = np.random.default_rng([seed, 7])
    start = time.monotonic()
    proxy = Proxy(surrogate)
    w0 = torch.zeros(task.program.shape)
    blank = torch.cat([make(w0, train[i:i + 64]) for i in range(0, len(train), 64)])
    answers = black_box(box, blank)
    proxy.observe(blank, answers)
    head = LinearHead.fit(answers, labels, 2, 0.0, np.ones(2), config.head_l2)
    paid, points = len(train), []
    w = np.zeros(task.program.shape, dtype=np.float32)
    for _ in range(walk):  # what BAR's first steps pay for: q + 1 programs of one minibatch
        batch = rng.choice(len(train), BATCH, replace=False)
        variants = [w] + [w + BETA * rng.standard_normal(w.shape).astype(np.float32)
                          for _ in range(Q)]
        for v in variants:
            x = make(torch.from_numpy(v), train[batch])
            proxy.observe(x, black_box(box, x))
        paid += BATCH * (Q + 1)
        points.append((w.copy(), batch))
        w = w + 0.3 * rng.standard_normal(w.shape).astype(np.float32)  # a program further on
    r2 = proxy.fit()
    cosines = []
    for w_at, batch in points:
        wt = torch.tensor(w_at, requires_grad=True)
        true = gradient(head_loss(head, box.probabilities(make(wt, train[batch])).clamp_min(
            PROB_FLOOR).log(), labels[batch]), wt)
        wt = torch.tensor(w_at, requires_grad=True)
        prior = gradient(head_loss(head, proxy.log_answers(make(wt, train[batch])), labels[batch]),
                         wt)
        cosines.append(float(true @ prior / (np.linalg.norm(true) * np.linalg.norm(prior) + 1e-30)))

    def val_accuracy(weights: torch.Tensor) -> float:
        x = make(weights.detach(), task.windows["val"])
        return float((head.scores(black_box(box, x)).argmax(axis=1) == split.val.labels).mean())

    wp = torch.zeros(task.program.shape, requires_grad=True)
    optimizer = torch.optim.Adam([wp], lr=config.lr)
    for _ in range(prime_steps):
        batch = rng.choice(len(train), BATCH, replace=False)
        loss = head_loss(head, proxy.log_answers(make(wp, train[batch])), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dim, threshold = task.program.dim, 1 / (task.program.dim + 2 * Q - 2)
    return {"box": box_name, "seed": seed, "paid_images": paid, "proxy_r2": r2,
            "cosines": cosines, "mean_cos": statistics.fmean(cosines),
            "alpha2": statistics.fmean(c * c for c in cosines),
            "prgf_threshold_alpha2": threshold, "dim": dim,
            "share_prior_useful": sum(c * c > threshold for c in cosines) / len(cosines),
            "val_probe": val_accuracy(w0), "val_primed": val_accuracy(wp),
            "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", nargs="+", default=["nudenet-moderation", "imagenet-moderation"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--walk", type=int, default=4)
    parser.add_argument("--prime-steps", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves the code runs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for box in args.boxes:
        for seed in args.seeds:
            rows.append(one(box, seed, args.walk, args.prime_steps, args.quick))
            r = rows[-1]
            print(f"{box} seed {seed}: cos {r['mean_cos']:+.3f} (α² {r['alpha2']:.4f}, P-RGF "
                  f"needs > {r['prgf_threshold_alpha2']:.4f}), proxy R² {r['proxy_r2']:.2f}, "
                  f"val probe {r['val_probe']:.1%} → primed {r['val_primed']:.1%} "
                  f"({r['seconds']:.0f} s)", flush=True)
    table = []
    for box in args.boxes:
        mine = [r for r in rows if r["box"] == box]
        cos = [c for r in mine for c in r["cosines"]]
        useful = statistics.fmean(r["share_prior_useful"] for r in mine)
        table.append({
            "box": box, "seeds": len(mine),
            "cos(surrogate, box) mean ± sd": f"{statistics.fmean(cos):+.3f} ± "
                                              f"{statistics.pstdev(cos):.3f}",
            "steps where P-RGF would use the prior": f"{useful:.0%}",
            "proxy R²": f"{statistics.fmean(r['proxy_r2'] for r in mine):.2f}",
            "val: probe → primed": f"{statistics.fmean(r['val_probe'] for r in mine):.1%} → "
                                   f"{statistics.fmean(r['val_primed'] for r in mine):.1%}",
            "primed − probe (paired, per seed)": " ".join(
                f"{100 * (r['val_primed'] - r['val_probe']):+.0f}" for r in mine)})
    print(markdown_table(table, [(k, k) for k in table[0]]))
    if not args.quick:
        command = "python -m benchmarks.surrogate " + " ".join(argv if argv is not None
                                                               else sys.argv[1:])
        write_results("surrogate", rows, command, table=table)
    return rows


if __name__ == "__main__":
    main()
