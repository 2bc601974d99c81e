"""barapi's AWS Rekognition adapter through the real boto3 against the loopback emulator
(127.0.0.1), which verifies SigV4 with botocore's own signer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from barapi.adapters.rekognition import (
    TOP_LEVEL,
    RekognitionAdapter,
    chain_problem,
    create,
    resolve_label,
)
from barapi.budget import Budget
from barapi.cards import load_card
from barapi.emulate import Faults, RekognitionEmulator, box_version
from barapi.emulate.rekognition import CHILD_SHARE, verify_sigv4
from barapi.errors import ConfigError, FatalProviderError, InvalidAnswer, TransientError
from barapi.query import QueryService
from barapi.retry import RetryPolicy

KEY_ID, SECRET = "AKIDBARAPITEST", "barapi-test-secret"
MODERATION = ["safe", "suggestive", "explicit", "drug", "gore"]
PRICE = load_card("aws-rekognition").price_per_1000 / 1000  # dollars per image


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The standard AWS chain holding only the test's key, region us-east-1; no profile, no
    config files, no instance metadata."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def images(n: int, seed: int = 0, side: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def numpy_box(seed: int = 0) -> Any:
    """A cheap numpy black box (20 classes folded into the 5 moderation concepts)."""
    from conftest import LinearSoftmaxAdapter

    return LinearSoftmaxAdapter(n_sources=20, seed=seed)


def emulator(faults: Faults | None = None, seed: int = 0) -> RekognitionEmulator:
    return RekognitionEmulator(numpy_box(seed), {KEY_ID: SECRET}, concepts=MODERATION,
                               faults=faults)


def adapter(em: RekognitionEmulator, labels: str | None = None, **kwargs: Any) -> RekognitionAdapter:
    if kwargs:
        return RekognitionAdapter(region="us-east-1", endpoint=f"http://127.0.0.1:{em.port}",
                                  labels=labels.split(",") if labels else None, **kwargs)
    return create(endpoint=f"127.0.0.1:{em.port}", insecure=True, labels=labels)


def service(a: RekognitionAdapter, attempts: int = 12) -> QueryService:
    return QueryService(a, Budget(PRICE * 1000, 10.0), max_batch=1,
                        retry=RetryPolicy(attempts=attempts, base=0.01, cap=0.05))


def concept_scores(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 5) what the emulator's box answers, in MODERATION order."""
    full = asyncio.run(numpy_box(seed).predict_proba(x))
    return np.stack([full[:, j::5].sum(axis=1) for j in range(5)], axis=1)


# --- SigV4, really checked -------------------------------------------------------------------

def test_a_signed_request_is_accepted_and_a_wrong_secret_or_key_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = images(1)
    with emulator() as em:
        assert asyncio.run(service(adapter(em)).predict_proba(x)).shape == (1, len(TOP_LEVEL))
        assert em.counters.billed_images == 1 and em.counters.rejected_auth == 0
        for env, value, says in [("AWS_SECRET_ACCESS_KEY", "wrong-secret", "InvalidSignatureException:"
                                  " The request signature we calculated does not match"),
                                 ("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN", "UnrecognizedClientException: "
                                  "The security token included in the request is invalid")]:
            monkeypatch.setenv(env, value)
            svc = service(adapter(em))
            with pytest.raises(FatalProviderError, match=says) as caught:
                asyncio.run(svc.predict_proba(x))
            assert not caught.value.billed and svc.budget.spent == 0 and svc.stats.attempts == 1
            monkeypatch.setenv(env, {"AWS_SECRET_ACCESS_KEY": SECRET}.get(env, KEY_ID))
    assert em.counters.billed_images == 1 and em.counters.rejected_auth == 2


def test_the_signature_covers_the_body_and_expires() -> None:
    """verify_sigv4 recomputes the signature: a body changed after signing, or a request
    signed 16 minutes ago, is refused; the request as signed passes."""
    from email.message import Message

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b'{"Image": {"Bytes": "AAAA"}}'
    request = AWSRequest(method="POST", url="http://127.0.0.1:9/", data=body,
                         headers={"X-Amz-Target": "RekognitionService.DetectModerationLabels"})
    SigV4Auth(Credentials(KEY_ID, SECRET), "rekognition", "us-east-1").add_auth(request)
    headers = Message()
    for name, value in [*request.headers.items(), ("Host", "127.0.0.1:9")]:
        headers[name] = value
    assert verify_sigv4(headers, "/", body, {KEY_ID: SECRET}) is None
    changed = verify_sigv4(headers, "/", body.replace(b"AAAA", b"AAAB"), {KEY_ID: SECRET})
    assert changed is not None and changed[1]["__type"] == "InvalidSignatureException"
    import calendar
    import time

    later = calendar.timegm(time.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")) + 16 * 60
    expired = verify_sigv4(headers, "/", body, {KEY_ID: SECRET}, now=later)
    assert expired is not None and "Signature expired" in expired[1]["message"]


# --- labels: the threshold, the hierarchy ----------------------------------------------------

@pytest.mark.parametrize("min_confidence", [1.0, 20.0])
def test_labels_below_min_confidence_read_as_the_threshold_not_zero(min_confidence: float) -> None:
    """The service leaves out every label under MinConfidence: such a column reads as the
    threshold (never 0), the others as their Confidence / 100."""
    x = images(6)
    with emulator() as em:
        a = adapter(em, "Explicit,Violence,Gambling", min_confidence=min_confidence)
        probs = asyncio.run(service(a).predict_proba(x))
    scores = concept_scores(x)[:, [2, 4]]  # explicit → Explicit, gore → Violence
    threshold = min_confidence / 100
    expected = np.where(scores * 100 >= min_confidence, scores, threshold)
    assert np.allclose(probs[:, :2], expected, atol=1e-6)
    assert (probs[:, 2] == np.float32(threshold)).all()  # Gambling: never answered by this box
    assert (probs >= np.float32(threshold)).all() and a.form.threshold == threshold
    if min_confidence > 1:
        assert (scores * 100 < min_confidence).any()  # some were left out, and read as threshold


def test_a_level_2_label_is_a_column_of_its_own() -> None:
    x = images(4, seed=3)
    with emulator() as em:
        a = adapter(em, "Explicit Nudity,Explicit,Graphic Violence")
        probs = asyncio.run(service(a).predict_proba(x))
    assert a.labels == ["Explicit Nudity", "Explicit", "Graphic Violence"]
    scores = concept_scores(x, 0)
    level2 = np.maximum(scores[:, [2, 4]] * CHILD_SHARE, 0.01)
    assert np.allclose(probs[:, [0, 2]], level2, atol=1e-6)
    assert np.allclose(probs[:, 1], np.maximum(scores[:, 2], 0.01), atol=1e-6)


def test_labels_are_resolved_by_name_at_any_level_and_unknown_ones_cost_nothing() -> None:
    assert resolve_label("explicit nudity") == ("explicit", "explicit nudity")
    assert resolve_label("Gambling") == ("", "gambling")  # the level-1 one of the two
    assert resolve_label("Gambling/Gambling") == ("gambling", "gambling")
    assert resolve_label("Pills") == ("products", "pills")
    with emulator() as em:
        for labels, says in [("Explicit,Nudity", "'Nudity' is not a label"),
                             ("Explicit,explicit", "'explicit' names the same label as 'Explicit'")]:
            with pytest.raises(ConfigError, match=says):
                adapter(em, labels)
    assert em.counters.requests == 0


@pytest.mark.parametrize(("name", "parent", "level", "bad"), [
    ("Explicit", "", 1, False), ("Explicit Nudity", "Explicit", 2, False),
    ("Exposed Female Nipple", "Explicit Nudity", 3, False), ("Gambling", "Gambling", 2, False),
    ("Something New", "Violence", 2, False),  # unknown to barapi, placed consistently
    ("Explicit Nudity", "Violence", 2, True), ("Explicit", "", 2, True),
    ("Explicit Nudity", "", 1, True), ("Something New", "Explicit Nudity", 2, True),
    ("Explicit", "", 4, True), ("Explicit", "", "1", True),
])
def test_a_label_placed_against_the_hierarchy_is_inconsistent(name: str, parent: str,
                                                             level: object, bad: bool) -> None:
    assert (chain_problem(name, parent, level) is not None) == bad


@pytest.mark.parametrize("label", [
    {"Name": "Explicit", "ParentName": "", "TaxonomyLevel": 1, "Confidence": 100.5},
    {"Name": "Explicit", "ParentName": "", "TaxonomyLevel": 1, "Confidence": "high"},
    {"Name": "Explicit", "ParentName": "", "TaxonomyLevel": 1, "Confidence": float("nan")},
    {"Name": "Explicit Nudity", "ParentName": "Violence", "TaxonomyLevel": 2, "Confidence": 60.0},
])
def test_an_invalid_answer_is_asked_again_then_refused(label: dict[str, Any]) -> None:
    """First time for an image: NaN (QueryService never caches it and asks once more); second
    time in a row: InvalidAnswer naming what was wrong (billed)."""
    a = RekognitionAdapter(region="us-east-1")
    x = images(1)[0]
    answer = {"ModerationLabels": [label], "ModerationModelVersion": "7.0"}
    assert np.isnan(a._read(answer, x)).all()
    with pytest.raises(InvalidAnswer, match="twice for the same image") as caught:
        a._read(answer, x)
    assert caught.value.billed
    good = {"ModerationLabels": [], "ModerationModelVersion": "7.0"}
    assert (a._read(good, x) == np.float32(0.01)).all()


def test_invalid_answers_through_the_wire_are_billed_and_never_cached(tmp_path: Path) -> None:
    from barapi.cache import ProbabilityCache

    with emulator(Faults(bad_answer_every=1)) as em:
        svc = service(adapter(em))
        svc.cache = ProbabilityCache(tmp_path)
        with pytest.raises(InvalidAnswer, match=r"Confidence 150\.0"):
            asyncio.run(svc.predict_proba(images(1)))
        assert em.counters.billed_images == svc.budget.spent_images == 2
        em.faults.bad_answer_every = 0
        asyncio.run(svc.predict_proba(images(1)))
        assert em.counters.billed_images == 3  # nothing invalid was cached


# --- money: throttling, 5xx, timeouts, drops, the 5 MB limit -----------------------------------

@pytest.mark.parametrize("code", ["ThrottlingException", "ProvisionedThroughputExceededException"])
def test_throttling_is_retried_and_not_billed(code: str) -> None:
    with emulator(Faults(max_rps=50)) as em:
        em.throttle_code = code
        svc = service(adapter(em))
        asyncio.run(svc.predict_proba(images(6)))
    c = em.counters
    assert c.throttled > 0 and c.requests == svc.stats.attempts
    assert c.billed_images == svc.stats.billed_images == 6
    assert svc.budget.spent == pytest.approx(6 * PRICE) and svc.budget.uncertain_images == 0


def test_internal_server_errors_are_retried_and_counted_as_billed() -> None:
    with emulator(Faults(unavailable_every=3)) as em:
        svc = service(adapter(em))
        asyncio.run(svc.predict_proba(images(8)))
    c = em.counters
    assert c.unavailable > 0 and c.billed_images == 8
    assert svc.budget.spent == pytest.approx((8 + c.unavailable) * PRICE)  # unknown: billed
    assert svc.budget.uncertain_images == c.unavailable


def test_a_timeout_after_sending_is_retried_and_billed() -> None:
    with emulator(Faults(delay=0.4)) as em:
        a = adapter(em, None, timeout=0.1)
        svc = service(a, attempts=2)
        with pytest.raises(TransientError, match="timed out or lost the connection"):
            asyncio.run(svc.predict_proba(images(1)))
    assert svc.stats.attempts == 2 and svc.budget.spent == pytest.approx(2 * PRICE)


def test_dropped_responses_are_billed_so_the_bill_never_exceeds_the_ledger() -> None:
    with emulator(Faults(drop_every=3)) as em:
        svc = service(adapter(em))
        asyncio.run(svc.predict_proba(images(6)))
    assert em.counters.dropped > 0
    assert svc.budget.spent_images == em.counters.billed_images


def test_the_quota_error_is_fatal_and_not_billed() -> None:
    with emulator(Faults(quota_images=2)) as em:
        svc = service(adapter(em))
        with pytest.raises(FatalProviderError, match="LimitExceededException: An Amazon "
                                                     "Rekognition service limit was exceeded"):
            asyncio.run(svc.predict_proba(images(4)))
    assert em.counters.billed_images == svc.budget.spent_images == 2


def test_an_image_over_5_mb_is_refused_before_sending() -> None:
    noise = images(1, side=1400)  # ~5.9 MB as PNG
    with emulator() as em:
        svc = service(adapter(em))
        with pytest.raises(ConfigError, match="5 MB limit"):
            asyncio.run(svc.predict_proba(noise))
    assert em.counters.requests == 0 and svc.budget.spent == 0


def test_a_refused_connection_is_never_charged() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = create(endpoint=f"127.0.0.1:{port}", insecure=True)
    svc = service(a, attempts=2)
    with pytest.raises(ConfigError, match="cannot connect to AWS Rekognition"):  # free preflight
        asyncio.run(a.check(timeout=0.3))
    a._checked = True  # as if the endpoint went down after the preflight
    with pytest.raises(TransientError, match="not sent"):
        asyncio.run(svc.predict_proba(images(1)))
    assert svc.budget.spent == 0


# --- the version, the chain, bad input ---------------------------------------------------------

def test_the_moderation_model_version_is_pinned_and_a_move_refused() -> None:
    old, new = box_version(numpy_box(0)), box_version(numpy_box(1))
    with emulator() as em:
        first = adapter(em)
        svc = service(first)
        asyncio.run(svc.predict_proba(images(2)))
        pins = first.pinned()
        assert pins == {"version": old}
        em.publish(numpy_box(1))
        refused = rf"pinned to model version {old}.* answers with version {new}.*--accept-version {new}"
        with pytest.raises(FatalProviderError, match=refused) as caught:
            asyncio.run(svc.predict_proba(images(1, seed=1)))
        assert caught.value.billed
        resumed = adapter(em)
        resumed.pin(pins)
        with pytest.raises(FatalProviderError, match=refused):
            asyncio.run(service(resumed).predict_proba(images(1, seed=2)))
        accepted = adapter(em)
        accepted.pin(pins, accept_version=new)
        asyncio.run(service(accepted).predict_proba(images(1, seed=3)))
    assert svc.budget.spent_images == 3


def test_region_credentials_and_options_are_one_line_errors_before_any_spend(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="set AWS_REGION or AWS_DEFAULT_REGION"):
        create()
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # what the other AWS SDKs read
    assert "/eu-west-1/" in create().identity
    for kwargs, says in [({"key_file": "k.txt"}, "--key-file: AWS Rekognition takes its credentials"),
                         ({"model": "my-adapter"}, "--model 'my-adapter': expected a custom"),
                         ({"endpoint": "http://example.com"}, "plaintext"),
                         ({"endpoint": "ftp://127.0.0.1:1"}, "expected https://HOST"),
                         ({"endpoint": "127.0.0.1:x", "insecure": True}, "not a valid URL")]:
        with pytest.raises(ConfigError, match=says):
            create(**kwargs)
    with monkeypatch.context() as without:
        without.setitem(__import__("sys").modules, "boto3", None)  # not installed
        with pytest.raises(ConfigError, match=r"needs the optional package boto3: pip install "
                                              r"'barapi\[aws\]'"):
            create()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with emulator() as em:
        svc = service(adapter(em))
        with pytest.raises(ConfigError, match="no AWS credentials found"):
            asyncio.run(svc.predict_proba(images(1)))
    assert em.counters.requests == 0 and svc.budget.spent == 0


def test_identity_holds_endpoint_region_model_setting_and_min_confidence() -> None:
    arn = "arn:aws:rekognition:us-east-1:123456789012:project/mine/version/v1/1"
    with emulator() as em:
        base, custom = adapter(em), adapter(em, None, project_version=arn, min_confidence=5.0)
        assert base.identity == f"rekognition/http://127.0.0.1:{em.port}/us-east-1/base/min1"
        assert custom.identity == f"rekognition/http://127.0.0.1:{em.port}/us-east-1/{arn}/min5"
        with pytest.raises(FatalProviderError, match="ResourceNotFoundException"):
            asyncio.run(service(custom).predict_proba(images(1)))  # the emulator serves no adapter
        em.adapters = {arn}
        asyncio.run(service(custom).predict_proba(images(1)))
    assert em.counters.billed_images == 1
    expired = {"ModerationLabels": [], "ModerationModelVersion": "7.0"}  # no ProjectVersion
    with pytest.raises(FatalProviderError, match=r"did not answer .*base model answered") as caught:
        RekognitionAdapter(region="us-east-1", project_version=arn)._read(expired, images(1)[0])
    assert caught.value.billed


# --- end to end through the CLI --------------------------------------------------------------

def test_cli_run_against_the_emulator_subprocess(tmp_path: Path) -> None:
    import os

    from conftest import run_with_emulator
    from sklearn.datasets import load_digits

    from barapi.budget import read_ledger

    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "d01.npz", X=digits.images[keep], y=digits.target[keep])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    summary, billed, said = run_with_emulator(
        ["rekognition", "--port", "0", "--input-size", "32"],
        ["--provider", "rekognition", "--endpoint", "{url}", "--insecure", "--budget", "5",
         "--dataset", str(tmp_path / "d01.npz"), "--canvas", "80", "--window", "40",
         "--resolution", "4", "--per-class", "5", "--val-size", "10", "--test-size", "10", "--q",
         "1", "--epochs", "1", "--m", "1", "--batch", "5", "--card-set", "requests_per_second=25",
         "--runs-dir", "runs", "--cache-dir", "cache"], tmp_path, env)
    assert SECRET not in said
    (folder,) = (tmp_path / "runs").iterdir()
    ledger = read_ledger(folder / "ledger.jsonl")
    assert billed == summary["billed_images"] == ledger.images > 0
    assert summary["dollars"] == pytest.approx(billed * PRICE)
    assert ledger.spent_nano / 1e9 == pytest.approx(billed * PRICE) and ledger.uncertain_images == 0
