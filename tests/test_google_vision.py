"""barapi's Google Cloud Vision adapter (SafeSearch, label detection) against the loopback REST
emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import numpy as np
import pytest

from barapi.adapters.base import AnswerForm
from barapi.adapters.google_vision import (
    LEVELS,
    LIKELIHOODS,
    SAFE_SEARCH,
    SCORE_FLOOR,
    GoogleVisionAdapter,
    create,
)
from barapi.budget import Budget
from barapi.cards import load_card
from barapi.emulate import Faults, GoogleVisionEmulator, fold
from barapi.emulate.google_vision import CATEGORY_SOURCES, likelihood
from barapi.errors import ConfigError, FatalProviderError, InvalidAnswer, PartialAnswer
from barapi.keys import Secret
from barapi.query import QueryService
from barapi.retry import RetryPolicy
from barapi.wire import encode_png

KEY = "google-test-key"
PRICE = 1.50  # both cards, dollars per 1,000 units


def images(n: int, seed: int = 0, side: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def adapter(emulator: GoogleVisionEmulator, model: str = "safe-search", key: str = KEY,
            labels: list[str] | None = None) -> GoogleVisionAdapter:
    return GoogleVisionAdapter(model, key=Secret(key), labels=labels or [],
                               endpoint=f"http://127.0.0.1:{emulator.port}")


def service(a: GoogleVisionAdapter, max_batch: int | None = None) -> QueryService:
    card = load_card(a.card)
    return QueryService(a, Budget(card.price_per_1000, 10.0),
                        max_batch=max_batch or card.max_images_per_request,
                        retry=RetryPolicy(attempts=12, base=0.02, cap=0.5, deadline=20.0))


def expected_levels(model: Any, x: np.ndarray) -> np.ndarray:
    """What SafeSearch should answer for `x`, computed without the emulator's HTTP path."""
    concepts = fold(asyncio.run(model.predict_proba(x)), 5)
    rows = []
    for c in concepts:
        scores = {k: 1.0 - c[0] if s is None else c[s] for k, s in CATEGORY_SOURCES.items()}
        rows.append([LEVELS[LIKELIHOODS.index(likelihood(scores[k]))] for k in SAFE_SEARCH])
    return np.array(rows, dtype=np.float32)


def test_safe_search_levels_are_mapped_and_the_form_reported(lite0_32: Any) -> None:
    x = images(5)
    with GoogleVisionEmulator(lite0_32, None, KEY) as emulator:
        a = adapter(emulator)
        probs = asyncio.run(a.predict_proba(x))
    assert a.labels == list(SAFE_SEARCH)
    assert a.form == AnswerForm(levels=(0.1, 0.3, 0.5, 0.7, 0.9))
    assert "5 levels" in a.form.describe()
    assert set(np.unique(probs).tolist()) <= set(np.asarray(LEVELS, dtype=np.float32).tolist())
    np.testing.assert_array_equal(probs, expected_levels(lite0_32, x))
    assert emulator.counters.requests == 1 and emulator.counters.billed_images == 5


def test_a_batch_goes_in_requests_of_at_most_16_images(lite0_32: Any) -> None:
    with GoogleVisionEmulator(lite0_32, None, KEY) as emulator:
        svc = service(adapter(emulator))
        probs = asyncio.run(svc.predict_proba(images(20)))
    assert probs.shape == (20, 5)
    assert emulator.counters.requests == svc.stats.requests == 2  # 16 + 4
    assert emulator.counters.billed_images == svc.stats.billed_images == 20
    assert svc.budget.spent == pytest.approx(20 * PRICE / 1000)


def test_an_image_failing_inside_a_batch_is_a_partial_answer_and_the_others_are_kept(
        lite0_32: Any) -> None:
    x = images(5, seed=1)
    with (GoogleVisionEmulator(lite0_32, None, KEY, Faults(fail_input_every=3)) as emulator,
          pytest.raises(PartialAnswer, match="13: Internal error") as caught):
        asyncio.run(adapter(emulator).predict_proba(x))
    partial = caught.value
    assert partial.ok.tolist() == [True, True, False, True, True]
    assert partial.billed_images == 5 == emulator.counters.billed_images  # an errored image: billed
    kept = partial.ok
    np.testing.assert_array_equal(partial.probs[kept], expected_levels(lite0_32, x)[kept])
    assert partial.reasons[2].startswith("13: ") and partial.reasons[0] == ""


def test_through_the_query_service_a_failed_image_is_asked_again_and_every_unit_paid(
        lite0_32: Any) -> None:
    x = images(5, seed=1)
    with GoogleVisionEmulator(lite0_32, None, KEY, Faults(fail_input_every=3)) as emulator:
        svc = service(adapter(emulator))
        probs = asyncio.run(svc.predict_proba(x))
    np.testing.assert_array_equal(probs, expected_levels(lite0_32, x))
    billed = emulator.counters.billed_images
    assert billed > 5 and svc.stats.billed_images == billed
    assert svc.budget.spent == pytest.approx(billed * PRICE / 1000)


def test_429_is_retried_and_not_billed(lite0_32: Any) -> None:
    with GoogleVisionEmulator(lite0_32, None, KEY, Faults(max_rps=20)) as emulator:
        svc = service(adapter(emulator), max_batch=2)
        asyncio.run(svc.predict_proba(images(12)))
    c = emulator.counters
    assert c.throttled > 0 and c.requests == svc.stats.attempts
    assert c.billed_images == svc.stats.billed_images == 12
    assert svc.budget.spent == pytest.approx(12 * PRICE / 1000)  # the 429s cost nothing
    assert svc.budget.uncertain_images == 0


def test_5xx_is_retried_and_billed(lite0_32: Any) -> None:
    with GoogleVisionEmulator(lite0_32, None, KEY, Faults(unavailable_every=2)) as emulator:
        svc = service(adapter(emulator), max_batch=2)
        asyncio.run(svc.predict_proba(images(4)))
    c = emulator.counters
    assert c.unavailable > 0 and c.billed_images == 4
    assert svc.budget.uncertain_images == 2 * c.unavailable  # a 503 after the body left
    assert svc.budget.spent == pytest.approx((4 + 2 * c.unavailable) * PRICE / 1000)


@pytest.mark.parametrize(("faults", "key", "message"), [
    (None, "wrong", "400 INVALID_ARGUMENT: API key not valid. Please pass a valid API key."),
    (Faults(quota_images=2), KEY, "429 RESOURCE_EXHAUSTED: .*per day.*not billed"),
])
def test_a_bad_key_or_a_daily_quota_is_fatal_with_googles_text(
        lite0_32: Any, faults: Faults | None, key: str, message: str) -> None:
    with GoogleVisionEmulator(lite0_32, None, KEY, faults) as emulator:
        svc = service(adapter(emulator, key=key))
        with pytest.raises(FatalProviderError, match=message) as caught:
            asyncio.run(svc.predict_proba(images(4)))
    assert not caught.value.billed
    assert emulator.counters.requests == 1  # never retried
    assert emulator.counters.billed_images == svc.stats.billed_images == 0
    assert svc.budget.spent == 0


def test_unknown_likelihoods_are_invalid_billed_and_never_cached(lite0_32: Any) -> None:
    with GoogleVisionEmulator(lite0_32, None, KEY, Faults(bad_answer_every=1)) as emulator:
        svc = service(adapter(emulator))
        with pytest.raises(InvalidAnswer, match="twice"):
            asyncio.run(svc.predict_proba(images(2)))
    assert emulator.counters.billed_images == svc.stats.billed_images == 4  # asked twice
    assert svc.budget.spent == pytest.approx(4 * PRICE / 1000)


def raw_labels(emulator: GoogleVisionEmulator, image: np.ndarray) -> list[dict[str, Any]]:
    """The emulator's label annotations for `image`, asked over HTTP."""
    content = base64.b64encode(encode_png(image)).decode()
    response = httpx.post(f"http://127.0.0.1:{emulator.port}/v1/images:annotate",
                          headers={"X-Goog-Api-Key": KEY},
                          json={"requests": [{"image": {"content": content}, "features": [
                              {"type": "LABEL_DETECTION", "maxResults": 100}]}]})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["responses"][0].get("labelAnnotations", [])
    return found


def test_labels_left_out_are_the_censored_value_not_zero(lite0_32: Any) -> None:
    x = images(1, seed=0)  # 3 labels over the floor (probabilities 0.011-0.013)
    with GoogleVisionEmulator(None, lite0_32, KEY) as emulator:
        answered = raw_labels(emulator, x[0])
        assert answered and all(a["score"] >= SCORE_FLOOR for a in answered)
        named = {a["description"].casefold() for a in answered}
        absent = next(n for n in lite0_32.labels if n.casefold() not in named)
        top = answered[0]
        a = adapter(emulator, "labels", labels=[top["description"].upper(), absent])
        row = asyncio.run(a.predict_proba(x))[0]
    assert a.form == AnswerForm(threshold=SCORE_FLOOR, top=100)
    assert row[0] == pytest.approx(top["score"])  # matched case-insensitively
    assert row[1] == SCORE_FLOOR != 0  # left out: under the floor, not zero
    assert a.pinned() == {"mids": {top["description"].upper(): top["mid"]}}


def test_labels_are_matched_by_mid_once_bound_and_the_mids_pinned(lite0_32: Any) -> None:
    x = images(1, seed=0)  # 3 labels over the floor (probabilities 0.011-0.013)
    with GoogleVisionEmulator(None, lite0_32, KEY) as emulator:
        top = raw_labels(emulator, x[0])[0]
        a = adapter(emulator, "labels", labels=[top["description"], "zebra"])
        first = asyncio.run(a.predict_proba(x))
        name = next(n for n in lite0_32.labels if n.casefold() == top["description"].casefold())
        emulator.faults.answer_names = {name: "Renamed"}  # same mid, another description
        again = asyncio.run(a.predict_proba(x))
        resumed = adapter(emulator, "labels", labels=[top["description"], "zebra"])
        resumed.pin(a.pinned())
        from_pins = asyncio.run(resumed.predict_proba(x))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, from_pins)  # a run folder's mids bind the columns
    assert first[0, 0] == pytest.approx(top["score"])


def test_a_request_over_the_json_limit_is_refused_before_sending(lite0_32: Any) -> None:
    noise = images(8, side=700)  # ~1.5 MB PNG each: ~15.7 MB of base64 JSON
    with (GoogleVisionEmulator(lite0_32, None, KEY) as emulator,
          pytest.raises(ConfigError, match=r"10,000,000.*not sent")):
        asyncio.run(adapter(emulator).predict_proba(noise))
    assert emulator.counters.requests == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"model": "labels"}, "--labels is required with --model labels: Google label detection "
                          "cannot list its labels"),
    ({"model": "safe-search", "labels": "adult,nudity"}, "'nudity' is not SafeSearch"),
    ({"model": "faces"}, "--model 'faces': Google Cloud Vision serves safe-search or labels"),
    ({"model": "safe-search", "endpoint": "http://vision.example.com"}, "plaintext"),
    ({"model": "labels", "labels": "Cat,cat"}, "'Cat' is named twice"),
])
def test_bad_options_are_one_line_and_nothing_is_sent(options: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create(**options)


def test_cli_run_safe_search_through_the_emulator(tmp_path: Any) -> None:
    import os

    from conftest import run_with_emulator

    from barapi.budget import read_ledger

    summary, billed, said = run_with_emulator(
        ["google", "--port", "0", "--input-size", "32"],
        ["--provider", "google", "--model", "safe-search", "--endpoint", "{url}", "--insecure",
         "--budget", "5", "--dataset", "digits", "--classes", "0,1", "--canvas", "32", "--window",
         "16", "--resolution", "4", "--per-class", "5", "--q", "1", "--epochs", "1", "--m", "1",
         "--batch", "5", "--runs-dir", "runs", "--cache-dir", "cache"], tmp_path,
        {**os.environ, "GOOGLE_VISION_API_KEY": KEY})
    assert KEY not in said
    assert billed == summary["billed_images"] > 0
    ledgers = list((tmp_path / "runs").glob("*/ledger.jsonl"))
    assert len(ledgers) == 1
    assert read_ledger(ledgers[0]).images == billed
    assert summary["dollars"] == pytest.approx(billed * PRICE / 1000)
