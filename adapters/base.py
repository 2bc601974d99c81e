"""The adapter contract: the only thing barapi knows about a black box.

An adapter knows its wire protocol and nothing else — no budget, cache, retry or rate logic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


class Adapter(ABC):
    """A classifier reachable only through its predicted probabilities.

    Attributes:
        labels: names of the K source classes, in the column order of `predict_proba`.
        max_batch: most images one request (one `predict_proba` call) may carry.
        card: name of the price/limit card in `barapi.budgets` (e.g. "local").
        identity: provider, model and version; part of every cache key.
    """

    labels: Sequence[str]
    max_batch: int
    card: str
    identity: str

    @abstractmethod
    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Probabilities (N, K) for N 8-bit RGB images of shape (N, H, W, 3), N ≤ max_batch."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections or devices."""

    def __deepcopy__(self, memo: dict[int, object]) -> Adapter:
        """Adapters are handles to a black box (connections, devices): copies share it."""
        return self

    @property
    def n_sources(self) -> int:
        return len(self.labels)
