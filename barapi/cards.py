"""Price and limit cards (TOML, shipped in ``barapi.budgets``), with user overrides.

A card is what the money layer trusts, so every field is checked by type (strict: `true` is
not a price, "1.5" is not a number), by range (finite, below sane ceilings) and for money
sense: a price so small that one image costs less than `MIN_PRICE_PER_1000` allows cannot be
counted in the ledger's nanodollars (the budget would limit nothing); a rate limit under
`MIN_REQUESTS_PER_SECOND` would make a run last for days. A card's `name` is never
overridden, and an unknown field is refused with the list of the fields there are.

A price lowered to 0 on a card whose own price is above 0 (a paid provider) turns the budget
off, so it is refused unless the override also says ``free = true`` (the account is really
not billed: a free tier, an emulator): `FREE_RULE`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, model_validator

from barapi.config import one_line
from barapi.errors import ConfigError
from barapi.files import read_small_text

MIN_PRICE_PER_1000 = 0.00005
"""Smallest price above 0, dollars per 1,000 images: one image then costs 50 nanodollars,
counted in the ledger's integer nanodollars within 1% (a smaller price rounds by more, down
to $0 an image below $0.0000005 per 1,000, and the budget would limit nothing)."""
MAX_PRICE_PER_1000 = 1_000_000.0
"""Largest price, dollars per 1,000 images (far above any API's; sums stay exact)."""
MIN_REQUESTS_PER_SECOND = 0.01
"""Slowest rate limit above 0 (0 = unlimited), requests per second: one request every 100 s;
slower, a run of a few hundred requests would last for days."""
MAX_COUNT = 10**12
"""Largest integer field (images, bytes, px)."""
CARD_BYTES = 64 * 1024
"""Most bytes a card file may hold."""
FREE_RULE = ("a card whose own price is above 0 can be set to price_per_1000 = 0 only with "
             "free = true beside it (the account is really not billed: a free tier or an "
             "emulator)")


class Card(BaseModel):
    """What a provider charges and allows. Money in dollars, rates in requests per second."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    name: str
    price_per_1000: float = Field(0.0, ge=0, le=MAX_PRICE_PER_1000,
                                  description="dollars per 1,000 images")
    free: bool = Field(False, description="the account is not billed (a free tier, an "
                       "emulator): allows price_per_1000 = 0 on a card whose own price is above 0")
    free_images: int = Field(0, ge=0, le=MAX_COUNT, description="free allowance in images "
                             "(shown, not deducted: barapi cannot know how much of it the account "
                             "has used)")
    max_images_per_request: int = Field(1, ge=1, le=MAX_COUNT)
    max_bytes_per_request: int | None = Field(None, ge=1, le=MAX_COUNT)
    requests_per_second: float = Field(0.0, ge=0, le=1e9, description="0 = unlimited")
    max_image_bytes: int | None = Field(None, ge=1, le=MAX_COUNT)
    min_image_side: int | None = Field(None, ge=1, le=MAX_COUNT)
    sources: dict[str, str] = Field(default_factory=dict, description="field → source and date")

    @model_validator(mode="after")
    def _money_sense(self) -> Card:
        if 0 < self.price_per_1000 < MIN_PRICE_PER_1000:
            raise ValueError(f"price_per_1000: {self.price_per_1000:g} is above 0 but below "
                             f"{MIN_PRICE_PER_1000:g} (${MIN_PRICE_PER_1000 * 1000:g} per million "
                             f"images): one image's cost could not be counted in nanodollars; "
                             f"give 0 for a free provider")
        if 0 < self.requests_per_second < MIN_REQUESTS_PER_SECOND:
            raise ValueError(f"requests_per_second: {self.requests_per_second:g} is above 0 but "
                             f"below {MIN_REQUESTS_PER_SECOND:g} (one request every "
                             f"{1 / MIN_REQUESTS_PER_SECOND:g} s): a run would take days; give "
                             f"0 for no limit")
        return self


OVERRIDABLE = tuple(name for name in Card.model_fields if name != "name")
"""The fields a card file, --card-set or a sweep's [card] may set."""


def load_card(name: str, override: Path | None = None, /, **fields: Any) -> Card:
    """Card `name` from the package, then fields from an `override` TOML file, then `fields`
    (a field called "name" among them is refused, not taken for the card's name)."""
    resource = files("barapi.budgets") / f"{name}.toml"
    if not resource.is_file():
        raise ConfigError(f"no price/limit card named {name!r} in barapi.budgets")
    return build_card(tomllib.loads(resource.read_text()), override, fields)


def read_card_file(path: Path | str) -> dict[str, Any]:
    """The fields of the card override file at `path` (a small UTF-8 TOML file). Raises
    ConfigError naming the file: not a regular file (a folder, a FIFO, a device), too large,
    binary, not UTF-8, not TOML, or a field that may not be overridden (see
    `check_overrides`)."""
    text = read_small_text(path, "card file", CARD_BYTES)
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"card file {path}: not TOML ({one_line(exc)})") from None
    return check_fields(values, f"card file {path}")


def check_fields(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """`fields` if they may override a card: `check_overrides`, and each of the right type
    and range (what `Card` checks; the free rule needs the card they override, see
    `build_card`). Raises ConfigError naming `where` and the field."""
    check_overrides(fields, where)
    try:
        Card(name="check", **fields)
    except ValueError as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None
    return fields


def check_overrides(fields: dict[str, Any], where: str) -> None:
    """Raise ConfigError (`where`: "card file X", "--card-set", ...) when `fields` names the
    card's `name` or a field cards do not have; the message lists those they have."""
    allowed = ", ".join(OVERRIDABLE)
    for key in fields:
        if key == "name":
            raise ConfigError(f"{where}: name: a card's name cannot be overridden (it says whose "
                              f"prices these are); fields that can: {allowed}")
        if key not in OVERRIDABLE:
            raise ConfigError(f"{where}: {key}: not a card field; fields: {allowed}")


def build_card(values: dict[str, Any], override: Path | None = None,
               fields: dict[str, Any] | None = None) -> Card:
    """A card from `values` (a built-in or stored card), updated by an `override` TOML file,
    then by `fields`. Raises ConfigError for a bad override or field (see the module's
    docstring), naming where it came from."""
    base = dict(values)
    merged = dict(base)
    if override is not None:
        merged.update(read_card_file(override))
    given = {k: v for k, v in (fields or {}).items() if v is not None}
    check_overrides(given, "--card-set")
    merged.update(given)
    try:
        card = Card(**merged)
    except ValueError as exc:
        raise ConfigError(f"card {base.get('name', '?')}: field {one_line(exc)}") from exc
    own_price = base.get("price_per_1000", 0)
    if card.price_per_1000 == 0 and not card.free and isinstance(own_price, (int, float)) \
            and own_price > 0:
        raise ConfigError(f"card {card.name}: price_per_1000 = 0, but its own price is "
                          f"${own_price:g} per 1,000 images; {FREE_RULE}")
    return card
