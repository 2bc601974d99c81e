"""Azure Custom Vision prediction (classification, API v3.1) over a direct httpx transport.

One image per request (PNG, ≤ 4 MB, refused before sending when larger), the no-store route
by default, key in the `Prediction-Key` header (from AZURE_CV_PREDICTION_KEY). The official
SDK (msrest) is blocking and cannot read the gateway's 401/403/429 bodies, so barapi speaks
the REST protocol itself and maps status codes to its error kinds: 429 and 5xx → retried
(Retry-After honoured), 401/403 → fatal, other 4xx → refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter, IncompleteAnswers, wait_until_reachable
from barapi.adapters.rest import LoopClient, endpoint_url, refusal, send
from barapi.errors import ConfigError, FatalProviderError, TransientError
from barapi.keys import Secret, read_key
from barapi.wire import encode_png

MAX_IMAGE_BYTES = 4 * 1024 * 1024


def error_message(response: httpx.Response) -> str:
    """"CODE: message" from either of Azure's error bodies — the gateway's
    {"error": {"code", "message"}} or the service's top-level {"code", "message"} — or from
    the status line; never empty."""
    code: object = None
    text: object = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        nested = body.get("error")
        inner: dict[str, object] = nested if isinstance(nested, dict) else body
        code, text = inner.get("code"), inner.get("message")
    if not text:
        raw = response.text.strip()[:200] if response.content and body is None else ""
        text = raw or response.reason_phrase or "no message"
    return f"{code or response.status_code}: {text}"


class AzureCustomVisionAdapter(Adapter):
    """A published Custom Vision classification iteration as a black box.

    `model` is "PROJECT_ID/PUBLISHED_NAME"; `labels` are the project's tag names (the columns
    of `predict_proba`, in this order), checked against the first answer; without them the
    tags are learned from one paid answer (`discover_labels`, through QueryService).

    Columns are bound to tag *ids* (`tagId`) by the first answer, and answers are matched by
    id from then on, so that a tag renamed later keeps its column. An answer that lacks one
    of the columns' tags is invalid (`IncompleteAnswers`); one that holds a tag the learned
    list lacks shows that the list (learned from one answer) was incomplete: the run stops.
    The iteration the answers name (the service's iteration id behind the published name)
    is pinned: an answer from another iteration is refused (FatalProviderError: billed).
    """

    max_batch = 1
    answers = "scores"

    def __init__(self, model: str, *, key: Secret, labels: list[str], endpoint: str,
                 nostore: bool = True, timeout: float = 30.0) -> None:
        project, sep, iteration = model.partition("/")
        if not sep or not project or not iteration:
            raise ConfigError(f"Azure model must be PROJECT_ID/PUBLISHED_NAME, got {model!r}")
        if len(labels) == 1:
            raise ConfigError("--labels: name 2 or more of the project's tags (or none: barapi "
                              "then learns them from one paid answer)")
        if len(set(labels)) < len(labels):
            twice = next(t for t in labels if labels.count(t) > 1)
            raise ConfigError(f"--labels: {twice!r} is named twice; name each tag once")
        self.labels, self.given = list(labels), list(labels)
        self.paid_labels = True  # the project's tags: told by one paid answer (discover_labels)
        self.card = "azure-s0-nostore" if nostore else "azure-s0"
        self.identity = f"azure/{endpoint}/{project}/{iteration}"
        self._project, self._published = project, iteration
        self._path = (f"/customvision/v3.1/prediction/{project}/classify/iterations/{iteration}/image"
                      + ("/nostore" if nostore else ""))
        self._endpoint, self._key, self._timeout = endpoint.rstrip("/"), key, timeout
        endpoint_url(self._endpoint, False, "https://RESOURCE.cognitiveservices.azure.com (or "
                     "http://127.0.0.1:PORT for `barapi emulate azure`)")
        self._tag_ids: list[str] | None = None  # tag ids of the columns, once bound
        self._pinned_tags: dict[str, str] = {}  # column label → tag id, as a run folder has them
        self._told: dict[str, str] = {}  # tag name → id, from the answer that told the tags
        self._index: dict[str, int] = {}
        self._incomplete = IncompleteAnswers()
        self._http = LoopClient(self._endpoint, self._timeout)

    @property
    def who(self) -> str:
        return f"Azure Custom Vision {self._project}/{self._published}"

    def pinned(self) -> dict[str, Any]:
        """The iteration and the tag ids of the columns (see `Adapter.pinned`)."""
        pins = super().pinned()
        if self._tag_ids is not None:
            pins["tags"] = dict(zip(self.labels, self._tag_ids, strict=True))
        return pins

    def pin(self, pins: Mapping[str, Any], accept_version: str | None = None) -> None:
        super().pin(pins, accept_version)
        tags = pins.get("tags")
        self._pinned_tags = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
        self._bind_pinned()

    def keep_version_hint(self, pinned: str) -> str:
        return (f"To keep it, publish iteration {pinned} as {self._published!r} again (then "
                f"resume as before). ")

    def _key_header(self) -> str:
        """The key; ConfigError (nothing sent) without one that an HTTP header can carry (one
        line of printable ASCII: `barapi.keys.check_key`)."""
        return self._key.reveal()

    async def check(self, timeout: float = 10.0) -> None:
        """Open (and close) a TCP connection to the endpoint, trying for up to `timeout`
        seconds, after checking the key; no HTTP request is sent. Raises ConfigError."""
        self._key_header()
        url = httpx.URL(self._endpoint)
        await wait_until_reachable(url.host, url.port or (443 if url.scheme == "https" else 80),
                                   "Azure Custom Vision", timeout)

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        if not self.labels:
            raise ConfigError("Azure Custom Vision: the project's tags are not known yet (pass "
                              "--labels, or let barapi learn them from one paid answer)")
        with self._key.guard():
            key = self._key_header()
            probs = np.zeros((len(images), len(self.labels)), dtype=np.float32)
            missing: dict[int, list[int]] = {}
            for i, (row, image) in enumerate(zip(probs, images, strict=True)):
                gaps = self._read(await self._post(image, key), row)
                if gaps:
                    missing[i] = gaps
            self._incomplete.settle(probs, images, missing, self.labels, self.who)
            return probs

    async def discover_labels(self, image: NDArray[np.uint8]) -> list[str]:
        """The project's tags, sorted, from one prediction of `image` (a paid request)."""
        with self._key.guard():
            response = await self._post(image, self._key_header())
            predictions = self._predictions(response)
            self._found_iteration(response)
            self._told = {str(p.get("tagName")): self._tag_id(p) for p in predictions}
            names = sorted(self._told)
            if len(names) < 2:
                raise FatalProviderError(f"Azure Custom Vision answered {len(names)} tag(s) "
                                         f"({', '.join(names)}); a classifier needs 2 or more",
                                         billed=True)
            return names

    async def _post(self, image: NDArray[np.uint8], key: str) -> httpx.Response:
        """One prediction request; a 200 response, or barapi's error for the failure."""
        body = encode_png(image)
        if len(body) > MAX_IMAGE_BYTES:
            raise ConfigError(f"image of {len(body):,} bytes exceeds Azure's 4 MB limit; "
                              f"use a smaller canvas (not sent)")
        response = await send(self._http(), "POST", self._path, "Azure Custom Vision",
                              content=body, headers={"Prediction-Key": key,
                                                     "Content-Type": "application/octet-stream"})
        if response.status_code == 200:
            return response
        # 429 throttled, 5xx billed, 401/403 (key, quota) and other refusals fatal
        raise refusal(response, f"Azure Custom Vision {response.status_code} "
                                f"{error_message(response)}")

    @staticmethod
    def _predictions(response: httpx.Response) -> list[dict[str, Any]]:
        """The answer's predictions; one that cannot be parsed is billed and retried."""
        try:
            predictions = response.json()["predictions"]
            if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
                raise TypeError("predictions is not a list of objects")
            return predictions
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"Azure Custom Vision answer could not be parsed "
                                 f"({type(exc).__name__}: {exc}); billed, asked again") from None

    @staticmethod
    def _tag_id(prediction: dict[str, Any]) -> str:
        """A prediction's tag id (its name where the answer gives no id)."""
        return str(prediction.get("tagId") or prediction.get("tagName"))

    def _found_iteration(self, response: httpx.Response) -> None:
        """The iteration the answer names must be the pinned one (FatalProviderError: the
        answer was billed); the first one named is pinned."""
        try:
            iteration = response.json().get("iteration")
        except (ValueError, AttributeError):
            return
        if isinstance(iteration, str):
            self.found_version(iteration, lambda message: FatalProviderError(message, billed=True))

    def _read(self, response: httpx.Response, row: NDArray[np.float32]) -> list[int]:
        """Fill `row` from a 200 answer, matched by tag id; the columns it lacks (returned)
        make it invalid. An answer that cannot be parsed is billed and retried; one with a tag
        the learned list lacks, or from another iteration, stops the run (billed)."""
        predictions = self._predictions(response)
        self._found_iteration(response)
        if self._tag_ids is None:
            self._check_tags(predictions)
        seen = np.zeros(len(row), dtype=bool)
        try:
            for prediction in predictions:
                tag = self._tag_id(prediction)
                column = self._index.get(tag)
                if column is not None:
                    row[column], seen[column] = float(prediction["probability"]), True
                elif not self.given:
                    raise FatalProviderError(
                        f"{self.who} answered tag {prediction.get('tagName')!r} (id {tag}), which "
                        f"the project's tag list learned from its first answer "
                        f"({', '.join(self.labels)}) lacks: that answer was incomplete, so this "
                        f"run's tag list is wrong; start a new run (--labels may name the tags)",
                        billed=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"Azure Custom Vision answer could not be parsed "
                                 f"({type(exc).__name__}: {exc}); billed, asked again") from None
        return np.flatnonzero(~seen).tolist()

    def _check_tags(self, predictions: list[dict[str, Any]]) -> None:
        """The first answer lists the project's tags: every column's tag must be one of
        them (else FatalProviderError: that answer was billed), and the columns are bound to
        their ids; a subset is said."""
        told = {str(p.get("tagName")): self._tag_id(p) for p in predictions}
        names = list(told)
        unknown = [tag for tag in self.labels if tag not in told]
        if unknown:
            raise FatalProviderError(
                f"--labels: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not among the project's tags: "
                f"{', '.join(sorted(names))} (found in the first answer, which was billed; if "
                f"the project has it, that answer left it out: try again)", billed=True)
        self._bind([told[tag] for tag in self.labels])
        if self.given and len(names) > len(self.labels):
            self.label_note = (f"using {len(self.labels)} of the project's {len(names)} tags "
                               f"({', '.join(self.labels)}); the others, "
                               f"{', '.join(sorted(set(names) - set(self.labels)))}, are ignored")
            warnings.warn(self.label_note, UserWarning, stacklevel=2)

    def _bind(self, ids: list[str]) -> None:
        """Columns: tag `ids`, in the order of `labels`."""
        self._tag_ids = list(ids)
        self._index = {tag: i for i, tag in enumerate(ids)}
        self.pins_changed()

    def _bind_pinned(self) -> None:
        """Bind the columns to the tag ids a run folder pinned, when it has every column's."""
        if self.labels and all(label in self._pinned_tags for label in self.labels):
            self._bind([self._pinned_tags[label] for label in self.labels])

    def use_labels(self, labels: list[str]) -> None:
        """Take the project's tags (learned, or stored in a run folder): all of them, or the
        `--labels` given, which must be among them (ConfigError; a subset is said). Their ids
        come from the answer that told them, or from the run folder's pins."""
        if self.given:
            unknown = [tag for tag in self.given if tag not in labels]
            if unknown:
                raise ConfigError(f"--labels: {', '.join(map(repr, unknown))} "
                                  f"{'is' if len(unknown) == 1 else 'are'} not among the "
                                  f"project's tags: {', '.join(sorted(labels))}")
            if len(labels) > len(self.given):
                self.label_note = (f"using {len(self.given)} of the project's {len(labels)} "
                                   f"tags ({', '.join(self.given)}); the others, "
                                   f"{', '.join(sorted(set(labels) - set(self.given)))}, are "
                                   f"ignored")
        self.labels = list(self.given or labels)
        self.paid_labels = False
        if self._told and all(label in self._told for label in self.labels):
            self._bind([self._told[label] for label in self.labels])
        else:
            self._tag_ids, self._index = None, {}
            self._bind_pinned()

    async def aclose(self) -> None:
        await self._http.aclose()


def create(model: str = "", endpoint: str | None = None, insecure: bool = False,
           labels: str | None = None, key_file: str | None = None, **_: Any) -> AzureCustomVisionAdapter:
    """Entry point for ``--provider azure``: --model PROJECT/ITERATION, --endpoint, --labels."""
    if not endpoint:
        raise ConfigError("Azure Custom Vision needs --endpoint (e.g. "
                          "myresource.cognitiveservices.azure.com)")
    url = endpoint if "://" in endpoint else f"{'http' if insecure else 'https'}://{endpoint}"
    return AzureCustomVisionAdapter(model, key=read_key("AZURE_CV_PREDICTION_KEY", key_file,
                                                        lazy=True),
                                    labels=[t.strip() for t in (labels or "").split(",") if t.strip()],
                                    endpoint=url)
