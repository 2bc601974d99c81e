import asyncio
import logging
import os
from pathlib import Path

import numpy as np
import pytest

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


class Planted:
    """A value whose unpickling makes the folder `marker`: what a planted entry would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def plant(folder: Path, key: str, value: object) -> None:
    """Store `value` under `key` the way plain diskcache does (a pickle, or a file)."""
    import diskcache

    with diskcache.Cache(str(folder)) as raw:
        raw.set(key, value)


def test_a_planted_pickle_is_never_loaded(tmp_path: Path) -> None:
    """A shared --cache-dir with a planted entry must not run code (python-diskcache#357);
    a pickled answer (what barapi once stored) is not loaded either: both are misses."""
    folder, marker = tmp_path / "c", tmp_path / "ran"
    cache = ProbabilityCache(folder)
    asyncio.run(cache.set_many(["good"], np.full((1, 4), 0.25, np.float32)))
    cache.close()
    plant(folder, "evil", Planted(marker))
    plant(folder, "pickled", np.full(4, 0.25, np.float32))
    got = asyncio.run(cache.get_many(["evil", "pickled", "good"]))
    assert not marker.exists()
    assert got[0] is None and got[1] is None and np.array_equal(got[2], [0.25] * 4)
    assert cache.bad_entries == 2


def test_a_row_naming_a_file_is_never_read_nor_deleted(tmp_path: Path) -> None:
    """diskcache keeps large values in files named by their row: a tampered row could name
    any file, to be served as an answer or deleted when the entry is replaced."""
    import sqlite3

    folder, victim = tmp_path / "c", tmp_path / "precious.txt"
    victim.write_text("keep me")
    plant(folder, "k", b"\0" * 40_000)  # stored as a file by plain diskcache
    with sqlite3.connect(folder / "cache.db") as con:
        con.execute("UPDATE Cache SET filename = ? WHERE key = 'k'", (str(victim),))
    cache = ProbabilityCache(folder)
    assert asyncio.run(cache.get_many(["k"])) == [None]
    asyncio.run(cache.set_many(["k"], np.full((1, 2), 0.5, np.float32)))  # replaced
    assert victim.read_text() == "keep me"
    assert np.array_equal(asyncio.run(cache.get_many(["k"], 2))[0], [0.5, 0.5])


def test_answers_are_stored_as_float32_records_and_decoded_strictly(tmp_path: Path) -> None:
    import sqlite3

    from diskcache.core import MODE_RAW

    from barapi.cache import decode_row, encode_row

    row = np.array([0.25, 0.75], np.float32)
    data = encode_row(row)
    assert len(data) == 8 + 2 * 4 and np.array_equal(decode_row(data, 2), row)
    for bad in (data[:-1], data + b"\0", b"XXXX" + data[4:], data[:8], b"", "text", 3):
        assert decode_row(bad) is None, bad
    assert decode_row(data, 3) is None  # another width than the adapter's
    cache = ProbabilityCache(tmp_path)
    asyncio.run(cache.set_many(["k"], row[None]))
    cache.close()
    with sqlite3.connect(tmp_path / "cache.db") as con:
        stored = con.execute("SELECT mode, filename, value FROM Cache").fetchall()
    assert stored == [(MODE_RAW, None, data)]  # numbers in cache.db: never a pickle, never a file


def damage_cache_db(folder: Path, where: str) -> None:
    """Fill a cache, then overwrite its file's header or its key index's root page (the money
    soak's own damage, so that both break cache.db the same way)."""
    from benchmarks.money_soak import damage

    asyncio.run(damage(folder, where))


@pytest.mark.parametrize("where", ["header", "index page"])
def test_a_damaged_cache_db_stops_a_priced_run_before_paying(where: str, tmp_path: Path) -> None:
    from barapi.api import default_cache
    from barapi.cards import load_card
    from barapi.errors import CacheUnusable

    folder = tmp_path / "cache"
    damage_cache_db(folder, where)
    with pytest.raises(CacheUnusable) as caught:
        default_cache(load_card("local", price_per_1000=2.0), cache_dir=folder)
    message = str(caught.value)
    assert message.startswith(f"answer cache {folder}: cannot read it (")
    assert "--no-cache" in message and "\n" not in message


def test_a_damaged_cache_db_on_a_free_provider_is_one_clean_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from barapi.api import default_cache
    from barapi.cards import load_card

    folder = tmp_path / "cache"
    damage_cache_db(folder, "header")
    with caplog.at_level(logging.WARNING, logger="barapi.cache"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw Python warning (with its source line)
        cache = default_cache(load_card("local"), use_cache=True, cache_dir=folder)
        assert cache is not None
        again = default_cache(load_card("local"), use_cache=True, cache_dir=folder)  # (a plan)
        for each in (cache, again):
            assert asyncio.run(each.get_many(["k1", "k2"])) == [None, None]
            asyncio.run(each.set_many(["k1"], np.full((1, 2), 0.5, np.float32)))
    assert [r.getMessage() for r in caplog.records] == [
        f"answer cache {folder}: cannot read it (DatabaseError: file is not a database); "
        f"going on without the cache"]
