"""barapi: black-box adversarial reprogramming of prediction APIs and local models.

The public API, all importable from here:

    from barapi import BARClassifier, train, prepare, load_run, make_config, RunConfig, Adapter

`BARClassifier` (scikit-learn estimator), `train`/`prepare`/`load_run` (runs and run folders)
and `Adapter` (the black-box contract) are loaded on first use, so that importing barapi
stays light and loads no model framework: the BAR engine needs only probabilities.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from barapi.config import RunConfig, make_config

if TYPE_CHECKING:
    from barapi.adapters.base import Adapter
    from barapi.api import load_run, prepare, train
    from barapi.estimator import BARClassifier

__version__ = "0.1.0"

__all__ = ["Adapter", "BARClassifier", "RunConfig", "__version__", "load_run", "make_config",
           "prepare", "train"]

_LAZY = {"Adapter": "barapi.adapters.base", "BARClassifier": "barapi.estimator",
         "load_run": "barapi.api", "prepare": "barapi.api", "train": "barapi.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'barapi' has no attribute {name!r}")
