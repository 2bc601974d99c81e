from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LinearSoftmaxAdapter, tiny_config

from barapi import api
from barapi.cards import load_card
from barapi.config import make_config
from barapi.errors import ConfigError
from barapi.estimate import estimate


@pytest.mark.parametrize(("q", "images", "dollars"), [(1, 1_860, 3.72), (5, 5_580, 11.16),
                                                      (10, 10_230, 20.46)])
def test_reproduces_the_papers_azure_table(q: int, images: int, dollars: float) -> None:
    # Tsai et al. (2020), Table 5: 930 training images, one epoch, random mapping, no
    # evaluation, the paper's one-sided estimator (q + 1 queries per image)
    config = make_config(q=q, epochs=1, mapping="random", head="map", evaluate=False,
                         directions="sphere", two_sided=False)
    phases = estimate(config, n_train=930, n_val=0, n_test=0, card=load_card("azure-s0"))
    total = phases[-1]
    assert (total.images, total.requests) == (images, images)
    assert total.dollars == pytest.approx(dollars, abs=1e-9)
    assert total.seconds == pytest.approx(images / 10)  # S0: 10 transactions per second


def test_phases_break_down_mapping_training_and_evaluation() -> None:
    config = make_config(q=4, epochs=2, batch=20, eval_every=0, two_sided=False)
    phases = {p.name: p for p in estimate(config, 105, 30, 40, load_card("clarifai-moderation"))}
    assert phases["label mapping"].images == 105
    assert phases["training"].images == 2 * 105 * 5  # one-sided: q + 1 variants per image
    steps = 2 * 6  # 5 full minibatches and one of 5 per epoch
    assert phases["evaluation"].images == 40 + 30 * (1 + 2) + 40  # zero-shot, val ×3, test
    assert phases["training"].requests == steps  # every step fits in one 128-image request
    assert phases["total"].dollars == pytest.approx(phases["total"].images * 1.2 / 1000)


def test_actual_spend_matches_the_estimate_when_nothing_is_cached(tmp_path: Path) -> None:
    config = tiny_config(epochs=2, eval_every=3)
    session = api.prepare(config, adapter=LinearSoftmaxAdapter(), card_fields={"price_per_1000": 2.0},
                          budget=100.0, use_cache=False, runs_root=tmp_path)
    predicted = session.estimate()[-1]
    result = session.run()
    assert result.extra["billed_images"] == predicted.images
    assert session.service.stats.requests == predicted.requests
    assert result.extra["dollars"] == pytest.approx(predicted.dollars, rel=0.02)


def test_card_overrides_from_file_and_fields(tmp_path: Path) -> None:
    override = tmp_path / "card.toml"
    override.write_text("price_per_1000 = 3.5\nrequests_per_second = 1\n")
    card = load_card("azure-s0", override, requests_per_second=4)
    assert (card.price_per_1000, card.requests_per_second, card.max_images_per_request) == (3.5, 4, 1)
    assert "price_per_1000" in card.sources
    with pytest.raises(ConfigError, match="price_per_1000"):
        load_card("local", price_per_1000=-1)
    with pytest.raises(ConfigError, match="no price/limit card"):
        load_card("nosuch")


def test_every_shipped_card_states_its_sources() -> None:
    for name in ("local", "clarifai-moderation", "clarifai-nsfw", "azure-s0", "azure-s0-nostore",
                 "azure-f0"):
        card = load_card(name)
        assert card.name == name
        if card.price_per_1000 or card.requests_per_second:
            assert card.sources, name
    assert load_card("clarifai-nsfw").max_images_per_request == 128
    assert load_card("azure-s0-nostore").requests_per_second == 20
    assert load_card("azure-f0").requests_per_second == 2


def test_reach_counts_whole_training_steps() -> None:
    from barapi.estimate import reach

    config = make_config(q=4, batch=20, mapping="random", head="map", two_sided=False)
    assert reach(config, 100, 350) == (3, 0.6)  # 100 images a step, 5 steps an epoch
    frequency = make_config(q=4, batch=20, mapping="frequency", two_sided=False)
    assert reach(frequency, 100, 350) == (2, 0.4)  # the mapping's 100 images come first
    two_sided = make_config(q=4, batch=20, mapping="random", head="map", two_sided=True)
    assert reach(two_sided, 100, 350) == (2, 0.4)  # 160 images a step


def test_coarse_answers_are_warned_about_before_anything_is_sent(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from barapi.adapters.base import AnswerForm
    from barapi.estimate import coarse_warning

    assert coarse_warning(AnswerForm(), "box") is None
    assert coarse_warning(AnswerForm(threshold=0.01), "box") is None  # Rekognition as barapi asks
    said = coarse_warning(AnswerForm(levels=(0.1, 0.3, 0.5, 0.7, 0.9)), "box")
    assert said is not None and "one of 5 levels" in said and "finite differences" in said
    assert coarse_warning(AnswerForm(threshold=0.5, top=100), "box") is not None
    out = subprocess.run(
        [sys.executable, "-m", "barapi", "estimate", "--provider", "google", "--model",
         "safe-search", "--endpoint", "http://127.0.0.1:9", "--dataset", "digits", "--classes",
         "0,1", "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "GOOGLE_VISION_API_KEY": "any-test-key"})
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["answers"].startswith("rounds each score") and "finite" in shown["coarse_warning"]
