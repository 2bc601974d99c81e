"""The surrogate prior (barapi.surrogate, zo.PriorGuided): P-RGF's weight, the estimate,
the surrogate never touching the black box, a useless surrogate falling back to plain BAR,
and resumes that continue with the same proxy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LinearSoftmaxAdapter, tiny_config
from test_blackbox import Tripwire, lite0_model  # noqa: F401  (the fixture)
from test_trainer import Crash, CrashingAdapter

from barapi import api
from barapi.adapters.local import LocalAdapter, imagenet_labels
from barapi.checkpoint import load_checkpoint
from barapi.config import make_config
from barapi.errors import ConfigError
from barapi.zo import LAMBDA_CAP, PriorGuided, ZOEstimator, prgf_lambda

DIM = 192  # a 3×8×8 program


def test_prgf_weight_is_zero_for_a_useless_prior_and_grows_with_alignment() -> None:
    q = 9
    low, high = 1 / (DIM + 2 * q - 2), (2 * q - 1) / (DIM + 2 * q - 2)
    assert prgf_lambda(0.0, DIM, q) == 0.0 and prgf_lambda(0.99 * low, DIM, q) == 0.0
    middle = [prgf_lambda(a2, DIM, q) for a2 in np.linspace(1.05 * low, 0.95 * high, 8)]
    assert all(0 < lam < 1 for lam in middle) and middle == sorted(middle)
    assert prgf_lambda(1.01 * high, DIM, q) == LAMBDA_CAP == prgf_lambda(1.0, DIM, q)


def cosines(alpha: float, trials: int = 200) -> tuple[float, float, float]:
    """(mean cos of P-RGF's estimate, of plain Gaussian RGF at the same q + 1 evaluations,
    mean α² estimated) on a linear loss whose gradient the prior meets at cosine `alpha`."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal(DIM)
    other = rng.standard_normal(DIM)
    other -= other @ g / (g @ g) * g
    prior = alpha * g / np.linalg.norm(g) + np.sqrt(1 - alpha**2) * other / np.linalg.norm(other)
    guided, plain = PriorGuided(10, 0.05), ZOEstimator(10, 0.05, "gaussian")
    lam = prgf_lambda(alpha**2, DIM, 9)
    out: list[list[float]] = [[], [], []]
    w = np.zeros((3, 8, 8), dtype=np.float32)
    for t in range(trials):
        for k, est in enumerate((guided, plain)):
            r = np.random.default_rng(t)
            d = est.sample(r, prior.reshape(w.shape), lam) if k == 0 else est.sample(r, w.shape)
            losses = np.array([g @ p.ravel() for p in est.points(w, d)])
            e = est.gradient(losses, d).ravel()
            out[k].append(float(e @ g / np.linalg.norm(e) / np.linalg.norm(g)))
            if k == 0:
                out[2].append(guided.sample_alpha2(losses, lam, DIM) or 0.0)
    return float(np.mean(out[0])), float(np.mean(out[1])), float(np.mean(out[2]))


def test_a_useless_prior_costs_little_and_a_good_one_helps() -> None:
    useless, plain, alpha2 = cosines(0.0)
    assert alpha2 < 0.01 and useless >= 0.9 * plain  # one direction of ten spent on the prior
    good, plain, alpha2 = cosines(0.6)
    assert good > 2 * plain and alpha2 == pytest.approx(0.36, abs=0.08)


def test_surrogate_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="surrogate needs"):
        make_config(surrogate="efficientnet-lite0", two_sided=True)
    with pytest.raises(ConfigError, match="surrogate"):
        api.train(tiny_config(surrogate="resnet-9000", epochs=1), adapter=LinearSoftmaxAdapter())


def test_the_surrogate_never_touches_the_black_box(lite0_model: torch.nn.Module) -> None:  # noqa: F811
    """The black box is EfficientNet-Lite0 behind a tripwire (inference calls only); the
    surrogate is EfficientNet-Lite0 too, but our own copy, differentiated freely."""
    before = {k: v.clone() for k, v in lite0_model.state_dict().items()}
    tripwire = Tripwire(lite0_model)
    adapter = LocalAdapter(tripwire, imagenet_labels(), input_size=32, device="cpu")
    result = api.train(tiny_config(epochs=1, classes="0,1", surrogate="efficientnet-lite0"),
                       adapter=adapter)
    assert tripwire.calls > 0 and result.steps > 0
    assert all(p.grad is None for p in lite0_model.parameters())
    assert all(torch.equal(before[k], v) for k, v in lite0_model.state_dict().items())


def test_a_useless_surrogate_falls_back_to_plain_directions(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """A surrogate with random weights (no relation to the black box) gets a prior weight
    of about 0, so the run is plain BAR with one direction of q spent on measuring it."""
    from barapi.adapters import local

    def random_weights(name: str) -> torch.nn.Module:
        net = original(name)
        torch.manual_seed(0)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        return net

    original = local._efficientnet_lite
    monkeypatch.setattr(local, "_efficientnet_lite", random_weights)
    config = tiny_config(epochs=1, surrogate="efficientnet-lite0")
    result = api.train(config, adapter=LinearSoftmaxAdapter(), runs_root=tmp_path)
    steps = [r for r in api.RunFolder.open(result.run_dir).metrics() if r["event"] == "step"]
    weights = [r["prior_weight"] for r in steps]
    assert len(weights) >= 6 and np.mean(weights) < 0.1, weights
    plain = api.train(tiny_config(epochs=1), adapter=LinearSoftmaxAdapter())
    assert result.best_val_accuracy >= plain.best_val_accuracy - 0.1


def test_a_resumed_surrogate_run_continues_with_the_same_proxy(tmp_path: Path) -> None:
    config = tiny_config(epochs=3, eval_every=2, surrogate="efficientnet-lite0")
    whole = api.train(config, adapter=LinearSoftmaxAdapter(), runs_root=tmp_path / "a")
    with pytest.raises(Crash):
        api.train(config, adapter=CrashingAdapter(after_calls=30), runs_root=tmp_path / "b")
    (folder,) = (tmp_path / "b").iterdir()
    arrays, meta = load_checkpoint(folder / "checkpoint.npz")
    assert 0 < meta["step"] < whole.steps and "surrogate.xx" in arrays
    resumed = api.train(config, adapter=LinearSoftmaxAdapter(), resume=folder)
    assert np.array_equal(resumed.final_weights, whole.final_weights)
