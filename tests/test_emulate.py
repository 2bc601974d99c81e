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
