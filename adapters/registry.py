"""Adapter discovery through the ``barapi.adapters`` entry-point group.

Built-ins are registered in barapi's own pyproject exactly as a third party would register
theirs: ``[project.entry-points."barapi.adapters"] myapi = "mypkg.adapter:create"``, where
``create(**options) -> Adapter``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from barapi.adapters.base import Adapter
from barapi.errors import ConfigError

GROUP = "barapi.adapters"


def _factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_providers() -> list[str]:
    return sorted(_factories())


def create_adapter(provider: str, **options: Any) -> Adapter:
    """Build the adapter registered as `provider` with provider-specific options."""
    factories = _factories()
    if provider not in factories:
        raise ConfigError(
            f"unknown provider {provider!r}; available: {', '.join(sorted(factories)) or 'none'}"
        )
    factory: Callable[..., Adapter] = factories[provider].load()
    return factory(**options)
