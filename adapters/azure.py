"""Azure Custom Vision prediction (classification, API v3.1) over a direct httpx transport.

One image per request (PNG, ≤ 4 MB, refused before sending when larger), the no-store route
by default, key in the `Prediction-Key` header (from AZURE_CV_PREDICTION_KEY). The official
SDK (msrest) is blocking and cannot read the gateway's 401/403/429 bodies, so barapi speaks
the REST protocol itself and maps status codes to its error kinds: 429 and 5xx → retried
(Retry-After honoured), 401/403 → fatal, other 4xx → refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter
from barapi.errors import ConfigError, FatalProviderError, ProviderError, TransientError
from barapi.keys import Secret, read_key
from barapi.wire import encode_png

MAX_IMAGE_BYTES = 4 * 1024 * 1024


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error.get('code', response.status_code)}: {error.get('message', '')}"
    except (ValueError, AttributeError):
        return f"{response.status_code}: {response.text[:200]}"


class AzureCustomVisionAdapter(Adapter):
    """A published Custom Vision classification iteration as a black box.

    `model` is "PROJECT_ID/PUBLISHED_NAME"; `labels` are the project's tag names (the columns
    of `predict_proba`, in this order).
    """

    max_batch = 1

    def __init__(self, model: str, *, key: Secret, labels: list[str], endpoint: str,
                 nostore: bool = True, timeout: float = 30.0) -> None:
        project, sep, iteration = model.partition("/")
        if not sep or not project or not iteration:
            raise ConfigError(f"Azure model must be PROJECT_ID/PUBLISHED_NAME, got {model!r}")
        if len(labels) < 2:
            raise ConfigError("Azure Custom Vision needs the project's tag names: --labels a,b,...")
        self.labels = list(labels)
        self.card = "azure-s0-nostore" if nostore else "azure-s0"
        self.identity = f"azure/{endpoint}/{project}/{iteration}"
        self._path = (f"/customvision/v3.1/prediction/{project}/classify/iterations/{iteration}/image"
                      + ("/nostore" if nostore else ""))
        self._endpoint, self._key, self._timeout = endpoint.rstrip("/"), key, timeout
        self._index = {name: i for i, name in enumerate(self.labels)}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self._endpoint, timeout=self._timeout)
            self._loop = loop
        return self._client

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        probs = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        for row, image in zip(probs, images, strict=True):
            body = encode_png(image)
            if len(body) > MAX_IMAGE_BYTES:
                raise ProviderError(f"image of {len(body):,} bytes exceeds Azure's 4 MB limit; "
                                    f"use a smaller canvas (not sent)")
            try:
                response = await self._http().post(
                    self._path, content=body, headers={
                        "Prediction-Key": self._key.reveal(),
                        "Content-Type": "application/octet-stream"})
            except httpx.TimeoutException as exc:
                timeout = TransientError(f"Azure Custom Vision timed out: {exc}")
                timeout.billed = True  # it may have been processed: retried, and paid for
                raise timeout from None
            except httpx.TransportError as exc:
                raise TransientError(f"Azure Custom Vision unreachable: {exc}") from None
            status = response.status_code
            if status == 200:
                for prediction in response.json().get("predictions", []):
                    column = self._index.get(prediction.get("tagName"))
                    if column is not None:
                        row[column] = float(prediction["probability"])
                continue
            message = f"Azure Custom Vision {_error_message(response)}"
            if status == 429 or status >= 500:
                retry_after = response.headers.get("Retry-After")
                raise TransientError(message, float(retry_after) if retry_after else None)
            if status in (401, 403):
                raise FatalProviderError(message)
            raise ProviderError(message)
        return probs

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


def create(model: str = "", endpoint: str | None = None, insecure: bool = False,
           labels: str | None = None, key_file: str | None = None, **_: Any) -> AzureCustomVisionAdapter:
    """Entry point for ``--provider azure``: --model PROJECT/ITERATION, --endpoint, --labels."""
    if not endpoint:
        raise ConfigError("Azure Custom Vision needs --endpoint (e.g. "
                          "myresource.cognitiveservices.azure.com)")
    url = endpoint if "://" in endpoint else f"{'http' if insecure else 'https'}://{endpoint}"
    return AzureCustomVisionAdapter(model, key=read_key("AZURE_CV_PREDICTION_KEY", key_file),
                                    labels=[t.strip() for t in (labels or "").split(",") if t.strip()],
                                    endpoint=url)
