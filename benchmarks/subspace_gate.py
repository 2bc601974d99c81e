"""Issue 30's gate: do the few directions of the program that move a few-output box's answers
hold the loss gradient, and can paid answers alone find them?

    python -m benchmarks.subspace_gate [--tasks NAME ...] [--seeds 0 1 2 3 4]
        [--ks 4 8 16 24 32] [--project 8] [--beta 0.02] [--sides one-sided two-sided exact]
        [--no-ar] [--quick] [--name NAME]
    python -m benchmarks.subspace_gate --report NAME [NAME ...]   (tables of stored results)

(a) White-box, a measurement only (autograd through the local box, never in the BAR path):
for every training image i, the gradient G_i (K', d) of the box's centred log-probabilities
(the linear head's inputs; K' = 1 for a 2-concept box, whose two centred columns are ± half
the log-odds) with respect to the d = 192 parameters of the 3×8×8 program, and the gradient
∇l_i of its loss under the linear probe's head. C = mean_i G_iᵀG_i; its participation ratio
tr(C)² / tr(C²); the share of the loss gradient's energy ‖V_kᵀg‖² / ‖g‖² in C's top-k
eigenvectors V_k, for the training set's gradient and (mean) for minibatches of 20, at W = 0
and at the program white-box AR selects (barapi's AR, same head and settings, its best
validation). Then AR again with its gradient projected onto V_k of C at W = 0 (`--project`).

(b) From paid answers only, at most a quarter of a $25 budget at the Clarifai card's price
($1.20 per 1,000 images: 5,208 images): n training images × q_e directions each (each image
its own Gaussian directions, radius β; the clean answers are the probe's, already paid), the
answers read through the box's own `predict_proba` on 8-bit images. `--sides`: one-sided
differences against the clean answer, two-sided ones (W ± βu: half as many directions), or
"exact", the control: the two-sided design's directions with the exact (white-box)
directional derivatives in place of answers, no query — what each estimator could do with
perfect differences. Each estimator gives a k-dimensional subspace; its capture of the true
(white-box) loss gradient is reported against a random subspace's k/d, and its overlap with
C's top 8 eigenvectors (mean share of each in the estimate):

- "output 2nd moment": top-k eigenvectors of Σ ‖Δz‖² u uᵀ (Δz: the answers' finite
  differences; in expectation tr(C)·I + 2C);
- "loss 2nd moment": the same with the loss difference Δl in place of ‖Δz‖;
- "class-mean ZO span": the span of each class's and output's mean ZO gradient;
- "ZO loss gradient": the one direction of the whole paid set's ZO loss gradient;
- "low-rank fit (outputs)" / "low-rank fit (loss)": alternating least squares for the
  per-image gradients as B·a_i with one d × k basis B shared by all images (each image's
  q_e differences constrain its own a_i; all of them B).

Prints tables and writes benchmarks/results/NAME.json (default subspace_gate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from barapi import api
from barapi.head import PROB_FLOOR, LinearHead, centred_log_probs
from barapi.query import QueryService
from barapi.trainer import Task, Trainer, build_heads, run_sync
from barapi.whitebox import ProgramImages, autograd_gradient, target_scores
from benchmarks.common import RESULTS, command_line, markdown_table, paired, write_results

F64 = NDArray[np.float64]
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits 0 vs 1, nudenet nsfw": ("nudenet-nsfw", {"dataset": "digits", "classes": "0,1"}),
    "sneaker vs sandal, nudenet nsfw": ("nudenet-nsfw", {"dataset": "@fashion",
                                                          "classes": "Sneaker,Sandal"}),
    "digits 0–4, imagenet moderation": ("imagenet-moderation",
                                        {"dataset": "digits", "classes": "0,1,2,3,4"}),
}
PAID_IMAGES = int(0.25 * 25.0 / 1.20 * 1000)
"""A quarter of a $25 budget at the Clarifai card's $1.20 per 1,000 images (budgets/)."""
MINIBATCH, N_MINIBATCHES = 20, 50


@dataclass
class Truth:
    """White-box gradients at one program W: output Jacobians (N, K', d) and per-image loss
    gradients (N, d), float64."""

    jacobians: F64
    losses: F64

    @property
    def covariance(self) -> F64:
        g = self.jacobians.reshape(-1, self.jacobians.shape[-1])
        return g.T @ g / len(self.jacobians)

    @property
    def gradient(self) -> F64:
        return self.losses.mean(axis=0)


def capture(basis: F64, g: F64) -> float:
    """Share of ‖g‖² in the span of the orthonormal columns of `basis` (d, k)."""
    return float(np.sum((basis.T @ g) ** 2) / max(float(g @ g), 1e-300))


def capture_matrix(basis: F64, target: F64) -> float:
    """Mean share of the orthonormal columns of `target` in span(basis): 1 when the spans
    agree, k/d for a random k-subspace."""
    return float(np.sum((basis.T @ target) ** 2) / target.shape[1])


def minibatch_capture(basis: F64, per_image: F64, rng: np.random.Generator) -> float:
    shares = [capture(basis, per_image[rng.choice(len(per_image), MINIBATCH, replace=False)]
                      .mean(axis=0)) for _ in range(N_MINIBATCHES)]
    return float(np.mean(shares))


def per_sample_error_ratio(per_image: F64, rng: np.random.Generator) -> float:
    """How much larger the zeroth-order error is when each image of a minibatch of B gets its
    own q directions than when the B images share them, at the same queries: mean over
    minibatches of mean_i ‖∇l_i‖² / (B ‖mean_i ∇l_i‖²). For Gaussian directions the one-sided
    estimate's error is (d + 1)/q · ‖g_B‖² when shared and (d + 1)/(qB²) · Σ_i ‖∇l_i‖² per
    image, and its answer-noise term (σ²d/(qBβ²)) is the same for both; so per-image
    directions help only where this ratio is under 1."""
    ratios = []
    for _ in range(N_MINIBATCHES):
        g = per_image[rng.choice(len(per_image), MINIBATCH, replace=False)]
        batch = g.mean(axis=0)
        ratios.append(float(np.mean(np.sum(g * g, axis=1)) / (MINIBATCH * max(float(batch @ batch), 1e-300))))
    return float(np.median(ratios))


def top(matrix: F64, k: int) -> F64:
    """Orthonormal top-k eigenvectors of a symmetric matrix, (d, k)."""
    return np.asarray(np.linalg.eigh(matrix)[1][:, ::-1][:, :k])


def orthonormal(columns: F64, k: int | None = None) -> F64:
    """An orthonormal basis (d, ≤ k) of the span of `columns` (d, m)."""
    u, s, _ = np.linalg.svd(columns, full_matrices=False)
    keep = s > s[0] * 1e-8 if s.size and s[0] > 0 else np.zeros(len(s), bool)
    u = u[:, keep]
    return np.asarray(u if k is None else u[:, :k])


def true_gradients(box: Any, task: Task, head: LinearHead, weights: NDArray[np.float32],
                   windows: NDArray[np.uint8], labels: NDArray[np.int64],
                   chunk: int = 16) -> Truth:
    """Autograd per image, in chunks: one copy of W per image, so that one backward pass of a
    sum gives every image's own gradient."""
    images = ProgramImages(task.program, torch.device("cpu"))
    class_weights = torch.from_numpy(task.weights)
    two = len(box.labels) == 2
    jac, loss_grads = [], []
    for start in range(0, len(windows), chunk):
        part, y = windows[start:start + chunk], torch.from_numpy(labels[start:start + chunk])
        w = torch.tensor(np.repeat(weights[None], len(part), axis=0), requires_grad=True)
        probs = box.probabilities(images(w, part))
        logp = probs.clamp(PROB_FLOOR, 1.0).log().double()
        z = logp - logp.mean(dim=1, keepdim=True)
        columns = z[:, 1:] if two else z
        grads = [torch.autograd.grad(columns[:, k].sum(), w, retain_graph=True)[0]
                 for k in range(columns.shape[1])]
        h = target_scores(head, probs)
        p = h[torch.arange(len(y)), y].clamp_min(1e-12)
        per_image = -class_weights[y] * (1 - p) ** task.gamma * p.log()
        lg = torch.autograd.grad(per_image.sum(), w)[0]
        jac.append(torch.stack(grads, dim=1).reshape(len(part), len(grads), -1).double().numpy())
        loss_grads.append(lg.reshape(len(part), -1).double().numpy())
    return Truth(np.concatenate(jac), np.concatenate(loss_grads))


def spectrum_rows(truth: Truth, ks: list[int], rng: np.random.Generator) -> dict[str, Any]:
    c = truth.covariance
    values = np.linalg.eigvalsh(c)[::-1]
    row: dict[str, Any] = {"participation_ratio": float(values.sum() ** 2 / (values ** 2).sum()),
                           "per_sample_error_ratio": per_sample_error_ratio(truth.losses, rng)}
    for k in ks:
        basis = top(c, k)
        row[f"full_top{k}"] = capture(basis, truth.gradient)
        row[f"batch_top{k}"] = minibatch_capture(basis, truth.losses, rng)
    return row


@dataclass
class Paid:
    """What n images × q_e directions of paid answers say (all float64): directions U
    (n, q_e, d), output differences Δz/β (n, q_e, K'), loss differences Δl/β (n, q_e),
    labels (n,)."""

    directions: F64
    outputs: F64
    losses: F64
    labels: NDArray[np.int64]


def pay(box: Any, task: Task, head: LinearHead, weights: NDArray[np.float32],
        windows: NDArray[np.uint8], labels: NDArray[np.int64], clean: NDArray[np.float32],
        images_each: int, beta: float, two_sided: bool, rng: np.random.Generator) -> Paid:
    """Query each image under `images_each` programs of its own: W + βu (one-sided, against
    the clean answer) or W ± βu (two-sided: half as many directions), u Gaussian."""
    n, d = len(windows), task.program.dim
    q_e = images_each // 2 if two_sided else images_each
    u = rng.standard_normal((n, q_e, d))
    steps = np.concatenate([u, -u], axis=1) if two_sided else u
    points = (weights.reshape(-1)[None, None] + beta * steps).astype(np.float32)
    v = points.shape[1]
    images = np.concatenate([
        task.program.compose(windows[i:i + 1], task.program.perturbation(
            points[i].reshape(v, *task.program.shape)))
        for i in range(n)])  # image-major: image i's v variants together
    probs = answers(box, images).reshape(n, v, -1)
    two = probs.shape[-1] == 2
    z = centred_log_probs(probs.reshape(n * v, -1)).reshape(n, v, -1)
    loss = per_image_loss(task, head, probs.reshape(n * v, -1),
                          np.repeat(labels, v)).reshape(n, v)
    if two_sided:
        dz = (z[:, :q_e] - z[:, q_e:]) / (2 * beta)
        dl = (loss[:, :q_e] - loss[:, q_e:]) / (2 * beta)
    else:
        dz = (z - centred_log_probs(clean)[:, None]) / beta
        dl = (loss - per_image_loss(task, head, clean, labels)[:, None]) / beta
    return Paid(u, dz[..., 1:] if two else dz, dl, labels)


def exact(truth: Truth, pick: NDArray[np.int64], labels: NDArray[np.int64], q_e: int,
          rng: np.random.Generator) -> Paid:
    """The control: what the two-sided design would measure if every difference were the
    exact directional derivative (white-box, no query): the estimators' own limit."""
    u = rng.standard_normal((len(pick), q_e, truth.losses.shape[1]))
    return Paid(u, np.einsum("imd,ijd->ijm", truth.jacobians[pick], u),
                np.einsum("id,ijd->ij", truth.losses[pick], u), labels)


def answers(box: Any, images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The box's answers to 8-bit images, as barapi's query service reads them (each call its
    own event loop, so each its own service)."""
    return np.asarray(asyncio.run(QueryService(box).predict_proba(images)))


def per_image_loss(task: Task, head: LinearHead, probs: NDArray[np.floating],
                   labels: NDArray[np.int64]) -> F64:
    h = head.scores(probs)
    p = np.clip(h[np.arange(len(labels)), labels], 1e-12, 1.0)
    return np.asarray(-task.weights[labels] * (1 - p) ** task.gamma * np.log(p))


def low_rank_fit(u: F64, y: F64, k: int, start: F64, iterations: int = 15,
                 ridge: float = 1e-3) -> F64:
    """Alternating least squares for y[i, j, m] ≈ u[i, j]ᵀ B a[i, m]: B (d, k) shared by all
    images, a (n, M, k) per image and output; returns an orthonormal basis of span(B)."""
    n, _, d = u.shape
    b = start.copy()
    gram_u = np.einsum("ijd,ije->ide", u, u, optimize=True)  # Σ_j u uᵀ per image, (n, d, d)
    for _ in range(iterations):
        ub = np.einsum("ijd,dk->ijk", u, b)  # (n, q_e, k)
        gram = np.einsum("ijk,ijl->ikl", ub, ub) + ridge * np.eye(k)
        a = np.linalg.solve(gram[:, None], np.einsum("ijk,ijm->imk", ub, y)[..., None])[..., 0]
        # vec(B) normal equations: rows kron(u_ij, a_im) for every (i, j, m)
        outer_a = np.einsum("imk,iml->ikl", a, a)  # (n, k, k)
        lhs = (gram_u.reshape(n, d * d).T @ outer_a.reshape(n, k * k)).reshape(d, d, k, k)
        lhs = lhs.transpose(0, 2, 1, 3).reshape(d * k, d * k)  # Σ_i S_i ⊗ (Σ_m a aᵀ)
        rhs = np.einsum("ijd,ijm,imk->dk", u, y, a, optimize=True).reshape(d * k)
        previous = b
        b = orthonormal(np.linalg.solve(lhs + ridge * np.eye(d * k), rhs).reshape(d, k), k)
        if b.shape[1] < k or np.linalg.norm(previous.T @ b) ** 2 > k - 1e-4:
            break  # rank lost, or the span no longer moves
    return b


def estimators(paid: Paid, n_classes: int) -> dict[str, Callable[[int], F64]]:
    u, dz, dl = paid.directions, paid.outputs, paid.losses
    flat_u = u.reshape(-1, u.shape[-1])
    m_out = np.einsum("n,nd,ne->de", (dz ** 2).sum(-1).reshape(-1), flat_u, flat_u)
    m_loss = np.einsum("n,nd,ne->de", (dl ** 2).reshape(-1), flat_u, flat_u)
    per_image_out = np.einsum("ijm,ijd->imd", dz, u) / u.shape[1]  # (n, K', d)
    means = np.concatenate([per_image_out[paid.labels == c].mean(axis=0)
                            for c in range(n_classes)]).T
    zo_loss = np.einsum("ij,ijd->d", dl, u) / dl.size
    return {
        "output 2nd moment": lambda k: top(m_out, k),
        "loss 2nd moment": lambda k: top(m_loss, k),
        "class-mean ZO span": lambda k: orthonormal(means, k),
        "ZO loss gradient": lambda k: orthonormal(zo_loss[:, None], 1),
        "low-rank fit (outputs)": lambda k: low_rank_fit(u, dz, k, top(m_out, k)),
        "low-rank fit (loss)": lambda k: low_rank_fit(u, dl[..., None], k, top(m_loss, k)),
    }


def projected(make: Callable[[Task], Any], basis: F64) -> Callable[[Task], Any]:
    """A GradientFn factory whose gradient is `make`'s projected onto span(basis)."""
    def factory(task: Task) -> Any:
        inner = make(task)

        async def gradient(weights: Any, head: Any, windows: Any, labels: Any, step: int) -> Any:
            loss, grad, probs = await inner(weights, head, windows, labels, step)
            flat = grad.reshape(-1).astype(np.float64)
            return loss, (basis @ (basis.T @ flat)).reshape(grad.shape).astype(np.float32), probs
        return gradient
    return factory


def run_ar(config: api.RunConfig, box: Any, split: Any, basis: F64 | None) -> Any:
    make: Callable[[Task], Any] = lambda task: autograd_gradient(box, task)  # noqa: E731
    trainer = Trainer(config, QueryService(box), split, None,
                      make if basis is None else projected(make, basis))
    return run_sync(trainer)


def gate(name: str, seed: int, ks: list[int], project: list[int], beta: float,
         sides: list[str], with_ar: bool, quick: bool) -> list[dict[str, Any]]:
    from barapi.adapters.boxes import create_box as make_box
    from benchmarks.suite import with_dataset

    box_name, values = TASKS[name]
    settings = {**with_dataset(values), "m": 1, "device": "cpu", "seed": seed}
    if quick:
        settings.update(epochs=1, per_class=12)
    config = api.make_config(**settings)
    box = make_box(box_name, device="cpu", input_size=config.input_size
                   if not box_name.startswith("nudenet") else None)
    split = api.load_split(config)
    task = Task(config, split)
    _, head = asyncio.run(build_heads(QueryService(box), task))
    assert isinstance(head, LinearHead)
    windows, labels = task.windows["train"], split.train.labels
    rng = np.random.default_rng([seed, 30])
    zeros = task.program.zeros()
    clock = time.monotonic()
    truth0 = true_gradients(box, task, head, zeros, windows, labels)
    log(f"{name} seed {seed}: white-box gradients at W = 0 ({time.monotonic() - clock:.0f} s)")
    base = {"task": name, "box": box_name, "seed": seed, "train": len(labels),
            "d": task.program.dim}
    rows = [{**base, "part": "a", "at": "W = 0", **spectrum_rows(truth0, ks, rng)}]

    # (b) paid answers at W = 0, against the true loss gradient there
    n = min(len(labels), 200)
    pick = rng.choice(len(labels), n, replace=False)
    clean = answers(box, task.program.images(windows[pick], zeros))
    d = task.program.dim
    for side in sides:
        clock = time.monotonic()
        paid = (exact(truth0, pick, labels[pick], PAID_IMAGES // n // 2, rng) if side == "exact"
                else pay(box, task, head, zeros, windows[pick], labels[pick], clean,
                         PAID_IMAGES // n, beta, side == "two-sided", rng))
        q_e = paid.directions.shape[1]
        log(f"{name} seed {seed}: {n} images × {q_e} directions, {side} "
            f"({time.monotonic() - clock:.0f} s)")
        true_dirs = np.einsum("imd,ijd->ijm", truth0.jacobians[pick], paid.directions)
        agreement = float(np.corrcoef(true_dirs.reshape(-1), paid.outputs.reshape(-1))[0, 1])
        for estimator, basis_of in estimators(paid, split.train.n_classes).items():
            row: dict[str, Any] = {**base, "part": "b", "estimator": estimator, "n": n,
                                   "q_e": q_e, "differences": side, "beta": beta,
                                   "paid_images": 0 if side == "exact" else n * (PAID_IMAGES // n),
                                   "difference_vs_true_corr": agreement}
            for k in ks:
                basis = basis_of(k)
                row[f"full_top{k}"] = capture(basis, truth0.gradient)
                row[f"batch_top{k}"] = minibatch_capture(basis, truth0.losses, rng)
                row[f"random_top{k}"] = basis.shape[1] / d
                row[f"overlap_top{k}"] = capture_matrix(basis, top(truth0.covariance, k))
                if estimator == "ZO loss gradient":
                    break
            rows.append(row)
    if not with_ar:
        return rows

    # (a) later in training: AR's own program, and AR projected on C(W = 0)'s top k
    ar = run_ar(config, box, split, None)
    rows.append({**base, "part": "ar", "project": "none", "test_accuracy": ar.test_accuracy,
                 "steps": ar.steps})
    assert ar.head is not None
    truth_t = true_gradients(box, task, ar.head, ar.weights, windows, labels)
    later = {**base, "part": "a", "at": "AR's selected program", **spectrum_rows(truth_t, ks, rng)}
    for k in ks:
        later[f"full_top{k}_of_C0"] = capture(top(truth0.covariance, k), truth_t.gradient)
    rows.append(later)
    for k in project:
        result = run_ar(config, box, split, top(truth0.covariance, k))
        rows.append({**base, "part": "ar", "project": f"top {k} of C(W = 0)",
                     "test_accuracy": result.test_accuracy, "steps": result.steps})
        log(f"{name} seed {seed}: AR {ar.test_accuracy:.3f}, projected on top {k}: "
            f"{result.test_accuracy:.3f}")
    return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary_tables(rows: list[dict[str, Any]], ks: list[int]) -> str:
    def stat(values: list[float]) -> str:
        a = np.asarray(values, dtype=float)
        return f"{100 * a.mean():.0f}% ± {100 * a.std(ddof=1) if len(a) > 1 else 0:.0f}"

    out = []
    table_a = []
    for (task, at) in dict.fromkeys((r["task"], r["at"]) for r in rows if r["part"] == "a"):
        same = [r for r in rows if r["part"] == "a" and (r["task"], r["at"]) == (task, at)]
        line = {"task": task, "at": at, "seeds": len(same),
                "pr": f"{np.mean([r['participation_ratio'] for r in same]):.1f}"}
        for k in ks:
            if all(f"full_top{k}" in r for r in same):
                line[f"k{k}"] = (stat([r[f"full_top{k}"] for r in same]) + " / "
                                 + stat([r[f"batch_top{k}"] for r in same]))
        table_a.append(line)
        if all(f"full_top{ks[0]}_of_C0" in r for r in same):  # the same gradient, C(W = 0)
            table_a.append({"task": task, "at": f"{at}, in C(W = 0)'s top k", "seeds": len(same),
                            "pr": "–", **{f"k{k}": stat([r[f"full_top{k}_of_C0"] for r in same])
                                          for k in ks}})
    out.append("(a) share of the loss gradient's energy in C's top-k eigenvectors "
               "(training set / minibatch of 20)\n\n")
    out.append(markdown_table(table_a, [("task", "task"), ("at", "program"), ("seeds", "seeds"),
                                        ("pr", "participation ratio")]
                              + [(f"k{k}", f"top {k}") for k in ks]))
    table_b = []
    for (task, est, side) in dict.fromkeys((r["task"], r["estimator"], r["differences"])
                                           for r in rows if r["part"] == "b"):
        same = [r for r in rows if r["part"] == "b"
                and (r["task"], r["estimator"], r["differences"]) == (task, est, side)]
        line = {"task": task, "estimator": est, "seeds": len(same),
                "paid": f"{same[0]['n']} × {same[0]['q_e']} {side}",
                "corr": f"{np.mean([r['difference_vs_true_corr'] for r in same]):.2f}"}
        for k in ks:
            if all(f"full_top{k}" in r for r in same):
                line[f"k{k}"] = (stat([r[f"full_top{k}"] for r in same]) + " / "
                                 + stat([r[f"batch_top{k}"] for r in same]))
        overlap = [r["overlap_top8"] for r in same if "overlap_top8" in r]
        line["overlap"] = stat(overlap) if overlap else "–"
        table_b.append(line)
    out.append("\n\n(b) share of the true loss gradient in subspaces estimated from paid answers "
               f"(≤ {PAID_IMAGES:,} images; training set / minibatch; random subspace: k/192)\n\n")
    out.append(markdown_table(table_b, [("task", "task"), ("estimator", "estimator"),
                                        ("seeds", "seeds"), ("paid", "images × directions"),
                                        ("corr", "corr. Δz vs true")]
                              + [(f"k{k}", f"top {k}") for k in ks]
                              + [("overlap", "overlap with C's top 8")]))
    table_c = []
    for task in dict.fromkeys(r["task"] for r in rows if r["part"] == "ar"):
        by = {(r["project"], r["seed"]): r["test_accuracy"] for r in rows
              if r["part"] == "ar" and r["task"] == task}
        for project in dict.fromkeys(p for p, _ in by):
            seeds = sorted(s for p, s in by if p == project)
            acc = [by[(project, s)] for s in seeds]
            diff = [by[(project, s)] - by[("none", s)] for s in seeds if ("none", s) in by]
            table_c.append({"task": task, "gradient": project, "seeds": len(seeds),
                            "acc": f"{100 * np.mean(acc):.1f}%",
                            "diff": "–" if project == "none" else paired(diff)})
    out.append("\n\n(a) white-box AR with its gradient projected (test accuracy; paired "
               "difference to AR, 95% interval)\n\n")
    out.append(markdown_table(table_c, [("task", "task"), ("gradient", "AR's gradient"),
                                        ("seeds", "seeds"), ("acc", "test acc."),
                                        ("diff", "− AR, points")]))
    return "".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 24, 32])
    parser.add_argument("--project", type=int, nargs="*", default=[8])
    parser.add_argument("--beta", type=float, default=0.02)
    parser.add_argument("--sides", nargs="+", choices=["one-sided", "two-sided", "exact"],
                        default=["one-sided", "two-sided", "exact"], help="differences of "
                        "part (b); exact: the white-box directional derivatives (the control)")
    parser.add_argument("--no-ar", action="store_true", help="skip the AR runs (part (a) "
                        "after training, and the projected AR)")
    parser.add_argument("--quick", action="store_true", help="12 images a class, 1 epoch, "
                        "writes nothing: proves the code works")
    parser.add_argument("--name", default="subspace_gate", help="results file name")
    parser.add_argument("--report", nargs="+", metavar="NAME", help="print the tables of "
                        "these results files (benchmarks/results/NAME.json) together; run nothing")
    args = parser.parse_args(argv)
    if args.report:
        stored = [r for name in args.report
                  for r in json.loads((RESULTS / f"{name}.json").read_text())["rows"]]
        first: dict[tuple[Any, ...], dict[str, Any]] = {}  # part (a) repeats in a task's files
        for r in stored:
            if r["part"] == "a":
                first.setdefault((r["task"], r["at"], r["seed"]), r)
        rows = [r for r in stored if r["part"] != "a"
                or first[(r["task"], r["at"], r["seed"])] is r]
        print(summary_tables(rows, args.ks))
        return rows
    rows = [r for name in args.tasks for seed in args.seeds
            for r in gate(name, seed, args.ks, args.project, args.beta, args.sides,
                           not args.no_ar, args.quick)]
    table = summary_tables(rows, args.ks)
    print(table)
    if not args.quick:
        write_results(args.name, rows, command_line("subspace_gate", argv), table=table)
    return rows


if __name__ == "__main__":
    main()
