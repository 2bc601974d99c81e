"""The BAR path is black-box: no autograd, no access to the model beyond calling it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import tiny_config

from barapi import api
from barapi.adapters.local import LocalAdapter, _efficientnet_lite, imagenet_labels


class Tripwire:
    """Callable stand-in for the model: calling is allowed (in inference mode only); any
    other access — weights, parameters, hooks, state_dict — fails the test."""

    def __init__(self, model: torch.nn.Module) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "calls", 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "the black box was called with autograd enabled"
        assert torch.is_inference_mode_enabled()
        object.__setattr__(self, "calls", self.calls + 1)
        return self._model(x)

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"BAR touched the model's attribute {name!r}")


def forbid_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise AssertionError("autograd was used on the BAR path")

    monkeypatch.setattr(torch.autograd, "backward", boom)
    monkeypatch.setattr(torch.autograd, "grad", boom)
    monkeypatch.setattr(torch.Tensor, "backward", boom)


@pytest.fixture(scope="module")
def lite0_model() -> torch.nn.Module:
    return _efficientnet_lite("efficientnet-lite0").to(memory_format=torch.channels_last)


def test_bar_never_runs_autograd_nor_reads_the_model(lite0_model: torch.nn.Module,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    before = {k: v.clone() for k, v in lite0_model.state_dict().items()}
    tripwire = Tripwire(lite0_model)
    adapter = LocalAdapter(tripwire, imagenet_labels(), input_size=32, device="cpu")
    forbid_autograd(monkeypatch)
    result = api.train(tiny_config(epochs=1), adapter=adapter)
    assert tripwire.calls > 0 and result.steps > 0
    assert not np.array_equal(result.final_weights, np.zeros_like(result.weights))
    assert all(p.grad is None for p in lite0_model.parameters())
    assert all(torch.equal(before[k], v) for k, v in lite0_model.state_dict().items())


def test_the_tripwire_catches_white_box_ar(lite0_model: torch.nn.Module) -> None:
    # the same guard must fire on the white-box baseline, or the test above proves nothing
    adapter = LocalAdapter(Tripwire(lite0_model), imagenet_labels(), input_size=32, device="cpu")
    with pytest.raises(AssertionError, match="autograd enabled"):
        api.train(tiny_config(epochs=1, method="ar"), adapter=adapter)


def test_bar_engine_runs_without_torch_installed() -> None:
    code = textwrap.dedent("""
        import sys

        class NoTorch:  # any import of torch now fails
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")

        sys.meta_path.insert(0, NoTorch())
        sys.path.insert(0, "tests")
        from conftest import LinearSoftmaxAdapter, tiny_config
        from barapi import api
        result = api.train(tiny_config(epochs=1, canvas=16, window=8), adapter=LinearSoftmaxAdapter())
        assert result.steps > 0 and "torch" not in sys.modules
        print("ok", result.steps)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
