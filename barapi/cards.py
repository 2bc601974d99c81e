"""Price and limit cards (TOML, shipped in ``barapi.budgets``), with user overrides."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from barapi.errors import ConfigError


class Card(BaseModel):
    """What a provider charges and allows. Money in dollars, rates in requests per second."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    price_per_1000: float = Field(0.0, ge=0, description="dollars per 1,000 images")
    free_images: int = Field(0, ge=0, description="free allowance in images")
    max_images_per_request: int = Field(1, ge=1)
    max_bytes_per_request: int | None = Field(None, ge=1)
    requests_per_second: float = Field(0.0, ge=0, description="0 = unlimited")
    max_image_bytes: int | None = Field(None, ge=1)
    min_image_side: int | None = Field(None, ge=1)


def load_card(name: str, override: Path | None = None, **fields: Any) -> Card:
    """Card `name` from the package, then fields from an `override` TOML file, then `fields`."""
    resource = files("barapi.budgets") / f"{name}.toml"
    if not resource.is_file():
        raise ConfigError(f"no price/limit card named {name!r} in barapi.budgets")
    values: dict[str, Any] = tomllib.loads(resource.read_text())
    if override is not None:
        try:
            values.update(tomllib.loads(Path(override).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{override}: cannot read card override: {exc}") from exc
    values.update({k: v for k, v in fields.items() if v is not None})
    try:
        return Card(**values)
    except ValueError as exc:
        raise ConfigError(f"card {name}: {exc}") from exc
