"""What the REST adapters (Azure Custom Vision, Google Cloud Vision, Open Inference Protocol)
share: reading `--endpoint`, sending one request over httpx, and turning a transport failure
or an HTTP error status into barapi's error kinds with `billed` right (barapi.errors):

- no connection made (refused, connect timeout): TransientError, not billed (never left);
- a request httpx could not build: ConfigError (not sent);
- a timeout or a connection lost after sending: TransientError, billed (it may have been
  processed);
- 429: TransientError, throttled, not billed, with the server's Retry-After;
- 5xx: TransientError, billed (the body had left);
- any other 4xx: FatalProviderError, not billed (refused: a key, a quota, a bad request).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from barapi.adapters.base import is_loopback
from barapi.errors import ConfigError, FatalProviderError, ProviderError, TransientError


def endpoint_url(endpoint: str, insecure: bool, expected: str, *, secret: bool = True) -> httpx.URL:
    """`endpoint` (from --endpoint; https:// added to a bare host, http:// with `insecure`) as a
    URL. ConfigError naming the option: not a URL, not http(s) (`expected` says what is), or
    plaintext http:// to a host that is not loopback — for an adapter that sends a `secret` key
    never, for one that does not only with `insecure` (the images travel unencrypted)."""
    text = endpoint if "://" in endpoint else f"{'http' if insecure else 'https'}://{endpoint}"
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--endpoint {endpoint!r}: not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host or text.rstrip("/").endswith(":"):
        raise ConfigError(f"--endpoint {endpoint!r}: expected {expected}")
    if url.scheme == "http" and not is_loopback(url.host):
        if secret:
            raise ConfigError(f"--endpoint {endpoint!r} would send the key in plaintext: http:// "
                              f"(--insecure) only to a loopback address (127.0.0.1, ::1, localhost)")
        if not insecure:
            raise ConfigError(f"--endpoint {endpoint!r}: plaintext http to another host needs "
                              f"--insecure (the images travel unencrypted)")
    return httpx.URL(str(url).rstrip("/"))


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number of seconds; an HTTP date is read as 1 s)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


async def send(client: httpx.AsyncClient, method: str, path: str, who: str,
               **options: Any) -> httpx.Response:
    """`client.request(method, path, **options)`; a transport failure raised as barapi's kind
    (module docstring), its message starting with `who`."""
    try:
        return await client.request(method, path, **options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise TransientError(f"{who} unreachable (not sent): {exc or type(exc).__name__}",
                             billed=False) from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
        raise ConfigError(f"{who} request could not be built (not sent): "
                          f"{exc or type(exc).__name__}") from None
    except httpx.TimeoutException as exc:
        raise TransientError(f"{who} timed out ({type(exc).__name__}) after sending") from None
    except httpx.TransportError as exc:
        raise TransientError(f"{who} connection lost after sending "
                             f"({type(exc).__name__}: {exc or 'no details'})") from None


def refusal(response: httpx.Response, message: str) -> ProviderError:
    """The error for a non-2xx `response` (module docstring), with `message` (the provider's
    words): to be raised by the caller."""
    status = response.status_code
    if status == 429:
        return TransientError(message, retry_after(response), billed=False, throttled=True)
    if status >= 500:
        return TransientError(message, retry_after(response))
    return FatalProviderError(message)


class LoopClient:
    """One `httpx.AsyncClient` per event loop for `base_url` (a client is bound to the loop it
    was made in; barapi runs each command in its own), made on first use."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url, self.timeout = base_url, timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close this loop's client (one of another loop is dropped: its loop is gone)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
