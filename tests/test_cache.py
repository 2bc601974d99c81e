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
