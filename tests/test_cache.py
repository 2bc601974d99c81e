import asyncio
import os
from pathlib import Path

import numpy as np

from barapi.cache import ProbabilityCache, image_keys


def test_keys_depend_on_identity_shape_and_every_byte() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    changed = images.copy()
    changed[1, 3, 3, 2] = 1
    a, b = image_keys("p/m@1", images), image_keys("p/m@1", changed)
    assert a[0] == b[0] and a[1] != b[1]
    assert image_keys("p/m@2", images)[0] != a[0]
    assert image_keys("p/m@1", np.zeros((2, 3, 4, 4), dtype=np.uint8).reshape(2, 4, 4, 3))[0] == a[0]
    assert image_keys("p/m@1", np.zeros((1, 2, 8, 3), dtype=np.uint8))[0] != a[0]
    assert len(a[0]) == 64


def test_roundtrip_and_user_only_files(tmp_path: Path) -> None:
    cache = ProbabilityCache(tmp_path / "c")

    async def scenario() -> None:
        await cache.set_many(["k1", "k2"], np.array([[0.25, 0.75], [1.0, 0.0]], np.float32))
        got = await cache.get_many(["k2", "missing", "k1"])
        assert got[1] is None
        assert np.array_equal(got[0], [1.0, 0.0]) and np.array_equal(got[2], [0.25, 0.75])

    asyncio.run(scenario())
    assert len(cache) == 2
    cache.close()
    for path in (tmp_path / "c").iterdir():
        assert os.stat(path).st_mode & 0o077 == 0, path


def test_answers_bought_from_one_endpoint_are_never_served_for_another(tmp_path: Path) -> None:
    """A rehearsal against the emulator must not fill the cache for the real API."""
    from barapi.adapters.clarifai import ClarifaiAdapter
    from barapi.cache import cache_identity
    from barapi.keys import Secret

    rehearsal = ClarifaiAdapter(key=Secret("k"), endpoint="127.0.0.1:50051", insecure=True)
    real = ClarifaiAdapter(key=Secret("k"))
    renamed = ClarifaiAdapter("moderation-recognition", key=Secret("k"),
                              labels=["safe", "suggestive", "explicit", "gore", "drug"])
    x = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    keys = {image_keys(cache_identity(a), x)[0] for a in (rehearsal, real, renamed)}
    assert len(keys) == 3  # endpoint and column order are part of the key
    cache = ProbabilityCache(tmp_path)
    asyncio.run(cache.set_many(image_keys(cache_identity(rehearsal), x), np.ones((1, 5), np.float32)))
    assert asyncio.run(cache.get_many(image_keys(cache_identity(real), x))) == [None]


def test_entries_made_under_the_old_key_are_not_served(tmp_path: Path) -> None:
    from conftest import LinearSoftmaxAdapter

    from barapi.cache import cache_identity

    adapter = LinearSoftmaxAdapter()
    x = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    cache = ProbabilityCache(tmp_path)
    old = image_keys(adapter.identity, x)  # format 1: the identity alone
    asyncio.run(cache.set_many(old, np.full((1, 20), 0.05, np.float32)))
    assert asyncio.run(cache.get_many(image_keys(cache_identity(adapter), x))) == [None]


def test_a_local_models_identity_is_its_weights_not_its_name() -> None:
    import torch

    from barapi.adapters.local import LocalAdapter

    def net(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))

    a = LocalAdapter(net(0), list("abcd"), input_size=8, device="cpu", name="mine")
    b = LocalAdapter(net(1), list("abcd"), input_size=8, device="cpu", name="mine")
    c = LocalAdapter(net(0), list("abcd"), input_size=8, device="cpu", name="mine", chunk=2)
    d = LocalAdapter(net(0), list("abcd"), input_size=16, device="cpu", name="mine")
    assert a.identity != b.identity and a.identity == c.identity != d.identity
