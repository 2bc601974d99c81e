"""Error kinds shared by adapters, the query layer and the front ends.

Billing rule (DESIGN.md, money invariant 3): an error says whether the provider may have
billed the request (`billed`). It is True unless the request provably never left (a refused
connection, a malformed endpoint, a key that cannot be encoded) or the provider answered
that it refused it (throttled, unauthorised, out of quota, a malformed request). When in
doubt — a timeout, a connection lost after sending, a 5xx after the body left, an answer
that cannot be parsed — the request counts as billed, marked uncertain in the ledger.
"""

from __future__ import annotations

from typing import Any


class BarapiError(Exception):
    """Base class: a problem barapi reports to the user as one line."""


class ConfigError(BarapiError, ValueError):
    """Bad input (options, files, data) found before any query is sent."""


class LedgerDamaged(ConfigError):
    """A run folder's ledger disagrees with the spend recorded beside it; never resolved by
    spending again (see `barapi repair-ledger`)."""


class RunFolderBusy(ConfigError):
    """Another process holds the run folder's lock."""


class ProviderError(BarapiError):
    """A black box refused or failed a request.

    `billed`: whether the provider may have charged for it (True unless provably not).
    """

    def __init__(self, message: str, *, billed: bool = True) -> None:
        super().__init__(message or type(self).__name__)
        self.billed = billed


class PartialAnswer(ProviderError):
    """Some inputs of a request failed, the others were answered and billed (Clarifai's
    MIXED_STATUS, or FAILURE where every input failed). `probs` (N, K) holds the answers
    where `ok` (N,) is True; only those `billed_images` are charged. `reasons` (N,) gives the
    provider's reason for each failed input ("" where it succeeded)."""

    def __init__(self, message: str, probs: Any, ok: Any, reasons: list[str] | None = None) -> None:
        super().__init__(message, billed=True)
        self.probs, self.ok = probs, ok
        self.billed_images = int(ok.sum())
        self.reasons = reasons or [""] * len(ok)


class TransientError(ProviderError):
    """Worth retrying: rate limited, unavailable, timed out, 5xx.

    `retry_after`: the provider's requested wait in seconds, when it gave one. `throttled`:
    the provider said we are too fast (429, CONN_THROTTLED): the rate limiter slows down, and
    such failures do not use up the retry policy's attempts (only its deadline).
    """

    def __init__(self, message: str, retry_after: float | None = None, *, billed: bool = True,
                 throttled: bool = False) -> None:
        super().__init__(message, billed=billed)
        self.retry_after = retry_after
        self.throttled = throttled


class FatalProviderError(ProviderError):
    """Never retried: authentication, quota or billing. The run stops with a checkpoint.
    The provider refused the request, so it is not billed unless stated."""

    def __init__(self, message: str, *, billed: bool = False) -> None:
        super().__init__(message, billed=billed)


class InvalidAnswer(FatalProviderError):
    """The provider answered with values it does not promise (NaN, inf, negative, above 1,
    all zero, or not summing to 1 where it promises a distribution), twice. Billed, never
    cached."""

    def __init__(self, message: str) -> None:
        super().__init__(message, billed=True)


class InputsFailed(FatalProviderError):
    """Inputs of a request kept failing (per-input errors) after their own retries; the
    answered ones were billed and cached."""


class BudgetExhausted(BarapiError):
    """The next request would exceed the dollar budget."""


class CacheUnusable(BarapiError):
    """The answer cache of a priced provider cannot be read or written (cache.db damaged,
    disk full): raised before the next paid request, so that nothing is paid for answers
    that cannot be kept or that the cache may already hold."""


class WriteFailed(BarapiError):
    """A file barapi must keep (ledger, checkpoint, budget.json, metrics) could not be
    written: a full disk, a read-only or vanished folder. `path` is the file, `reason` the
    system's words (e.g. "No space left on device"). Nothing half-written replaces a good
    file, and the ledger keeps counting what may have been billed."""

    def __init__(self, path: object, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"{path}: cannot write ({reason})")
        self.path, self.reason = path, reason


class ProgramDiverged(BarapiError):
    """The program W or the output head became NaN or infinite (a step size far too large,
    a damaged checkpoint): the run stops before any request is built from it."""
