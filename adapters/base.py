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
        identity: everything that determines an answer besides the image: provider,
            endpoint, model and version, output settings (for a local model: its weights'
            digest and input size, not its device). Part of every cache key.
        answers: what the provider promises of each row: "distribution" (softmax: each in
            [0, 1], summing to 1) or "scores" (a confidence per class in [0, 1], not summing
            to one, like Clarifai's concepts and Azure's tags). Answers that break the promise
            are never cached (see `barapi.query.invalid_rows`).
    """

    labels: Sequence[str]
    max_batch: int
    card: str
    identity: str
    answers: str = "distribution"
    label_note: str | None = None
    """Said to the user once the labels are known, e.g. that `--labels` names a subset."""
    paid_labels: bool = False
    """True while the labels are unknown and only a paid answer can tell them
    (`discover_labels`, asked through QueryService so that it is reserved and ledgered)."""

    async def discover_labels(self, image: NDArray[np.uint8]) -> list[str]:
        """The class names, from one paid prediction of the (H, W, 3) `image`."""
        raise NotImplementedError(f"{type(self).__name__} does not learn its labels")

    def use_labels(self, labels: list[str]) -> None:
        """Take `labels` (learned, or stored in a run folder) as the answer's columns."""
        self.labels = list(labels)

    _checked: bool = False

    async def ensure_checked(self) -> None:
        """`check`, once per adapter: `QueryService` calls it before its first cache lookup,
        since `check` may settle `identity` (the model version a service reports)."""
        if self._checked:
            return
        import asyncio

        loop = asyncio.get_running_loop()  # a lock of this loop: concurrent callers wait
        held = self.__dict__.get("_check_lock")
        if held is None or held[0] is not loop:
            held = self.__dict__["_check_lock"] = (loop, asyncio.Lock())
        async with held[1]:
            if not self._checked:
                await self.check()
                self._checked = True

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Free preflight before the first paid request: raise ConfigError when the black
        box cannot be reached at all (malformed endpoint, refused connection, no key), and
        learn `labels` where the service lists them for free. Sends no prediction."""

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


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts a plaintext key may go to."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
