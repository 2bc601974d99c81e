"""Error kinds shared by adapters, the query layer and the front ends."""

from __future__ import annotations

from typing import Any


class BarapiError(Exception):
    """Base class: a problem barapi reports to the user as one line."""


class ConfigError(BarapiError, ValueError):
    """Bad input (options, files, data) found before any query is sent."""


class ProviderError(BarapiError):
    """A black box refused or failed a request.

    `billed` is True when the provider charged for (part of) the request anyway, e.g. a
    batch where some inputs failed: its reservation is then committed, not released.
    """

    billed: bool = False


class PartialAnswer(ProviderError):
    """Some inputs of a request failed, the others were answered and billed (Clarifai's
    MIXED_STATUS). `probs` (N, K) holds the answers where `ok` (N,) is True; only those
    `billed_images` are charged."""

    billed = True

    def __init__(self, message: str, probs: Any, ok: Any) -> None:
        super().__init__(message)
        self.probs, self.ok = probs, ok
        self.billed_images = int(ok.sum())


class TransientError(ProviderError):
    """Worth retrying: rate limited, unavailable, timed out, 5xx.

    `retry_after` is the provider's requested wait in seconds, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalProviderError(ProviderError):
    """Never retried: authentication, quota or billing. The run stops with a checkpoint."""


class BudgetExhausted(BarapiError):
    """The next request would exceed the dollar budget."""
