"""The few-output boxes (barapi.adapters.boxes): honest concept scores, deterministic per
image, a white-box reference that matches the black box, and BAR never differentiating them."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_blackbox import Tripwire, forbid_autograd

from barapi import api
from barapi.adapters import boxes
from barapi.adapters.local import LocalAdapter, create, imagenet_labels
from barapi.errors import ConfigError
from barapi.trainer import Task

MISSING = [name for name in ("nudenet", "onnxruntime", "onnx2torch")
           if importlib.util.find_spec(name) is None]
needs_nudenet = pytest.mark.skipif(
    bool(MISSING), reason=f"needs the package(s) {', '.join(MISSING)}: pip install -e '.[nudenet]'")


@functools.cache
def digit_queries(n: int = 8, canvas: int = 112) -> np.ndarray:
    """(n, canvas, canvas, 3) uint8: digits embedded as `barapi run` embeds them (window of
    half the canvas, centred), under the blank program (W = 0)."""
    config = tiny_config(canvas=canvas, window=canvas // 2, classes="0,1", per_class=n)
    task = Task(config, api.load_split(config))
    windows = task.windows["train"][:n]
    return task.program.images(windows, task.program.zeros())


@pytest.fixture(scope="module")
def imagenet_views() -> dict[str, LocalAdapter]:
    return boxes.box_views("imagenet", device="cpu", input_size=112)


@pytest.fixture(scope="module")
def nudenet_views() -> dict[str, LocalAdapter]:
    if MISSING:
        pytest.skip(f"needs the package(s) {', '.join(MISSING)}: pip install -e '.[nudenet]'")
    return boxes.box_views("nudenet", device="cpu")


def answers(box: Any, x: np.ndarray) -> np.ndarray:
    return asyncio.run(box.predict_proba(x))


def test_views_are_clarifais_concepts_in_its_order() -> None:
    from barapi.adapters.clarifai import CONCEPTS

    assert list(boxes.MODERATION) == CONCEPTS["moderation-recognition"]
    assert list(boxes.NSFW) == CONCEPTS["nsfw-recognition"]
    assert len(boxes.BOXES) == 6 and "imagenet-moderation" in boxes.BOXES


def test_every_group_name_is_an_imagenet_class_and_the_groups_partition_them() -> None:
    labels = imagenet_labels()
    for names in boxes.IMAGENET_GROUPS.values():
        assert all(name in labels for name in names), [n for n in names if n not in labels]
    for view in boxes.VIEWS:
        members = boxes.imagenet_members(view, labels)
        flat = sorted(i for m in members for i in m)
        assert flat == list(range(1000))  # each class in exactly one concept
    moderation = boxes.imagenet_members("moderation", labels)
    assert len(moderation[0]) > 900  # "safe" is the rest: almost everything
    assert [labels[i] for i in moderation[4]].count("missile") == 2  # a shared name takes both
    with pytest.raises(ConfigError, match="do not exist"):
        boxes.imagenet_members("moderation", ["tench"] * 1000)


def test_modk_is_the_old_fold() -> None:
    from barapi.emulate import fold_matrix

    for k in (2, 5):
        matrix = np.zeros((1000, k), dtype=np.float32)
        for j, m in enumerate(boxes.modk_members(k)):
            matrix[m, j] = 1
        assert np.array_equal(matrix, fold_matrix(1000, k))


def test_imagenet_boxes_answer_scores_and_safe_saturates(imagenet_views: dict[str, Any]) -> None:
    x = digit_queries()
    moderation, nsfw = answers(imagenet_views["moderation"], x), answers(imagenet_views["nsfw"], x)
    assert moderation.shape == (8, 5) and nsfw.shape == (8, 2) and moderation.dtype == np.float32
    assert ((moderation >= 0) & (moderation <= 1)).all() and ((nsfw >= 0) & (nsfw <= 1)).all()
    assert (moderation[:, 0] > 0.9).all() and (nsfw[:, 1] > 0.9).all()
    assert imagenet_views["moderation"].answers == "scores"


def test_the_easy_box_does_not_saturate() -> None:
    box = boxes.create_box("modk-moderation", device="cpu", input_size=112)
    assert answers(box, digit_queries())[:, 0].max() < 0.9


def test_boxes_have_distinct_identities(imagenet_views: dict[str, Any]) -> None:
    ids = {box.identity for box in imagenet_views.values()}
    ids.add(boxes.create_box("modk-nsfw", device="cpu", input_size=112).identity)
    ids.add(create(model="efficientnet-lite0", device="cpu", input_size=112).identity)
    assert len(ids) == 4
    with pytest.raises(ConfigError, match="nudenet-moderation"):
        create(model="no-such-box")


def test_an_imagenet_box_answer_does_not_depend_on_its_request(imagenet_views: dict[str, Any]) -> None:
    box, x = imagenet_views["moderation"], digit_queries(16, 64)
    whole = box._forward(x)
    assert np.array_equal(box._forward(x[::-1])[::-1], whole)
    assert np.array_equal(box._forward(x[5:6]), whole[5:6])


def test_imagenet_box_gradients_flow(imagenet_views: dict[str, Any]) -> None:
    box = imagenet_views["moderation"]
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    box.probabilities(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ar_on_an_imagenet_box_runs(tmp_path: Any) -> None:
    config = tiny_config(model="imagenet-nsfw", method="ar", classes="0,1", per_class=5, epochs=1)
    result = api.train(config, runs_root=tmp_path)
    assert result.steps > 0 and 0 <= result.test_accuracy <= 1


def test_bar_never_differentiates_an_imagenet_box(monkeypatch: pytest.MonkeyPatch) -> None:
    box = boxes.create_box("imagenet-moderation", device="cpu", input_size=32)
    tripwire = Tripwire(box._model)
    box._model = tripwire
    forbid_autograd(monkeypatch)
    result = api.train(tiny_config(epochs=1, classes="0,1", per_class=5), adapter=box)
    assert tripwire.calls > 0 and result.steps > 0


def test_the_configs_nudenet_side_is_the_boxes() -> None:
    from barapi.config import NUDENET_SIDE

    assert boxes.NUDENET_SIZE == NUDENET_SIDE


def test_emulators_default_to_the_semantic_box_and_name_the_easy_one() -> None:
    from barapi.cli_emulate import emulate

    for command in emulate.commands.values():  # every provider's emulator
        option = next(p for p in command.params if p.name == "box")
        assert option.default == boxes.DEFAULT_FAMILY == "imagenet"
        assert set(option.type.choices) == {"imagenet", "nudenet", "modk"}  # type: ignore[attr-defined]


def test_the_clarifai_emulator_serves_each_view(imagenet_views: dict[str, Any]) -> None:
    from test_clarifai import with_emulator

    x = digit_queries(4)
    served = {"moderation-recognition": imagenet_views["moderation"],
              "nsfw-recognition": imagenet_views["nsfw"]}

    async def body(emulator: Any, adapter: Any) -> np.ndarray:
        return await adapter.predict_proba(x)

    got = with_emulator(served, None, body)
    assert np.allclose(got, answers(imagenet_views["moderation"], x), atol=1e-6)
    assert np.allclose(ask(served, "nsfw-recognition", x), answers(imagenet_views["nsfw"], x),
                       atol=1e-6)


def ask(served: dict[str, Any], model_id: str, x: np.ndarray) -> np.ndarray:
    """The answers of a Clarifai emulator serving `served` to a request for `model_id`."""
    from barapi.adapters.clarifai import ClarifaiAdapter
    from barapi.emulate import ClarifaiEmulator
    from barapi.keys import Secret

    async def scenario() -> np.ndarray:
        emulator = ClarifaiEmulator(served, "key")
        port = await emulator.start()
        adapter = ClarifaiAdapter(model_id, key=Secret("key"), endpoint=f"127.0.0.1:{port}",
                                  insecure=True)
        try:
            return await adapter.predict_proba(x)
        finally:
            await adapter.aclose()
            await emulator.stop()

    return asyncio.run(scenario())


# ---------------------------------------------------------------- NudeNet


@needs_nudenet
def test_nudenet_boxes_answer_scores_and_safe_saturates(nudenet_views: dict[str, Any]) -> None:
    x = digit_queries()
    moderation, nsfw = answers(nudenet_views["moderation"], x), answers(nudenet_views["nsfw"], x)
    assert moderation.shape == (8, 5) and nsfw.shape == (8, 2) and moderation.dtype == np.float32
    assert ((moderation >= 0) & (moderation <= 1)).all()
    assert (moderation[:, 0] > 0.9).all() and (nsfw[:, 1] > 0.9).all()
    assert (moderation[:, 3:] == np.float32(boxes.NO_SIGNAL)).all()  # drug, gore: no signal
    assert np.allclose(moderation[:, 0], 1 - np.maximum(moderation[:, 1], moderation[:, 2]))
    assert np.allclose(nsfw[:, 0], 1 - moderation[:, 0], rtol=0, atol=1e-6)
    ids = {box.identity for box in nudenet_views.values()}
    assert len(ids) == 2 and all("nudenet" in i for i in ids)


@needs_nudenet
def test_a_nudenet_answer_does_not_depend_on_its_request(nudenet_views: dict[str, Any]) -> None:
    box, x = nudenet_views["moderation"], digit_queries(6)
    whole = box._forward(x)
    assert np.array_equal(box._forward(x[::-1])[::-1], whole)
    assert np.array_equal(box._forward(x[2:3]), whole[2:3])


@needs_nudenet
def test_onnx2torch_agrees_with_onnxruntime(nudenet_views: dict[str, Any]) -> None:
    box = nudenet_views["moderation"]
    runtime = box.runtime
    x = np.concatenate([digit_queries(3), np.random.default_rng(0).integers(
        0, 256, (2, 112, 112, 3), dtype=np.uint8)])
    t = box.resize(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    ort = np.concatenate([runtime.run(t[i:i + 1].numpy()) for i in range(len(x))])
    with torch.no_grad():
        reference = runtime.module(torch.device("cpu"))(t).numpy()
    assert np.abs(ort[:, 4:] - reference[:, 4:]).max() < 1e-4  # class scores in [0, 1]
    assert np.abs(ort[:, :4] - reference[:, :4]).max() < 1e-2  # box coordinates in px
    with torch.no_grad():
        white = box.probabilities(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255).numpy()
    assert np.abs(white - box._forward(x)).max() < 1e-4


@pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None,
                    reason="onnx2torch is not installed (README's test command installs it)")
def test_onnx2torch_imports_without_torchvision_and_leaves_no_placeholder() -> None:
    """The pinned CPU torch has no torchvision beside it (README): onnx2torch still converts
    NudeNet's graph, and no stand-in torchvision outlives its import; its two ops that would
    need torchvision raise one ConfigError instead."""
    import sys

    had = "torchvision" in sys.modules
    convert = boxes.onnx2torch_convert()
    assert callable(convert)
    assert ("torchvision" in sys.modules) == had
    if importlib.util.find_spec("torchvision") is None:
        from onnx2torch.node_converters import roialign

        with pytest.raises(ConfigError, match="torchvision"):
            roialign.roi_align(torch.zeros(1), torch.zeros(1))


@needs_nudenet
def test_nudenet_gradients_flow_and_ar_runs(nudenet_views: dict[str, Any], tmp_path: Any) -> None:
    box = nudenet_views["nsfw"]
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    box.probabilities(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    config = tiny_config(model="nudenet-nsfw", method="ar", classes="0,1", per_class=3, epochs=1,
                         batch=6, input_size=None)  # a NudeNet box runs (and records) 320 px
    result = api.train(config, adapter=box, runs_root=tmp_path)
    assert result.steps > 0 and 0 <= result.test_accuracy <= 1


@needs_nudenet
def test_bar_through_the_emulated_nudenet_box_never_differentiates_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from test_clarifai import with_emulator

    from barapi.adapters.clarifai import ClarifaiAdapter

    runtime = boxes.NudeNetRuntime()  # its own: no onnx2torch module converted yet
    views = {"moderation-recognition": boxes.NudeNetBox("moderation", runtime, device="cpu")}
    forbid_autograd(monkeypatch)
    config = api.make_config(provider="clarifai", classes="0,1", canvas=32, window=16,
                             resolution=4, per_class=4, q=1, epochs=1, batch=8, patience=0)

    async def body(emulator: Any, adapter: ClarifaiAdapter) -> Any:
        session = api.prepare(config, adapter=adapter, budget=5.0, runs_root=tmp_path / "runs",
                              cache_dir=tmp_path / "cache")
        result = await session.trainer.run()
        return emulator.counters.billed_images, result

    billed, result = with_emulator(views, None, body)
    assert billed > 0 and result.steps > 0
    assert runtime._modules == {}  # the torch graph was never even built


def test_a_missing_nudenet_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nudenet" else real(name, *a))
    with pytest.raises(ConfigError, match=r"barapi\[nudenet\]"):
        create(model="nudenet-moderation", device="cpu")
