"""Error kinds shared by adapters, the query layer and the front ends."""

from __future__ import annotations


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
