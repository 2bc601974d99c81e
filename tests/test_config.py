"""Issue 29, items 6, 9 and 14: the run configuration refuses empty text, repeated or empty
names in a list, a step too large to hold in memory, an oversized canvas, and records the
side a NudeNet box really runs at."""

from __future__ import annotations

import pytest

from barapi.config import MAX_BUDGET, MAX_CANVAS, check_budget_dollars, make_config
from barapi.errors import ConfigError


@pytest.mark.parametrize("field", ["classes", "model", "labels", "endpoint", "key_file",
                                   "weights", "surrogate", "dataset", "provider"])
@pytest.mark.parametrize("value", ["", "  "])
def test_empty_text_is_an_error_not_the_default(field: str, value: str) -> None:
    """`--classes ""` (an unset shell variable) once meant "all classes" and spent $0.96 of a
    $1 budget on a task nobody asked for."""
    with pytest.raises(ConfigError, match=rf"^{field}: empty"):
        make_config(**{field: value})


@pytest.mark.parametrize(("field", "value", "says"), [
    ("classes", ",", "an empty name"), ("classes", "0,,1", "an empty name"),
    ("classes", "0, 1, 0", "'0' given more than once"), ("labels", "safe,", "an empty name"),
    ("labels", "safe,safe", "'safe' given more than once")])
def test_a_list_of_names_has_no_empty_name_and_no_name_twice(field: str, value: str,
                                                             says: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: {says}"):
        make_config(**{field: value})


def test_a_list_of_distinct_names_is_kept_as_given() -> None:
    assert make_config(classes="0, 1", labels="safe,gore").labels == "safe,gore"


def test_a_step_too_large_for_memory_is_refused_before_anything_runs() -> None:
    """`--q 100000` paid for label mapping, then hung composing 2 million images."""
    with pytest.raises(ConfigError, match=r"^q: one training step would query batch 20 × 100001"):
        make_config(q=100_000)
    with pytest.raises(ConfigError, match=r"^q: .*--batch"):
        make_config(batch=10_000_000)
    make_config(batch=200, canvas=512)  # 1.7 GiB of images: fits
    with pytest.raises(ConfigError, match=r"^q: .*8\.1 GiB"):  # and a float32 perturbation each
        make_config(batch=200, canvas=512, per_sample_directions=True)
    make_config(q=100_000, method="zero-shot")  # no training step: no such images


@pytest.mark.parametrize("field", ["canvas", "input_size"])
def test_canvas_and_input_size_have_a_ceiling(field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field} must be at most {MAX_CANVAS}"):
        make_config(**{field: MAX_CANVAS + 1})


def test_a_nudenet_box_records_the_side_it_runs_at() -> None:
    """It ran at 320 px while config.json recorded 112 (the default) or the 64 given."""
    assert make_config(model="nudenet-nsfw").input_size == 320
    assert make_config(model="nudenet-moderation", input_size=0).input_size == 320
    with pytest.raises(ConfigError, match=r"^input_size: nudenet-nsfw runs at 320 px.*not 64"):
        make_config(model="nudenet-nsfw", input_size=64)
    assert make_config(input_size=64).input_size == 64  # other models take it


def test_a_wrong_type_says_what_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^device: .*got ''"):
        make_config(device="")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 1e308, True, "5"])
def test_a_budget_is_a_finite_number_of_dollars_below_the_ceiling(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^--budget: expected a finite amount"):
        check_budget_dollars(value)
    assert check_budget_dollars(MAX_BUDGET) == MAX_BUDGET and check_budget_dollars(0) == 0.0


def test_a_surrogate_prior_refuses_per_sample_directions() -> None:
    # P-RGF mixes one prior into q directions the minibatch shares
    with pytest.raises(ValueError, match="--no-per-sample-directions"):
        make_config(surrogate="efficientnet-lite0", per_sample_directions=True)
    assert make_config(per_sample_directions=True).estimator().per_sample
