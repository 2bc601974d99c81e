"""barapi's Azure Custom Vision transport against the loopback REST emulator (127.0.0.1)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from barapi import api
from barapi.adapters.azure import AzureCustomVisionAdapter
from barapi.budget import Budget
from barapi.cards import load_card
from barapi.emulate import AzureEmulator, Faults
from barapi.errors import ConfigError, FatalProviderError, TransientError
from barapi.keys import Secret
from barapi.query import QueryService
from barapi.retry import RetryPolicy
from barapi.wire import encode_png

KEY = "azure-test-key"
TAGS = ["cat", "dog", "fish"]


def images(n: int, seed: int = 0, side: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def adapter(emulator: AzureEmulator, key: str = KEY) -> AzureCustomVisionAdapter:
    return AzureCustomVisionAdapter("proj-1/iter1", key=Secret(key), labels=TAGS,
                                    endpoint=f"http://127.0.0.1:{emulator.port}")


def service(a: AzureCustomVisionAdapter) -> QueryService:
    card = load_card(a.card)
    return QueryService(a, Budget(card.price_per_1000, 10.0), max_batch=card.max_images_per_request,
                        retry=RetryPolicy(attempts=12, base=0.02, cap=0.5))


def test_predictions_in_fixed_tag_order_from_the_real_model(lite0_32: Any) -> None:
    x = images(3)
    with AzureEmulator(lite0_32, KEY, TAGS) as emulator:
        probs = asyncio.run(adapter(emulator).predict_proba(x))
    full = asyncio.run(lite0_32.predict_proba(x))
    expected = np.stack([full[:, k::3].sum(axis=1) for k in range(3)], axis=1)
    assert np.allclose(probs, expected, atol=1e-6)
    assert emulator.counters.billed_images == 3


def test_one_image_per_request_and_429_retry_after_honoured(lite0_32: Any) -> None:
    with AzureEmulator(lite0_32, KEY, TAGS, Faults(max_rps=30, unavailable_every=4)) as emulator:
        a = adapter(emulator)
        svc = service(a)
        asyncio.run(svc.predict_proba(images(12)))
    c = emulator.counters
    assert c.throttled > 0 and c.unavailable > 0 and c.requests == svc.stats.attempts
    assert c.billed_images == svc.stats.billed_images == 12 and svc.stats.requests == 12
    # a 429 is a refusal (free); a 503 after the body left may have been billed: counted
    assert svc.budget.spent == pytest.approx((12 + c.unavailable) * 2 / 1000)
    assert svc.budget.uncertain_images == c.unavailable


@pytest.mark.parametrize(("faults", "key", "message"), [
    (None, "wrong", "401"), (Faults(quota_images=2), KEY, "403: Out of call volume quota"),
])
def test_gateway_auth_and_quota_are_fatal(lite0_32: Any, faults: Faults | None, key: str,
                                          message: str) -> None:
    with AzureEmulator(lite0_32, KEY, TAGS, faults) as emulator:
        svc = service(adapter(emulator, key))
        with pytest.raises(FatalProviderError, match=message):
            asyncio.run(svc.predict_proba(images(4)))
    assert emulator.counters.billed_images == svc.stats.billed_images


def test_oversized_images_are_refused_before_sending(lite0_32: Any) -> None:
    noise = images(1, side=1200)  # ~4.3 MB as PNG
    with AzureEmulator(lite0_32, KEY, TAGS) as emulator, pytest.raises(ConfigError, match="4 MB"):
        asyncio.run(adapter(emulator).predict_proba(noise))
    assert emulator.counters.requests == 0


def test_multipart_body_as_the_sdk_sends_it(lite0_32: Any) -> None:
    with AzureEmulator(lite0_32, KEY, TAGS) as emulator:
        response = httpx.post(
            f"http://127.0.0.1:{emulator.port}/customvision/v3.1/prediction/p/classify/iterations/i/image",
            headers={"Prediction-Key": KEY}, files={"imageData": ("x.png", encode_png(images(1)[0]))})
    assert response.status_code == 200
    assert {p["tagName"] for p in response.json()["predictions"]} == set(TAGS)


def test_end_to_end_run_matches_the_emulators_billing(lite0_32: Any, tmp_path: Any) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 3
    np.savez(tmp_path / "d012.npz", X=digits.images[keep], y=digits.target[keep])
    config = api.make_config(provider="azure", dataset=str(tmp_path / "d012.npz"), canvas=32,
                             window=16, resolution=4, per_class=4, q=1, epochs=1, m=1, batch=6)
    with AzureEmulator(lite0_32, KEY, TAGS) as emulator:
        session = api.prepare(config, adapter=adapter(emulator), budget=5.0,
                              runs_root=tmp_path / "runs", cache_dir=tmp_path / "cache")
        estimate = session.estimate()[-1]
        session.service.retry = RetryPolicy(attempts=12, base=0.02, cap=0.5)
        session.run()
    stats = session.service.stats
    assert emulator.counters.billed_images == stats.billed_images
    assert stats.images == estimate.images
    assert session.service.budget.spent == pytest.approx(stats.billed_images * 2 / 1000)


def test_cli_run_against_the_emulator_subprocess(tmp_path: Any) -> None:
    import os

    from conftest import run_with_emulator
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "d01.npz", X=digits.images[keep], y=digits.target[keep])
    summary, billed, said = run_with_emulator(
        ["azure", "--port", "0", "--tags", "no,yes", "--input-size", "32"],
        ["--provider", "azure", "--model", "proj/iter", "--labels", "no,yes", "--endpoint", "{url}",
         "--insecure", "--budget", "5", "--dataset", str(tmp_path / "d01.npz"), "--canvas", "32",
         "--window", "16", "--resolution", "4", "--per-class", "5", "--q", "1", "--epochs", "1",
         "--m", "1", "--batch", "5", "--runs-dir", "runs", "--cache-dir", "cache"],
        tmp_path, {**os.environ, "AZURE_CV_PREDICTION_KEY": KEY})
    assert KEY not in said
    assert billed == summary["billed_images"]
    assert summary["dollars"] == pytest.approx(billed * 2 / 1000)


def test_timeouts_are_retried_and_counted_as_billed(lite0_32: Any) -> None:
    with AzureEmulator(lite0_32, KEY, TAGS, Faults(delay=0.3)) as emulator:
        a = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS, timeout=0.1,
                                     endpoint=f"http://127.0.0.1:{emulator.port}")
        svc = QueryService(a, Budget(2.0, 10.0), retry=RetryPolicy(attempts=3, base=0.01, cap=0.02))
        with pytest.raises(Exception, match="timed out"):
            asyncio.run(svc.predict_proba(images(1)))
    assert svc.stats.attempts == 3  # retried
    assert svc.budget.spent == pytest.approx(3 * 2 / 1000)  # each attempt may have been billed


@pytest.mark.parametrize(("body", "expected"), [
    ({"error": {"code": "401", "message": "Access denied due to invalid subscription key."}},
     "401: Access denied"),
    ({"code": "BadRequestImageFormat", "message": "Bad Request Image Format"},
     "BadRequestImageFormat: Bad Request Image Format"),
    ({"code": "NotFound"}, "NotFound: Not Found"), ({}, "404: Not Found"), (None, "404: Not Found"),
])
def test_both_error_body_shapes_are_read_and_no_message_is_empty(body: Any, expected: str) -> None:
    from barapi.adapters.azure import error_message

    content = b"" if body is None else __import__("json").dumps(body).encode()
    response = httpx.Response(404, content=content)
    assert error_message(response).startswith(expected)


@pytest.mark.parametrize("endpoint", ["localhost:", "http://", "ftp://127.0.0.1:1", "http://[::1"])
def test_malformed_endpoints_are_one_line_and_never_charged(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS, endpoint=endpoint)


def test_a_key_that_cannot_be_sent_is_refused_before_sending() -> None:
    a = AzureCustomVisionAdapter("p/i", key=Secret("clé—🔑"), labels=TAGS,
                                 endpoint="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="key"):
        asyncio.run(a.check(timeout=0.1))
    svc = QueryService(a, Budget(2.0, 10.0))
    with pytest.raises(ConfigError, match="key"):
        asyncio.run(svc.predict_proba(images(1)))
    assert svc.budget.spent == 0


def test_a_refused_connection_is_never_charged() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS,
                                 endpoint=f"http://127.0.0.1:{port}")
    svc = QueryService(a, Budget(2.0, 10.0), retry=RetryPolicy(attempts=2, base=0.01, cap=0.02))
    with pytest.raises(ConfigError, match="cannot connect"):  # the free preflight, first
        asyncio.run(svc.predict_proba(images(1)))
    a._checked = True  # as if the endpoint went down after the preflight
    with pytest.raises(TransientError, match="not sent"):
        asyncio.run(svc.predict_proba(images(1)))
    assert svc.budget.spent == 0
    with pytest.raises(ConfigError, match="cannot connect"):
        asyncio.run(a.check(timeout=1.0))


def test_billed_then_dropped_responses_are_counted_so_the_bill_never_exceeds_the_ledger(
        lite0_32: Any) -> None:
    with AzureEmulator(lite0_32, KEY, TAGS, Faults(drop_every=3)) as emulator:
        svc = service(adapter(emulator))
        asyncio.run(svc.predict_proba(images(12)))
    c = emulator.counters
    assert c.dropped > 0 and svc.budget.spent_images >= c.billed_images
    assert svc.budget.spent_images == c.billed_images  # every drop was counted, nothing more


def test_a_run_completes_when_the_service_limits_below_the_cards_rate(lite0_32: Any) -> None:
    """The card says 20 requests/s (S0 nostore); the service accepts 10 (S0 with storage)."""
    with AzureEmulator(lite0_32, KEY, TAGS, Faults(max_rps=10)) as emulator:
        a = adapter(emulator)
        card = load_card(a.card)
        svc = api.make_service(a, 10.0, card=card)
        asyncio.run(svc.predict_proba(images(60)))
    assert emulator.counters.billed_images == 60 and emulator.counters.throttled > 0
    assert svc.limiter.rate < card.requests_per_second  # it learned to go slower


def test_tags_given_are_checked_against_the_first_answer(lite0_32: Any) -> None:
    with AzureEmulator(lite0_32, KEY, ["stop", "yield"]) as emulator:
        endpoint = f"http://127.0.0.1:{emulator.port}"
        typo = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["stop", "yeild"],
                                        endpoint=endpoint)
        svc = service(typo)
        with pytest.raises(FatalProviderError, match=r"'yeild' is not among the project's tags: "
                                                     r"stop, yield"):
            asyncio.run(svc.predict_proba(images(1)))
        assert svc.budget.spent_images == emulator.counters.billed_images == 1  # it was billed
        subset = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["stop", "other"],
                                          endpoint=endpoint)
        with pytest.raises(FatalProviderError, match="'other'"):
            asyncio.run(service(subset).predict_proba(images(1)))
    with AzureEmulator(lite0_32, KEY, ["stop", "yield", "slow"]) as emulator:
        part = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["stop", "yield"],
                                        endpoint=f"http://127.0.0.1:{emulator.port}")
        with pytest.warns(UserWarning, match="using 2 of the project's 3 tags"):
            asyncio.run(service(part).predict_proba(images(2)))


def test_tags_are_learned_from_one_paid_answer_and_never_asked_again(lite0_32: Any,
                                                                     tmp_path: Any) -> None:
    from barapi.budget import read_ledger
    from barapi.run_folder import RunFolder

    config = api.make_config(provider="azure", dataset="digits", classes="0,1", canvas=32,
                             window=16, resolution=4, per_class=4, q=1, epochs=2, m=1, batch=4,
                             patience=0)
    with AzureEmulator(lite0_32, KEY, ["yes", "no", "maybe"]) as emulator:
        def fresh() -> AzureCustomVisionAdapter:
            return AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=[],
                                            endpoint=f"http://127.0.0.1:{emulator.port}")

        first = api.prepare(config, adapter=fresh(), budget=0.05, runs_root=tmp_path / "runs",
                            cache_dir=tmp_path / "cache")
        result = first.run()
        assert result.stopped and "budget" in result.stopped  # stopped mid-run
        folder = result.run_dir
        assert folder is not None
        assert first.adapter.labels == ["maybe", "no", "yes"]
        assert RunFolder(folder).record()["labels"] == ["maybe", "no", "yes"]
        pinned = RunFolder(folder).record()["pinned"]  # the iteration and the tags' ids
        assert pinned == {"version": emulator.iteration,
                          "tags": {"maybe": "tag-2", "no": "tag-1", "yes": "tag-0"}}
        again = fresh()

        async def never(image: Any) -> list[str]:
            raise AssertionError("a resumed run asked for the tags again")

        again.discover_labels = never  # type: ignore[method-assign]
        resumed = api.prepare(config, adapter=again, resume=folder, budget=5.0)
        assert again.labels == ["maybe", "no", "yes"]  # from the run folder, before any request
        assert resumed.run().stopped is None
        billed = emulator.counters.billed_images
    assert read_ledger(folder / "ledger.jsonl").images == billed


def test_a_tag_the_project_lacks_stops_before_training_in_one_line(lite0_32: Any,
                                                                  tmp_path: Any) -> None:
    from barapi.budget import read_ledger
    from barapi.run_folder import RunFolder

    config = api.make_config(provider="azure", dataset="digits", classes="0,1", canvas=32,
                             window=16, resolution=4, per_class=4, q=1, epochs=1, m=1, batch=4)
    with AzureEmulator(lite0_32, KEY, ["stop", "yield"]) as emulator:
        typo = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=["stop", "yeild"],
                                        endpoint=f"http://127.0.0.1:{emulator.port}")
        session = api.prepare(config, adapter=typo, budget=1.0, runs_root=tmp_path / "runs")
        assert session.estimate()[0].images == 9  # 8 training samples + the one that asks
        with pytest.raises(ConfigError, match=r"'yeild' is not among the project's tags: "
                                              r"stop, yield"):
            session.run()
        assert emulator.counters.billed_images == 1  # the one answer that told the tags
    (folder,) = (tmp_path / "runs").iterdir()  # kept: something was paid; marked failed
    assert read_ledger(folder / "ledger.jsonl").images == 1
    assert "failed" in [r["event"] for r in RunFolder(folder).metrics()]


# --- the provider's words: tags by id, answers that omit one, the iteration -------------------

def numpy_box(seed: int = 0) -> Any:
    """A cheap numpy black box (20 classes folded into the tags); `seed` makes another
    iteration."""
    from conftest import LinearSoftmaxAdapter

    return LinearSoftmaxAdapter(n_sources=20, seed=seed)


def test_answers_are_matched_by_tag_id_after_a_tag_is_renamed() -> None:
    """Columns are bound to tag ids by the first answer (or by a run folder's pins): a tag
    renamed later keeps its column (matched by name, it became zero in every answer)."""
    x = images(3)
    with AzureEmulator(numpy_box(), KEY, TAGS) as emulator:
        first = adapter(emulator)
        clean = asyncio.run(first.predict_proba(x))
        emulator.faults.answer_names = {"dog": "hound"}
        assert np.array_equal(asyncio.run(first.predict_proba(x)), clean)
        resumed = adapter(emulator)
        resumed.pin(first.pinned())  # as a resumed run gets them from its folder
        assert np.array_equal(asyncio.run(resumed.predict_proba(x)), clean)
    assert (clean > 0).all()


def test_an_answer_lacking_a_tag_is_asked_again_then_stops_naming_it(tmp_path: Any) -> None:
    from barapi.cache import ProbabilityCache
    from barapi.errors import InvalidAnswer

    x = images(2)
    with AzureEmulator(numpy_box(), KEY, TAGS) as emulator:
        svc = service(adapter(emulator))
        svc.cache = ProbabilityCache(tmp_path)
        asyncio.run(svc.predict_proba(x[:1]))  # a whole answer: the columns are bound
        emulator.faults.omit_every = 1  # from now on every answer leaves a tag out
        with pytest.raises(InvalidAnswer, match=r"answered without '(cat|dog|fish)' twice for the "
                                                r"same image"):
            asyncio.run(svc.predict_proba(x[1:]))
        assert emulator.counters.billed_images == svc.budget.spent_images == 3  # asked once more
        emulator.faults.omit_every = 0
        asyncio.run(svc.predict_proba(x))
        assert emulator.counters.billed_images == 4  # the incomplete answers were not cached


def test_a_tag_the_learned_list_lacks_stops_the_run() -> None:
    """Tags learned from one answer that left one out: a later answer holding it shows the
    list is incomplete (it was ignored, its column missing for good)."""
    with AzureEmulator(numpy_box(), KEY, TAGS, Faults(omit_every=1)) as emulator:
        learner = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=[],
                                           endpoint=f"http://127.0.0.1:{emulator.port}")
        svc = service(learner)
        learned = asyncio.run(svc.discover_labels(images(1)[0]))
        learner.use_labels(learned)
        assert len(learned) == 2  # the first answer left one tag out
        emulator.faults.omit_every = 0
        with pytest.raises(FatalProviderError, match=r"which the project's tag list learned from "
                                                     r"its first answer .* lacks"):
            asyncio.run(svc.predict_proba(images(1, seed=1)))
        assert svc.budget.spent_images == emulator.counters.billed_images == 2


def test_an_iteration_moved_under_the_published_name_is_refused() -> None:
    from barapi.emulate import box_version

    old, new = box_version(numpy_box(0)), box_version(numpy_box(1))
    with AzureEmulator(numpy_box(0), KEY, TAGS) as emulator:
        first = adapter(emulator)
        svc = service(first)
        asyncio.run(svc.predict_proba(images(2)))
        pins = first.pinned()
        assert pins["version"] == old
        emulator.publish(numpy_box(1))
        refused = (rf"pinned to model version {old}.* answers with version {new}.*publish iteration "
                   rf"{old} as 'iter1' again.*--accept-version {new}")
        with pytest.raises(FatalProviderError, match=refused):  # mid-run
            asyncio.run(svc.predict_proba(images(1, seed=1)))
        resumed = adapter(emulator)
        resumed.pin(pins)  # a resume, evaluate or predict of the run folder
        with pytest.raises(FatalProviderError, match=refused):
            asyncio.run(service(resumed).predict_proba(images(1, seed=2)))
        accepted = adapter(emulator)
        accepted.pin(pins, accept_version=new)
        asyncio.run(service(accepted).predict_proba(images(1, seed=3)))
        assert accepted.pinned()["version"] == new
    assert svc.budget.spent_images == 3  # the refused answer was billed, and counted


def test_a_server_echoing_the_key_never_puts_it_in_an_error() -> None:
    """Error text is built from what the server says: the key is scrubbed out of it."""
    from barapi.emulate import LoopbackHTTPServer

    def echo(path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        return 401, {"error": {"code": "401", "message": f"key {headers.get('Prediction-Key')} "
                                                         f"is not valid"}}, {}

    with LoopbackHTTPServer(echo) as server:
        a = AzureCustomVisionAdapter("p/i", key=Secret(KEY), labels=TAGS,
                                     endpoint=f"http://127.0.0.1:{server.port}")
        with pytest.raises(FatalProviderError) as refused:
            asyncio.run(a.predict_proba(images(1)))
    assert KEY not in str(refused.value) and "key ******** is not valid" in str(refused.value)
