"""Price and limit cards (TOML, shipped in ``barapi.budgets``), with user overrides."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field

from barapi.config import one_line
from barapi.errors import ConfigError


class Card(BaseModel):
    """What a provider charges and allows. Money in dollars, rates in requests per second."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    price_per_1000: float = Field(0.0, ge=0, description="dollars per 1,000 images")
    free_images: int = Field(0, ge=0, description="free allowance in images (shown, not deducted: "
                             "barapi cannot know how much of it the account has used)")
    max_images_per_request: int = Field(1, ge=1)
    max_bytes_per_request: int | None = Field(None, ge=1)
    requests_per_second: float = Field(0.0, ge=0, description="0 = unlimited")
    max_image_bytes: int | None = Field(None, ge=1)
    min_image_side: int | None = Field(None, ge=1)
    sources: dict[str, str] = Field(default_factory=dict, description="field → source and date")


def load_card(name: str, override: Path | None = None, **fields: Any) -> Card:
    """Card `name` from the package, then fields from an `override` TOML file, then `fields`."""
    resource = files("barapi.budgets") / f"{name}.toml"
    if not resource.is_file():
        raise ConfigError(f"no price/limit card named {name!r} in barapi.budgets")
    return build_card(tomllib.loads(resource.read_text()), override, fields)


def build_card(values: dict[str, Any], override: Path | None = None,
               fields: dict[str, Any] | None = None) -> Card:
    """A card from `values`, updated by an `override` TOML file, then by `fields`."""
    values = dict(values)
    if override is not None:
        try:
            values.update(tomllib.loads(Path(override).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # missing, a folder, not UTF-8, not TOML
            raise ConfigError(f"{override}: cannot read card override "
                              f"({getattr(exc, 'strerror', None) or one_line(exc)})") from exc
    values.update({k: v for k, v in (fields or {}).items() if v is not None})
    try:
        return Card(**values)
    except ValueError as exc:
        raise ConfigError(f"card {values.get('name', '?')}: field {one_line(exc)}") from exc
