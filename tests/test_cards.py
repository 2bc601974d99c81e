"""Issue 29, items 7 and 9: price and limit cards are checked by type, range and money sense;
a card's name is never overridden; card files are small regular text files; a paid provider's
price is set to 0 only with `free = true`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import not_a_regular_file

from barapi.cards import OVERRIDABLE, build_card, check_fields, load_card
from barapi.errors import ConfigError

pytestmark = pytest.mark.timeout(20)  # a FIFO read by the old code blocks forever


@pytest.mark.parametrize(("field", "value", "says"), [
    ("price_per_1000", True, "valid number, got True"),  # was taken as $1
    ("price_per_1000", "1.5", "valid number, got '1.5'"),
    ("price_per_1000", 1e-7, "below 5e-05"),  # rounded to $0 an image: the budget limited nothing
    ("price_per_1000", 1e300, "less than or equal to 1000000"),  # overflowed to a traceback
    ("requests_per_second", 1e-9, "below 0.01"),  # paid for 20 images, then hung
    ("requests_per_second", True, "valid number"),
    ("max_images_per_request", 1.5, "valid integer"),
    ("max_images_per_request", True, "valid integer"),
    ("free_images", -1, "greater than or equal to 0")])
def test_a_bad_card_field_is_refused_naming_it(field: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"^card local: field {field}: .*{says}"):
        load_card("local", **{field: value})
    with pytest.raises(ConfigError, match=rf"^--card-set: {field}: .*{says}"):
        check_fields({field: value}, "--card-set")


def test_the_smallest_prices_and_rates_are_accepted() -> None:
    card = load_card("local", price_per_1000=0.00005, requests_per_second=0.01)
    assert card.price_per_1000 == 0.00005 and card.requests_per_second == 0.01
    assert load_card("local", price_per_1000=2).price_per_1000 == 2.0  # an int is a number


def test_a_cards_name_is_never_overridden_and_unknown_fields_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"^--card-set: name: a card's name cannot be overridden"):
        load_card("local", name="x")  # was a TypeError traceback
    with pytest.raises(ConfigError, match=rf"^--card-set: cost: not a card field; fields: "
                                          rf"{', '.join(OVERRIDABLE)}$"):
        load_card("local", cost=1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


def test_a_card_file_with_name_or_an_unknown_field_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"card file .*card\.toml: name: "):
        load_card("local", write(tmp_path, 'name = "clarifai-moderation"\n'))
    with pytest.raises(ConfigError, match=r"card file .*card\.toml: cost: not a card field"):
        load_card("local", write(tmp_path, "cost = 1\n"))


def test_a_paid_providers_price_goes_to_0_only_with_free_true(tmp_path: Path) -> None:
    """A card file with price 0 turned the budget off for a paid provider."""
    with pytest.raises(ConfigError, match=r"price_per_1000 = 0, but its own price is \$1\.2 .*"
                                          r"free = true"):
        load_card("clarifai-moderation", write(tmp_path, "price_per_1000 = 0\n"))
    with pytest.raises(ConfigError, match="free = true"):
        load_card("clarifai-moderation", price_per_1000=0)
    free = load_card("clarifai-moderation", write(tmp_path, "price_per_1000 = 0\nfree = true\n"))
    assert free.price_per_1000 == 0 and free.free
    assert load_card("azure-f0").price_per_1000 == 0  # a free tier's own card needs nothing
    stored = build_card(free.model_dump())  # a run folder's stored card builds again
    assert stored == free


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "fifo", "folder", "huge", "binary",
                                  "latin-1", "not toml"])
def test_a_card_file_that_is_not_a_small_toml_file_is_refused_without_reading_it(
        tmp_path: Path, kind: str) -> None:
    path = not_a_regular_file(tmp_path / "card.toml", kind)
    if kind == "huge":
        path.write_text("# padding\n" * 10_000)
    elif kind == "binary":
        path.write_bytes(b"price_per_1000 = 1\x00")
    elif kind == "latin-1":
        path.write_bytes("# café\n".encode("latin-1"))
    elif kind == "not toml":
        path.write_text("price_per_1000 = = 1\n")
    with pytest.raises(ConfigError, match=rf"^card file {path}: "):
        load_card("local", path)
