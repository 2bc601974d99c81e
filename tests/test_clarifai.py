"""The official clarifai-grpc client against the loopback emulator (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc

from barapi import api
from barapi.adapters.clarifai import ClarifaiAdapter
from barapi.budget import Budget, read_ledger
from barapi.cache import ProbabilityCache
from barapi.cards import load_card
from barapi.emulate import ClarifaiEmulator, Faults
from barapi.errors import FatalProviderError, InputsFailed
from barapi.keys import Secret
from barapi.query import QueryService
from barapi.retry import RetryPolicy

KEY = "emulator-test-key"


def images(n: int, seed: int = 0, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def with_emulator(model: Any, faults: Faults | None,
                  body: Callable[[ClarifaiEmulator, ClarifaiAdapter], Awaitable[Any]],
                  key: str = KEY, **adapter_options: Any) -> Any:
    async def scenario() -> Any:
        emulator = ClarifaiEmulator(model, KEY, faults)
        port = await emulator.start()
        adapter = ClarifaiAdapter(key=Secret(key), endpoint=f"127.0.0.1:{port}", insecure=True,
                                  **adapter_options)
        try:
            return await body(emulator, adapter)
        finally:
            await adapter.aclose()
            await emulator.stop()

    return asyncio.run(scenario())


def service(adapter: ClarifaiAdapter, limit: float = 25.0) -> QueryService:
    card = load_card(adapter.card)
    return QueryService(adapter, Budget(card.price_per_1000, limit), max_batch=card.max_images_per_request,
                        retry=RetryPolicy(attempts=12, base=0.02, cap=0.3))


def test_answers_in_fixed_label_order_from_the_real_model(lite0_32: Any) -> None:
    x = images(6)

    async def body(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> np.ndarray:
        return await adapter.predict_proba(x)

    probs = with_emulator(lite0_32, None, body)
    full = asyncio.run(lite0_32.predict_proba(x))
    expected = np.stack([full[:, k::5].sum(axis=1) for k in range(5)], axis=1)
    assert probs.shape == (6, 5) and np.array_equal(probs, expected)  # bit for bit


def test_batches_split_at_128_and_counts_agree(lite0_32: Any) -> None:
    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> QueryService:
        svc = service(adapter)
        await svc.predict_proba(images(300, side=16))
        assert emulator.counters.requests == 3
        assert emulator.counters.billed_images == svc.stats.billed_images == 300
        return svc

    svc = with_emulator(lite0_32, None, body)
    assert svc.budget.spent == pytest.approx(300 * 1.2 / 1000)


def test_throttling_and_unavailable_are_retried_by_barapi_alone(lite0_32: Any) -> None:
    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> None:
        svc = service(adapter)
        svc.max_concurrency = 4
        await asyncio.gather(*(svc.predict_proba(images(10, seed=s, side=16)) for s in range(6)))
        c = emulator.counters
        assert c.throttled > 0 and c.unavailable > 0
        assert c.requests == svc.stats.attempts  # gRPC's own retry policy is off
        assert c.billed_images == svc.stats.billed_images == 60
        # throttles were refusals (free); an UNAVAILABLE after sending may have been billed
        assert svc.budget.spent_images == 60 + 10 * c.unavailable
        assert svc.budget.uncertain_images == 10 * c.unavailable

    with_emulator(lite0_32, Faults(max_rps=20, unavailable_every=3), body)


@pytest.mark.parametrize(("faults", "key", "message"), [
    (None, "wrong-key", "11009"),
    (Faults(quota_images=5), KEY, "11006"),
])
def test_auth_and_quota_errors_are_fatal_and_never_retried(lite0_32: Any, faults: Faults | None,
                                                           key: str, message: str) -> None:
    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> None:
        svc = service(adapter)
        if key != KEY:  # the free preflight refuses a wrong key before any paid request
            from barapi.errors import ConfigError

            with pytest.raises(ConfigError, match=message):
                await svc.predict_proba(images(10, side=16))
            assert emulator.counters.requests == 0
            adapter._checked = True  # as if the key were revoked after the preflight
        with pytest.raises(FatalProviderError, match=message):
            await svc.predict_proba(images(10, side=16))
        assert emulator.counters.requests == 1 and svc.budget.spent == 0

    with_emulator(lite0_32, faults, body, key=key)


def test_mixed_status_asks_the_failed_inputs_again_and_pays_only_answers(lite0_32: Any) -> None:
    x = images(5, side=16)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> np.ndarray:
        svc = service(adapter)
        probs = await svc.predict_proba(x)  # input 4 of 5 fails, its second try (6th) does not
        assert emulator.counters.requests == 2 and emulator.counters.billed_images == 5
        assert svc.stats.billed_images == 5
        assert svc.budget.spent == pytest.approx(5 * 1.2 / 1000)
        return probs

    clean = with_emulator(lite0_32, None, lambda _, a: service(a).predict_proba(x))
    assert np.allclose(with_emulator(lite0_32, Faults(fail_input_every=4), body), clean)


def test_ten_percent_failed_inputs_are_asked_again_and_the_run_goes_on(lite0_32: Any,
                                                                       tmp_path: Any) -> None:
    x = images(40, side=16)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> None:
        svc = service(adapter)
        svc.cache = ProbabilityCache(tmp_path)
        await svc.predict_proba(x)  # every 10th input fails, each asked again until answered
        assert emulator.counters.billed_images == svc.stats.billed_images == 40
        assert svc.budget.spent == pytest.approx(40 * 1.2 / 1000)  # failed inputs are not billed

    with_emulator(lite0_32, Faults(fail_input_every=10), body)


def test_inputs_that_keep_failing_stop_the_run_with_their_indices_and_reasons(
        lite0_32: Any, tmp_path: Any) -> None:
    x = images(3, side=16)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> None:
        svc = service(adapter)
        svc.retry = RetryPolicy(attempts=3, base=0.01, cap=0.02, input_attempts=2)
        with pytest.raises(InputsFailed, match=r"input 0: 30002 \(INPUT_FAILED\) input failed"):
            await svc.predict_proba(x)  # every input fails: Clarifai's status is FAILURE
        assert emulator.counters.requests == 3 and svc.budget.spent == 0

    with_emulator(lite0_32, Faults(fail_input_every=1), body)


def test_billed_then_lost_answers_are_counted_as_uncertain(lite0_32: Any, tmp_path: Any) -> None:
    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> None:
        svc = service(adapter)
        await asyncio.gather(*(svc.predict_proba(images(10, seed=s, side=16)) for s in range(6)))
        c = emulator.counters
        assert c.dropped > 0 and c.billed_images > 60  # the provider billed the lost answers
        assert svc.budget.spent_images == c.billed_images  # and so did barapi, to the image
        assert svc.budget.uncertain_images == 10 * c.dropped

    with_emulator(lite0_32, Faults(drop_every=3), body)


@pytest.mark.parametrize("endpoint", ["localhost", "localhost:http", ":443", "a:99999",
                                      "http://127.0.0.1:5"])
def test_malformed_endpoints_are_one_line_and_never_charged(endpoint: str) -> None:
    from barapi.errors import ConfigError

    with pytest.raises(ConfigError, match="HOST:PORT"):
        ClarifaiAdapter(key=Secret(KEY), endpoint=endpoint, insecure=True)


def test_a_closed_port_is_found_before_anything_is_charged() -> None:
    import socket

    from barapi.errors import ConfigError, TransientError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = ClarifaiAdapter(key=Secret(KEY), endpoint=f"127.0.0.1:{port}", insecure=True)
    with pytest.raises(ConfigError, match="cannot connect"):
        asyncio.run(adapter.check(timeout=1.0))
    adapter.timeout = 1.0
    adapter._checked = True  # as if the endpoint went down after the preflight
    svc = service(adapter)
    svc.retry = RetryPolicy(attempts=2, base=0.01, cap=0.02)
    with pytest.raises(TransientError, match="not sent"):
        asyncio.run(svc.predict_proba(images(2, side=16)))
    assert svc.budget.spent == 0


def test_undecodable_input_is_a_per_input_failure(lite0_32: Any) -> None:
    async def body(emulator: ClarifaiEmulator, _: ClarifaiAdapter) -> Any:
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{emulator.port}") as channel:
            stub = service_pb2_grpc.V2Stub(channel)
            request = service_pb2.PostModelOutputsRequest(
                model_id="nsfw-recognition",
                inputs=[resources_pb2.Input(data=resources_pb2.Data(
                    image=resources_pb2.Image(base64=b"not an image")))])
            return await stub.PostModelOutputs(request, metadata=(("authorization", f"Key {KEY}"),))

    response = with_emulator(lite0_32, None, body)
    assert response.status.code == 10020 and response.outputs[0].status.code == 30002  # FAILURE


def test_end_to_end_run_against_the_emulator_matches_its_billing(lite0_32: Any, tmp_path: Any) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    binary = digits.target < 2  # a two-class task, as the paper runs on few-output APIs
    np.savez(tmp_path / "digits01.npz", X=digits.images[binary], y=digits.target[binary])
    config = api.make_config(provider="clarifai", dataset=str(tmp_path / "digits01.npz"),
                             canvas=32, window=16, resolution=4, per_class=10, q=2, epochs=1, m=2,
                             batch=10)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> tuple[Any, Any]:
        session = api.prepare(config, adapter=adapter, budget=25.0, runs_root=tmp_path / "runs",
                              cache_dir=tmp_path / "cache")
        estimate = session.estimate()[-1]
        result = await session.trainer.run()
        return emulator.counters.billed_images, session, estimate, result

    billed, session, estimate, result = with_emulator(lite0_32, None, body)
    stats = session.service.stats
    assert billed == stats.billed_images and stats.images == estimate.images  # hits cost $0
    ledger = read_ledger(session.folder.ledger)
    assert ledger.images == billed and ledger.uncertain_images == 0
    assert session.service.budget.spent == pytest.approx(billed * 1.2 / 1000)
    assert 0 <= result.test_accuracy <= 1


def test_cli_run_against_the_emulator_subprocess(tmp_path: Any) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    digits = load_digits()
    binary = digits.target < 2
    np.savez(tmp_path / "d01.npz", X=digits.images[binary], y=digits.target[binary])
    env = {**os.environ, "CLARIFAI_PAT": KEY}
    server = subprocess.Popen([sys.executable, "-m", "barapi", "emulate", "clarifai", "--port", "0",
                               "--input-size", "32"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline() if server.stderr else ""
        assert "127.0.0.1:" in line, line
        port = line.strip().rsplit(":", 1)[1]
        key_file = tmp_path / "pat.txt"
        key_file.write_text(KEY + "\n")
        no_key = {k: v for k, v in env.items() if k != "CLARIFAI_PAT"}
        args = [sys.executable, "-m", "barapi", "run", "--provider", "clarifai", "--model",
                "moderation-recognition", "--endpoint", f"127.0.0.1:{port}", "--insecure",
                "--budget", "25", "--dataset", str(tmp_path / "d01.npz"), "--canvas", "32",
                "--window", "16", "--resolution", "4", "--per-class", "10", "--q", "2",
                "--epochs", "1", "--m", "2", "--batch", "10", "--runs-dir", "runs",
                "--cache-dir", "cache", "--json"]
        wrong = tmp_path / "wrong.txt"
        wrong.write_text("not-the-key\n")
        refused = subprocess.run([*args, "--key-file", str(wrong)], env=no_key, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "11009" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()[-1:]) == 1 and "Traceback" not in refused.stderr
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
        run = subprocess.run([*args, "--key-file", str(key_file)], env=no_key, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert KEY not in run.stdout + run.stderr
        summary = json.loads(run.stdout)
    finally:
        server.send_signal(signal.SIGINT)
        _, tail = server.communicate(timeout=30)
    billed = int(next(x for x in tail.splitlines() if x.startswith("billed images:")).split(":")[1])
    assert billed == summary["billed_images"]
    assert summary["dollars"] == pytest.approx(billed * 1.2 / 1000)


def test_sklearn_estimator_against_the_emulator(lite0_32: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    from barapi.estimator import BARClassifier

    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    digits = load_digits()
    keep = digits.target < 2
    x, y = digits.data[keep][:60], digits.target[keep][:60]

    async def serve_and_fit(emulator: ClarifaiEmulator, _: ClarifaiAdapter) -> tuple[float, int]:
        clf = BARClassifier(provider="clarifai", model="nsfw-recognition", m=1, insecure=True,
                            endpoint=f"127.0.0.1:{emulator.port}", canvas=16, window=8,
                            resolution=4, q=2, epochs=1, budget=5.0)
        await asyncio.to_thread(clf.fit, x, y)
        score = await asyncio.to_thread(clf.score, x, y)
        return score, emulator.counters.billed_images

    score, billed = with_emulator(lite0_32, None, serve_and_fit)
    assert 0 <= score <= 1 and billed > 0


def test_model_names_with_user_app_and_version() -> None:
    from barapi.adapters.clarifai import parse_model
    from barapi.errors import ConfigError

    assert parse_model("nsfw-recognition") == {"model": "nsfw-recognition", "version_id": ""}
    assert parse_model("me/app1/my-model@v3") == {"user_id": "me", "app_id": "app1",
                                                  "model": "my-model", "version_id": "v3"}
    with pytest.raises(ConfigError, match="USER/APP/MODEL"):
        parse_model("a/b")
    adapter = ClarifaiAdapter("my-model", key=Secret(KEY), labels=["x", "y", "z"], user_id="me",
                              app_id="app1", version_id="v3")
    assert adapter.identity == "clarifai/api.clarifai.com:443/me/app1/my-model@v3"
    assert adapter.n_sources == 3


def test_run_completes_under_injected_faults_without_overspending(lite0_32: Any, tmp_path: Any) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "d01.npz", X=digits.images[keep], y=digits.target[keep])
    config = api.make_config(provider="clarifai", dataset=str(tmp_path / "d01.npz"), canvas=32,
                             window=16, resolution=4, per_class=10, q=2, epochs=1, m=2, batch=5)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> tuple[Any, Any, Any]:
        session = api.prepare(config, adapter=adapter, budget=1.0, runs_root=tmp_path / "runs",
                              cache_dir=tmp_path / "cache")
        session.service.retry = RetryPolicy(attempts=12, base=0.02, cap=0.3)
        result = await session.trainer.run()
        return emulator.counters, session, result

    counters, session, result = with_emulator(lite0_32, Faults(max_rps=40, unavailable_every=4),
                                              body)
    budget = session.service.budget
    assert result.stopped is None and counters.throttled + counters.unavailable > 0
    assert counters.billed_images == session.service.stats.billed_images
    assert budget.spent_images - budget.uncertain_images == counters.billed_images
    assert budget.spent <= 1.0


def test_concepts_are_read_from_the_model_for_free_and_wrong_labels_refused(lite0_32: Any) -> None:
    from barapi.errors import ConfigError

    async def body(emulator: ClarifaiEmulator, _: ClarifaiAdapter) -> None:
        def make(model: str, labels: list[str] | None = None) -> ClarifaiAdapter:
            return ClarifaiAdapter(model, key=Secret(KEY), endpoint=f"127.0.0.1:{emulator.port}",
                                   insecure=True, labels=labels)

        found = make("nsfw-recognition")
        await found.check()
        assert found.labels == ["nsfw", "sfw"] and found.label_note is None
        with pytest.raises(ConfigError, match=r"'NSFW' is not among the concepts of "
                                              r"'nsfw-recognition': nsfw, sfw"):
            await make("nsfw-recognition", ["NSFW", "sfw"]).check()
        subset = make("moderation-recognition", ["safe", "explicit"])
        await subset.check()
        assert subset.labels == ["safe", "explicit"]
        assert subset.label_note is not None and "2 of the 5 concepts" in subset.label_note
        with pytest.raises(ConfigError, match="21200"):
            await make("me/app/unknown-model").check()
        assert emulator.counters.requests == 0 and emulator.counters.billed_images == 0
        assert emulator.counters.model_calls == 4  # free calls only

    with_emulator(lite0_32, None, body)


def test_the_reported_model_version_is_part_of_the_cache_identity(lite0_32: Any) -> None:
    """Two boxes behind one endpoint (an emulator restarted with another --box, or the
    service's model updated under "latest") never share cache keys."""
    from barapi.adapters.boxes import create_box

    identities = []
    for box in ("imagenet-moderation", "modk-moderation"):
        model = create_box(box, device="cpu", input_size=32)

        async def body(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> str:
            before = adapter.identity
            await adapter.check()
            assert before.endswith("@latest") and not adapter.identity.endswith("@latest")
            return adapter.identity

        identities.append(with_emulator({"moderation-recognition": model}, None, body))
    assert identities[0] != identities[1]


# --- the provider's words: concepts by id, answers that omit one, the model-info call ---------

def numpy_box(seed: int = 0) -> Any:
    """A cheap numpy black box (20 classes folded into the concepts); `seed` makes another
    model version."""
    from conftest import LinearSoftmaxAdapter

    return LinearSoftmaxAdapter(n_sources=20, seed=seed)


def checked_answers(faults: Faults | None, x: np.ndarray, **options: Any) -> tuple[Any, Any]:
    """(answers, adapter) of a checked adapter to `x` from the numpy box behind `faults`."""
    async def body(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> tuple[Any, Any]:
        await adapter.check()
        return await adapter.predict_proba(x), adapter

    return with_emulator(numpy_box(), faults, body, **options)


def test_concepts_are_matched_by_id_whatever_names_the_answers_carry() -> None:
    """clarifai-python-grpc#62: an app answering in another language. Matched by name, the
    renamed columns were zero in every paid answer."""
    x = images(4, side=16)
    clean, _ = checked_answers(None, x)
    localised, adapter = checked_answers(Faults(answer_names={"gore": "sangre", "drug": "droga"}), x)
    assert adapter.labels == ["safe", "suggestive", "explicit", "drug", "gore"]
    assert np.array_equal(localised, clean) and (clean[:, 3:] > 0).all()


def test_labels_name_concepts_by_id_or_by_name_and_bind_their_ids() -> None:
    renamed = Faults(concept_names={"explicit": "nsfw", "gore": "blood"})
    x = images(3, side=16)
    clean, _ = checked_answers(None, x)
    for given in (["explicit", "gore"], ["nsfw", "blood"], ["nsfw", "gore"]):
        answers, adapter = checked_answers(renamed, x, labels=given)
        assert adapter.labels == ["nsfw", "blood"] and adapter.pinned()["concepts"] == ["explicit",
                                                                                        "gore"]
        assert np.array_equal(answers, clean[:, [2, 4]])
    from barapi.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'nsfw' \(id explicit\) is named twice"):
        checked_answers(renamed, x, labels=["nsfw", "explicit"])
    with pytest.raises(ConfigError, match="'safe' is named twice"):
        ClarifaiAdapter(key=Secret(KEY), labels=["safe", "safe"])


def test_a_resume_keeps_the_concept_ids_its_run_was_pinned_to_after_a_rename() -> None:
    """--labels named concepts by name; the app renamed one since: the run folder's pinned ids
    keep the columns (without them the resume could only refuse the stale name)."""
    from barapi.errors import ConfigError

    x = images(3, side=16)
    clean, _ = checked_answers(None, x)
    _, first = checked_answers(Faults(concept_names={"explicit": "porn"}), x, labels=["porn", "gore"])
    pins = first.pinned()
    assert pins["concepts"] == ["explicit", "gore"] and pins["version"]
    renamed = Faults(concept_names={"explicit": "nsfw"})
    with pytest.raises(ConfigError, match="'porn' is not among the concepts"):
        checked_answers(renamed, x, labels=["porn", "gore"])  # a new run: the name is gone

    async def resume(_: ClarifaiEmulator, adapter: ClarifaiAdapter) -> tuple[Any, Any]:
        adapter.pin(pins)
        await adapter.check()
        return await adapter.predict_proba(x), adapter

    answers, resumed = with_emulator(numpy_box(), renamed, resume, labels=["porn", "gore"])
    assert resumed.labels == ["nsfw", "gore"] and np.array_equal(answers, clean[:, [2, 4]])


def test_an_answer_lacking_a_concept_is_asked_again_and_never_cached(tmp_path: Any) -> None:
    """An answer that omits a concept is not a zero for it: the image is asked once more; an
    answer that keeps omitting it stops the run naming the concept, and none is cached."""
    from barapi.errors import InvalidAnswer

    x = images(6, side=16)
    clean, _ = checked_answers(None, x)

    async def body(emulator: ClarifaiEmulator, adapter: ClarifaiAdapter) -> Any:
        svc = service(adapter)
        svc.cache = ProbabilityCache(tmp_path)
        probs = await svc.predict_proba(x)  # the 4th answer omits a concept: asked again
        assert emulator.counters.billed_images == 6 + 1 and svc.stats.invalid_answers == 1
        assert np.array_equal(probs, clean)
        emulator.faults.omit_every = 1  # now every answer omits its lowest-scored concept
        y = images(2, seed=1, side=16)
        with pytest.raises(InvalidAnswer, match=r"answered without '(safe|suggestive|explicit|"
                                                r"drug|gore)' twice for the same image"):
            await svc.predict_proba(y)
        assert emulator.counters.billed_images == svc.budget.spent_images == 7 + 4  # all paid
        emulator.faults.omit_every = 0
        assert np.array_equal(await svc.predict_proba(x), clean)  # the valid ones were kept
        await svc.predict_proba(y)
        assert emulator.counters.billed_images == 11 + 2  # the incomplete ones were not

    with_emulator(numpy_box(), Faults(omit_every=4), body)


@pytest.mark.parametrize(("error", "said"), [
    ("UNIMPLEMENTED", "gRPC UNIMPLEMENTED"), ("PERMISSION_DENIED", "gRPC PERMISSION_DENIED"),
    (11007, "status 11007 (CONN_INSUFFICIENT_SCOPES): API key has insufficient scopes"),
])
def test_a_failing_model_info_call_says_what_the_server_answered(error: Any, said: str) -> None:
    """The free model-info call is not needed with --labels: its failure is a note; without
    them it is one line with the server's words (it was "cannot connect … check --endpoint")."""
    from barapi.errors import ConfigError

    x = images(3, side=16)
    clean, _ = checked_answers(None, x)
    with pytest.raises(ConfigError, match=f"{re.escape(said)}.*pass --labels") as refused:
        checked_answers(Faults(model_info_error=error), x)
    assert "cannot connect" not in str(refused.value)
    answers, adapter = checked_answers(Faults(model_info_error=error), x, labels=["gore", "safe"])
    assert adapter.label_note is not None and said in adapter.label_note
    assert adapter.labels == ["gore", "safe"] and np.array_equal(answers, clean[:, [4, 0]])


@pytest.mark.parametrize(("error", "said"), [
    ("UNAUTHENTICATED", "gRPC UNAUTHENTICATED.*check the key"),
    ("UNAVAILABLE", "cannot connect to Clarifai.*gRPC UNAVAILABLE.*check --endpoint"),
])
def test_a_refused_key_or_an_unreachable_server_stops_even_with_labels(error: str, said: str) -> None:
    from barapi.errors import ConfigError

    with pytest.raises(ConfigError, match=said):
        checked_answers(Faults(model_info_error=error), images(1, side=16), labels=["safe", "gore"])


# --- the model version a run is pinned to --------------------------------------------------------

TINY_RUN = ["--provider", "clarifai", "--insecure", "--dataset", "digits", "--classes", "0,1",
            "--canvas", "16", "--window", "8", "--resolution", "4", "--per-class", "4", "--q", "1",
            "--epochs", "1", "--m", "1", "--batch", "4", "--patience", "0"]


def cli(cwd: Any, *args: str, key: str = KEY) -> Any:
    """`barapi ARGS` in this process (click's CliRunner), in `cwd`, with CLARIFAI_PAT=`key` and
    the default answer cache inside `cwd`."""
    import gc

    from click.testing import CliRunner

    from barapi.cli import main

    gc.collect()  # a refused command's run folder lock goes with its traceback (a process exits)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("XDG_CACHE_HOME", str(cwd / "xdg"))
        mp.setenv("CLARIFAI_PAT", key)
        return CliRunner().invoke(main, list(args))


def one_line_error(result: Any) -> str:
    """The one error line a refused command printed last (exit 2, no traceback; evaluate and
    predict say what they may cost first)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("barapi: error:")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.stderr
    return str(lines[-1])


def test_a_run_is_pinned_to_the_model_version_it_started_with(tmp_path: Any) -> None:
    """clarifai-javascript#38: "latest" moved between a run and its resume, which finished at
    50% against 87.5%, silently. The version resolved at the start is pinned: asked for by id
    while the service serves it; refused in one line, by resume, evaluate and predict, once
    it does not; accepted knowingly with --accept-version."""
    import json

    from PIL import Image

    from barapi.emulate import ClarifaiEmulatorThread, box_version
    from barapi.run_folder import RunFolder

    old_box, new_box = numpy_box(0), numpy_box(1)
    old, new = box_version(old_box), box_version(new_box)
    server = ClarifaiEmulatorThread(old_box, KEY)
    endpoint = ["--endpoint", f"127.0.0.1:{server.port}"]
    counters = server.emulator.counters
    try:
        first = cli(tmp_path, "run", *TINY_RUN, *endpoint, "--budget", "5", "--no-cache", "--json")
        assert first.exit_code == 0, first.output
        folder = tmp_path / json.loads(first.stdout)["run_dir"]
        assert RunFolder(folder).record()["pinned"]["version"] == old

        server.emulator.publish(new_box)  # "latest" moves; the old version is still served
        assert cli(tmp_path, "evaluate", str(folder), *endpoint).exit_code == 0
        assert counters.billed_by_version.get(new, 0) == 0  # the run kept its own version

        server.emulator.publish(new_box, keep_old=False)  # the old one is gone
        billed = counters.billed_images
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
        for args in (["run", "--resume", str(folder), *endpoint], ["evaluate", str(folder), *endpoint],
                     ["predict", str(folder), str(tmp_path / "x.png"), *endpoint]):
            line = one_line_error(cli(tmp_path, *args))
            assert f"pinned to model version {old}" in line and f"answers with version {new}" in line
            assert f"--accept-version {new}" in line and "21200" in line, line
        assert counters.billed_images == billed  # refused before anything was sent

        accepted = cli(tmp_path, "evaluate", str(folder), *endpoint, "--accept-version", new)
        assert accepted.exit_code == 0, accepted.output
        assert counters.billed_by_version[new] > 0
        assert RunFolder(folder).record()["pinned"]["version"] == new
        assert {"event": "model_version", "from": old, "to": new} in RunFolder(folder).metrics()
        new_run = cli(tmp_path, "run", *TINY_RUN, *endpoint, "--budget", "5", "--accept-version", new)
        assert "--accept-version: only for a run folder" in one_line_error(new_run)
        RunFolder(folder).write_record(pinned=["not", "an", "object"])
        assert "field 'pinned' must be an object" in one_line_error(
            cli(tmp_path, "evaluate", str(folder), *endpoint))
    finally:
        server.stop()


def test_runs_go_on_without_model_info_given_labels_and_stop_on_incomplete_answers(
        tmp_path: Any) -> None:
    """A run: the model-info call answered UNIMPLEMENTED (a note with --labels, one line
    without); answers that keep leaving a concept out stop it, naming the concept (they
    were zeros, and the run exited 0)."""
    import json

    from barapi.emulate import ClarifaiEmulatorThread

    faults = Faults(model_info_error="UNIMPLEMENTED")
    with ClarifaiEmulatorThread(numpy_box(), KEY, faults) as server:
        endpoint = ["--endpoint", f"127.0.0.1:{server.port}", "--budget", "5", "--json"]
        line = one_line_error(cli(tmp_path, "run", *TINY_RUN, *endpoint))
        assert "gRPC UNIMPLEMENTED" in line and "pass --labels" in line, line
        labelled = cli(tmp_path, "run", *TINY_RUN, *endpoint[:-1], "--labels", "safe,gore",
                       "--no-evaluate")
        assert labelled.exit_code == 0, labelled.output
        assert "the model-info call (free) was answered gRPC UNIMPLEMENTED" in labelled.stderr
        server.emulator.faults.omit_every = 1
        billed = server.emulator.counters.billed_images
        stopped = cli(tmp_path, "run", *TINY_RUN, *endpoint, "--labels", "safe,gore", "--no-cache")
        assert stopped.exit_code == 3, stopped.output
        assert re.search(r"answered without '(safe|gore)' twice for the same image", stopped.stderr)
        assert json.loads(stopped.stdout)["billed_images"] == server.emulator.counters.billed_images \
            - billed
