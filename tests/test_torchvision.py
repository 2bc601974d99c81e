"""The paper's black boxes through torchvision: ResNet-50, Inception-v3, DenseNet-121, with
weights from a file the user names (barapi never downloads). These need a torchvision that
imports beside torch: CI runs them in a second virtual environment (torch 2.14.1,
torchvision 0.29.1; see .ci/run); beside the pinned torch 2.13.0 PyPI's torchvision does not
import, and they are skipped with that reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
try:
    tvm = pytest.importorskip("torchvision.models")
except RuntimeError as exc:  # "operator torchvision::nms does not exist" beside torch 2.13.0
    pytest.skip(f"torchvision does not import beside torch {torch.__version__}: {exc}",
                allow_module_level=True)

from barapi import make_config, train  # noqa: E402
from barapi.adapters.local import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION, create  # noqa: E402
from barapi.errors import ConfigError  # noqa: E402

BUILD = {"resnet50": lambda: tvm.resnet50(weights=None),
         "inception_v3": lambda: tvm.inception_v3(weights=None, aux_logits=True, init_weights=False),
         "densenet121": lambda: tvm.densenet121(weights=None)}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised weights saved as the user would save the official files."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name, build in BUILD.items():
        torch.manual_seed(0)
        files[name] = folder / f"{name}.pth"
        torch.save(build().state_dict(), files[name])
    return files


def images(n: int, side: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_the_papers_models_load_at_their_size_and_answer_deterministically(
        name: str, weight_files: dict[str, Path]) -> None:
    adapter = create(model=name, device="cpu", weights=str(weight_files[name]))
    assert adapter.input_size == TORCHVISION[name] == (299 if name == "inception_v3" else 224)
    assert adapter.n_sources == 1000 and adapter.labels[0] == "tench"
    assert np.allclose(adapter._mean.flatten().tolist(), IMAGENET_MEAN)
    assert np.allclose(adapter._std.flatten().tolist(), IMAGENET_STD)
    x = images(3)
    first = asyncio.run(adapter.predict_proba(x))
    again = asyncio.run(adapter.predict_proba(x[::-1].copy()))[::-1]
    assert first.shape == (3, 1000) and np.allclose(first.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(first, again)  # an image's answer does not depend on its batch
    # the loaded weights are the file's: the same as a model built from that state dict
    net = BUILD[name]()
    net.load_state_dict(torch.load(weight_files[name], weights_only=True))
    net.eval()
    with torch.no_grad():
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        t = torch.nn.functional.interpolate(t, size=(adapter.input_size,) * 2, mode="bilinear",
                                            align_corners=False, antialias=False)
        t = (t - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        direct = net(t).softmax(dim=1).numpy()
    assert np.allclose(first, direct, atol=1e-4)


def test_a_missing_or_wrong_weight_file_is_one_line(weight_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never downloads"):
        create(model="resnet50", device="cpu", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(ConfigError, match="not a resnet50 state dict"):
        create(model="resnet50", device="cpu", weights=str(weight_files["densenet121"]))


def test_a_tiny_bar_run_on_resnet50(weight_files: dict[str, Path], tmp_path: Path) -> None:
    config = make_config(model="resnet50", weights=str(weight_files["resnet50"]), device="cpu",
                         input_size=64, canvas=32, window=16, resolution=4, classes="0,1",
                         per_class=5, q=1, epochs=1, patience=0)
    result = train(config, runs_root=tmp_path)
    assert result.steps == 1 and 0 <= result.test_accuracy <= 1
    assert result.run_dir is not None and (result.run_dir / "checkpoint.npz").exists()
