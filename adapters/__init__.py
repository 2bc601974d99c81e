"""Provider adapters: the black boxes barapi can query (installed as ``barapi.adapters``)."""

from barapi.adapters.base import Adapter
from barapi.adapters.registry import available_providers, create_adapter

__all__ = ["Adapter", "available_providers", "create_adapter"]
