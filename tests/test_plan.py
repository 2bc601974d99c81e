"""Budget-shaped runs (barapi.plan): the budget decides validation/test sizes and training
steps, so that a run ends inside it with its test accuracy measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from barapi.cards import load_card
from barapi.cli import main
from barapi.config import make_config
from barapi.data import Dataset, proportional_counts, stratified_split
from barapi.errors import ConfigError
from barapi.estimate import estimate, total_steps, validation_count
from barapi.plan import MIN_TEST_PER_CLASS, plan_run

TINY = ["--dataset", "digits", "--canvas", "32", "--window", "16", "--input-size", "32", "--resolution", "4",
        "--q", "2", "--m", "2", "--device", "cpu", "--patience", "0", "--classes", "0,1",
        "--per-class", "20"]


def toy(counts: list[int]) -> Dataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    images = np.zeros((len(labels), 4, 4, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 0, 1] = np.arange(len(labels)) // 256
    return Dataset(images, labels, [f"c{c}" for c in range(len(counts))], "toy")


def keys(part: Dataset) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in part.images[:, 0, 0, :2]}


def test_split_caps_are_stratified_nested_and_leave_training_alone() -> None:
    data = toy([300, 100, 60])
    full = stratified_split(data, 0.1, 0.2, seed=3)
    small = stratified_split(data, 0.1, 0.2, seed=3, val_size=10, test_size=23)
    smaller = stratified_split(data, 0.1, 0.2, seed=3, val_size=5, test_size=9)
    assert len(small.val.labels) == 10 and len(small.test.labels) == 23
    assert np.bincount(small.test.labels).tolist() == [14, 5, 4]  # one each, the rest in proportion
    assert keys(smaller.test) <= keys(full.test) and keys(small.test) <= keys(full.test)
    assert keys(small.val) <= keys(full.val)
    assert keys(small.train) == keys(full.train)  # caps never move images into training
    with pytest.raises(ConfigError, match="test_size 2"):
        stratified_split(data, 0.1, 0.2, seed=3, test_size=2)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(0, 400))
def test_proportional_counts_never_exceed_the_total_or_a_group(sizes: list[int], total: int) -> None:
    groups = sum(1 for n in sizes if n)
    if total < groups and total < sum(sizes):
        with pytest.raises(ConfigError):
            proportional_counts(sizes, total)
        return
    counts = proportional_counts(sizes, total)
    assert sum(counts) == min(total, sum(sizes))
    assert all(0 <= c <= n and (c >= 1 or n == 0) for c, n in zip(counts, sizes, strict=True))


def test_max_steps_cuts_training_and_the_estimate_counts_it() -> None:
    config = make_config(batch=10, epochs=3, max_steps=4, q=2)
    assert total_steps(config, 25) == 4  # 3 steps an epoch: 9, cut at 4
    assert validation_count(config, 25) == 3  # step 0, end of epoch 1 (step 3), last step 4
    phases = estimate(config, 25, 10, 20, load_card("clarifai-moderation"))
    assert phases[1].images == (10 + 10 + 5 + 10) * 3  # steps of 10, 10, 5, then 10 again


@settings(max_examples=60, deadline=None)
@given(budget=st.floats(0.5, 60), n_train=st.integers(20, 400), n_val=st.integers(10, 300),
       n_test=st.integers(40, 600), q=st.integers(1, 12), epochs=st.integers(1, 8))
def test_a_plan_fits_its_budget_and_keeps_a_test(budget: float, n_train: int, n_val: int,
                                                 n_test: int, q: int, epochs: int) -> None:
    card = load_card("clarifai-moderation")
    config = make_config(q=q, epochs=epochs, batch=20)
    try:
        plan = plan_run(config, n_train, n_val, n_test, 2, card, budget)
    except ConfigError as exc:
        assert "smallest such run costs" in str(exc)
        return
    assert plan.dollars <= budget + 1e-9
    assert plan.n_test >= min(n_test, 2 * MIN_TEST_PER_CLASS) and plan.n_test <= n_test
    assert 1 <= plan.steps <= total_steps(config, n_train)
    assert plan.config.max_steps is None or plan.config.max_steps == plan.steps
    again = estimate(plan.config, n_train, plan.n_val, plan.n_test, card)
    assert again == plan.phases  # the plan is what `barapi estimate` would say


def test_a_budget_too_small_for_a_measured_run_is_one_line() -> None:
    config = make_config(q=10)
    with pytest.raises(ConfigError, match=r"smallest such run costs \$"):
        plan_run(config, 200, 100, 200, 2, load_card("clarifai-moderation"), 0.1)


def test_the_smallest_budget_named_is_rounded_up_and_pays_for_the_run() -> None:
    """Issue 29, item 7: "$0.401 cannot pay; the smallest costs $0.40" (rounded down). The
    named budget must be one the user can pass: rounded up to the cent, and enough."""
    config = make_config(q=10)
    card = load_card("clarifai-moderation", price_per_1000=1.0009)  # costs of odd nanodollars
    with pytest.raises(ConfigError) as info:
        plan_run(config, 200, 100, 200, 2, card, 0.1)
    named = float(re.search(r"smallest such run costs \$([\d,.]+) \(rounded up to the cent\)",
                            str(info.value))[1].replace(",", ""))
    plan = plan_run(config, 200, 100, 200, 2, card, named)  # passes: no error
    assert plan.dollars <= named
    with pytest.raises(ConfigError):
        plan_run(config, 200, 100, 200, 2, card, round(named - 0.01, 2))  # a cent less does not


def test_a_priced_run_on_a_tight_budget_ends_inside_it_with_its_test_accuracy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: full-size validation and test splits used to take a small budget
    before any test; the run either failed (no --yes) or ended without a test accuracy."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    price = ["--card-set", "price_per_1000=10"]  # 1 ¢ an image on the local model
    configured = CliRunner().invoke(main, ["estimate", *TINY, *price, "--epochs", "2",
                                           "--json", "--budget", "4"])
    assert configured.exit_code == 0, configured.output
    shown = json.loads(configured.stdout)
    assert shown["phases"][-1]["dollars"] > 4 and shown["plan"]["shaped"]
    planned = shown["plan"]
    result = CliRunner().invoke(main, ["run", *TINY, *price, "--epochs", "2", "--budget", "4",
                                       "--no-cache", "--runs-dir", "runs", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["test_accuracy"] is not None and summary["stopped"] is None
    assert summary["dollars"] <= 4
    assert summary["billed_images"] == planned["phases"][-1]["images"]
    (folder,) = (tmp_path / "runs").iterdir()
    config = json.loads((folder / "config.json").read_text())["config"]
    assert (config["test_size"], config["val_size"]) == (planned["test_size"], planned["val_size"])
