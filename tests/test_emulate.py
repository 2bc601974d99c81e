"""The emulators' answers: each image's on its own, bit-identical whatever shares its request,
and a full request of incompressible images is accepted."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from barapi.adapters.base import Adapter
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.emulate import ClarifaiEmulator, fold, fold_matrix
from tests.test_clarifai import images, with_emulator


class RowwiseAdapter(Adapter):
    """1,000 float32 probabilities per image, a pure function of that image's bytes."""

    card = "local"
    max_batch = 256
    identity = "test/rowwise-1000"

    def __init__(self) -> None:
        self.labels = [f"s{i}" for i in range(1000)]

    async def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(im.tobytes()).digest()[:8]))
                .dirichlet(np.full(1000, 0.05)) for im in batch]
        return np.array(rows, dtype=np.float32)


def test_fold_is_the_fold_matrix_row_by_row() -> None:
    probs = np.random.default_rng(0).dirichlet(np.full(1000, 0.05), size=33).astype(np.float32)
    for k in (2, 3, 5):
        folded = fold(probs, k)
        assert np.allclose(folded, probs @ fold_matrix(1000, k), rtol=0, atol=1e-6)
        assert all(np.array_equal(folded[i], fold(probs[i:i + 1], k)[0]) for i in range(33))


@pytest.mark.parametrize("model", ["rowwise", "lite0"])
def test_an_answer_does_not_depend_on_the_rest_of_the_request(model: str, request: Any) -> None:
    """What lets an emulated run repeat bit for bit whatever the answer cache already holds
    (misses are regrouped into other requests) or which inputs are asked again after
    MIXED_STATUS."""
    box = RowwiseAdapter() if model == "rowwise" else request.getfixturevalue("lite0_32")
    x = images(20 if model == "lite0" else 40, side=8)

    async def body(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> list[np.ndarray]:
        together = await adapter.predict_proba(x)
        alone = np.concatenate([await adapter.predict_proba(x[i:i + 1]) for i in range(len(x))])
        reversed_ = (await adapter.predict_proba(x[::-1]))[::-1]
        return [together, alone, reversed_, await adapter.predict_proba(x[:7])]

    together, alone, reversed_, first7 = with_emulator(box, None, body)
    assert np.array_equal(together, alone)
    assert np.array_equal(together, reversed_)
    assert np.array_equal(together[:7], first7)


def test_a_full_request_of_incompressible_images_is_answered() -> None:
    """128 random 112 px images: about 4.8 MB of PNG in one request, within the card's 10 MiB
    (gRPC's default 4 MiB message limit refused it)."""
    x = images(128, side=112)

    async def body(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> np.ndarray:
        return await adapter.predict_proba(x)

    probs = with_emulator(RowwiseAdapter(), None, body)
    assert probs.shape == (128, 5) and np.isfinite(probs).all()


def test_the_clarifai_emulator_serves_versions_by_id_and_breaks_its_words_on_demand() -> None:
    """The raw wire: "latest" moves with `publish`, an earlier version is served when named
    and "not found" once retired; answers carry the serving version, renamed concepts keep
    their ids, and `omit_every` leaves the lowest-scored concept out."""
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2
    from conftest import LinearSoftmaxAdapter

    from barapi.emulate import Faults, box_version
    from barapi.wire import encode_png

    old, new = LinearSoftmaxAdapter(20, seed=0), LinearSoftmaxAdapter(20, seed=1)
    image = encode_png(images(1, side=8)[0])

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> list[Any]:
        stub, key = await adapter._stub(), (("authorization", "Key emulator-test-key"),)

        async def ask(version: str = "") -> Any:
            return await stub.PostModelOutputs(service_pb2.PostModelOutputsRequest(
                model_id="moderation-recognition", version_id=version,
                inputs=[resources_pb2.Input(data=resources_pb2.Data(
                    image=resources_pb2.Image(base64=image)))]), metadata=key)

        answers = [await ask()]
        emulator.publish(new)
        answers += [await ask(), await ask(box_version(old))]
        emulator.publish(new, keep_old=False)
        answers.append(await ask(box_version(old)))
        info = await stub.GetModelOutputInfo(service_pb2.GetModelRequest(
            model_id="moderation-recognition"), metadata=key)
        return [*answers, info]

    faults = Faults(omit_every=2, answer_names={"gore": "sangre"})
    first, moved, named, retired, info = with_emulator(old, faults, body)
    assert [a.outputs[0].model.model_version.id for a in (first, moved, named)] == [
        box_version(old), box_version(new), box_version(old)]
    assert retired.status.code == 21200 and "not found" in retired.status.description
    assert info.model.model_version.id == box_version(new)
    assert [c.name for c in info.model.output_info.data.concepts][-1] == "gore"  # the model's
    assert len(first.outputs[0].data.concepts) == 5 and len(moved.outputs[0].data.concepts) == 4
    assert {(c.id, c.name) for c in first.outputs[0].data.concepts} >= {("gore", "sangre")}
