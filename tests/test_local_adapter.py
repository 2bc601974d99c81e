from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from barapi.adapters.local import LocalAdapter, create
from barapi.adapters.registry import available_providers, create_adapter
from barapi.errors import ConfigError


def test_local_adapter_is_registered_through_entry_points() -> None:
    assert "local" in available_providers()
    with pytest.raises(ConfigError, match="unknown provider"):
        create_adapter("nosuch")


def test_efficientnet_returns_probabilities_over_imagenet(lite0_32: LocalAdapter) -> None:
    x = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    probs = asyncio.run(lite0_32.predict_proba(x))
    assert probs.shape == (5, 1000) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert lite0_32.labels[0] == "tench" and len(lite0_32.labels) == 1000


def test_an_answer_does_not_depend_on_the_rest_of_the_request(lite0_32: LocalAdapter) -> None:
    """Bit for bit, on a CPU: what lets a resumed or partly cached run (whose misses are
    regrouped into other requests) see the answers an uninterrupted one would."""
    x = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    whole = lite0_32._forward(x)
    assert np.array_equal(lite0_32._forward(x[::-1])[::-1], whole)
    assert np.array_equal(lite0_32._forward(x[3:4]), whole[3:4])
    assert np.array_equal(lite0_32._forward(x[5:16]), whole[5:16])  # passes of 8 and 3


def test_any_callable_model() -> None:
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(3, 4))
    adapter = LocalAdapter(net, ["a", "b", "c", "d"], input_size=None, device="cpu")
    probs = asyncio.run(adapter.predict_proba(np.zeros((2, 9, 9, 3), dtype=np.uint8)))
    assert probs.shape == (2, 4)


def test_unknown_model_and_missing_weights_are_named(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown local model 'vgg'"):
        create(model="vgg")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"torchvision|resnet50-.*\.pth"):
        create(model="resnet50", device="cpu")


def test_cuda_request_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        create(device="cuda")
