"""Clarifai prediction (Moderation, NSFW or any concept model) over gRPC.

Uses the official `clarifai-grpc` stubs on a `grpc.aio` channel. The channel is built by
`ClarifaiChannel` (which the stubs require) and rebuilt with the same options but with gRPC's
own retries disabled: Clarifai's channel config retries UNAVAILABLE 5 times out of sight,
which would bill attempts barapi cannot count. barapi's QueryService retries instead.
In-band status codes are mapped to barapi's error kinds (see `classify`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter, IncompleteAnswers, is_loopback, needs
from barapi.errors import (
    BarapiError,
    ConfigError,
    FatalProviderError,
    PartialAnswer,
    ProviderError,
    TransientError,
)
from barapi.keys import Secret, read_key
from barapi.wire import encode_png

try:
    import grpc
    from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
    from clarifai_grpc.grpc.api.status import status_code_pb2
except ImportError as exc:  # pragma: no cover - only without the extra
    raise needs("the clarifai provider", "clarifai-grpc", "cloud") from exc

CONCEPTS = {"moderation-recognition": ["safe", "suggestive", "explicit", "drug", "gore"],
            "nsfw-recognition": ["nsfw", "sfw"]}
CARDS = {"moderation-recognition": "clarifai-moderation", "nsfw-recognition": "clarifai-nsfw"}
SUCCESS, MIXED = status_code_pb2.SUCCESS, status_code_pb2.MIXED_STATUS
FAILURE = status_code_pb2.FAILURE
TRANSIENT = {11005, 10030, 21354, 21355, 40031, 40032}
FATAL = {11000, 11001, 11002, 11003, 11004, 11006, 11007, 11008, 11009, 69000, 69001}
GRPC_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
GRPC_FATAL = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
MAX_MESSAGE = 1024 * 1024 * 1024
SCOPES = 11007
"""CONN_INSUFFICIENT_SCOPES: the key may predict but not read the model (Models:Get)."""


THROTTLED = 11005


def status_name(code: int) -> str:
    known = code in status_code_pb2.StatusCode.values()
    return status_code_pb2.StatusCode.Name(code) if known else "unknown"


def classify(code: int, description: str) -> ProviderError:
    """barapi's error kind for an in-band Clarifai status code (other than SUCCESS). The
    service answered, so it says what happened: throttling, auth and quota refusals are not
    billed; its internal errors (98xxx and the model-busy codes) may have been, and count."""
    message = f"Clarifai status {code} ({status_name(code)}): {description or 'no description'}"
    if code == THROTTLED:
        return TransientError(message, billed=False, throttled=True)
    if code in TRANSIENT or 98000 <= code < 99000:
        return TransientError(message)
    if code in FATAL:
        return FatalProviderError(message)
    # refusals of the request itself (11xxx auth and limits, 21xxx model, 69xxx billing) are
    # not billed; for anything else the service may have worked on it: counted
    return FatalProviderError(message, billed=code // 1000 not in (11, 21, 69))


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """"host:port" → (host, port); raises ConfigError for anything else (sends nothing)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in endpoint:
        raise ConfigError(f"--endpoint {endpoint!r}: expected HOST:PORT for the Clarifai gRPC "
                          f"API (e.g. 127.0.0.1:50051 for `barapi emulate clarifai`)")
    return host.strip("[]"), int(port)


class ClarifaiAdapter(Adapter):
    """A Clarifai concept model as a black box; labels in a fixed order, whatever the server's
    sort. `endpoint` "host:port" with `insecure=True` points it at a loopback emulator.
    Concept values are confidences in [0, 1], not a distribution.

    Columns are bound to concept *ids*: an answer's concepts are matched by id, never by name
    (an app answers in another language, or renames a concept: clarifai-python-grpc#62).
    The `labels` given (`--labels`) name concepts by id or by name: each is looked up among
    the model's ids first, then among its names (a name two concepts share must be given by
    id); the adapter's `labels` (the column names shown) are then the concepts' names. An
    answer that lacks one of the columns' concepts is invalid (`IncompleteAnswers`).

    The model version is pinned: `check` reads the version the service serves (or the one
    pinned by a run folder, asked for by id) and every request then names it, so that
    "latest" moving mid-run or between a run and its resume changes nothing; a pinned version
    the service no longer serves is refused with what it serves instead (`version_changed`).
    """

    answers = "scores"

    def __init__(self, model: str = "moderation-recognition", *, key: Secret,
                 endpoint: str | None = None, insecure: bool = False, user_id: str = "clarifai",
                 app_id: str = "main", version_id: str = "", labels: list[str] | None = None,
                 max_batch: int = 128, timeout: float = 60.0) -> None:
        self.model, self.given = model, list(labels) if labels else None
        if self.given and len(set(self.given)) < len(self.given):
            twice = next(n for n in self.given if self.given.count(n) > 1)
            raise ConfigError(f"--labels: {twice!r} is named twice; name each concept once")
        self.labels = list(labels or CONCEPTS.get(model, []))  # the service's list wins (check)
        self.card = CARDS.get(model, "clarifai-moderation")
        self.max_batch, self.timeout = max_batch, timeout
        self._target = endpoint or "api.clarifai.com:443"
        self._host, self._port = parse_endpoint(self._target)
        if insecure and not is_loopback(self._host):
            raise ConfigError(f"--insecure would send the key in plaintext to {self._host}: only "
                              f"to a loopback address (127.0.0.1, ::1, localhost)")
        self._base = f"clarifai/{self._target}/{user_id}/{app_id}/{model}"
        self.identity = f"{self._base}@{version_id or 'latest'}"
        """Resolved by `check` to the version the service reports, so that answers of one
        model version are never served from the cache to a run against another."""
        self._key, self._ids = key, resources_pb2.UserAppIDSet(user_id=user_id, app_id=app_id)
        self._version = version_id
        self._concepts: list[str] | None = None  # concept ids of the columns, once bound
        self._pinned_concepts: list[str] | None = None  # ... as a run folder recorded them
        self._index: dict[str, int] = {}
        self._incomplete = IncompleteAnswers()
        self._insecure = insecure
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def who(self) -> str:
        return f"Clarifai model {self.model!r}"

    def _wanted_version(self) -> str:
        """The version every request names: the pinned one, the user's (MODEL@VERSION), or
        the one the service reported first; "" (latest) before any is known."""
        return self.pinned_version or self._version or self.version or ""

    def pinned(self) -> dict[str, Any]:
        """The model version and the concept ids of the columns (see `Adapter.pinned`)."""
        pins = super().pinned()
        if self._concepts is not None:
            pins["concepts"] = list(self._concepts)
        return pins

    def pin(self, pins: Mapping[str, Any], accept_version: str | None = None) -> None:
        super().pin(pins, accept_version)
        if self.pinned_version:  # the cache keys of the version asked for, from the start
            self.identity = f"{self._base}@{self.pinned_version}"
        concepts = pins.get("concepts")
        self._pinned_concepts = ([str(c) for c in concepts]
                                 if isinstance(concepts, list) and concepts else None)

    async def _stub(self) -> service_pb2_grpc.V2Stub:
        """A stub on a channel of the running event loop (grpc.aio channels are bound to the
        loop they were made in; the CLI and scikit-learn run one loop per call)."""
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # The stubs need ClarifaiChannel to have run once (it sets a module-global
            # deserializer); its channel carries a hidden retry policy, so we close it and
            # open our own with the same limits and gRPC retries off.
            with contextlib.suppress(ValueError):
                official = (ClarifaiChannel.get_aio_insecure_grpc_channel(base=self._host,
                                                                          port=self._port)
                            if self._insecure else ClarifaiChannel.get_aio_grpc_channel(base=self._host))
                await official.close()
            options = [("grpc.enable_retries", 0), ("grpc.max_receive_message_length", MAX_MESSAGE),
                       ("grpc.max_send_message_length", MAX_MESSAGE)]
            self._channel = (
                grpc.aio.insecure_channel(self._target, options=options) if self._insecure else
                grpc.aio.secure_channel(self._target, grpc.ssl_channel_credentials(), options=options))
            self._loop = loop
        return service_pb2_grpc.V2Stub(self._channel)

    def _authorization(self) -> tuple[tuple[str, str], ...]:
        """The request metadata; ConfigError (nothing sent) without a usable key (one line
        of printable ASCII: `barapi.keys.check_key`)."""
        return (("authorization", f"Key {self._key.reveal()}"),)

    async def check(self, timeout: float = 10.0) -> None:
        """Free preflight (no prediction is sent): the key is usable, the endpoint connects,
        and the model's concepts and version are read (`_read_model`). ConfigError otherwise."""
        with self._key.guard():
            self._authorization()
            await self._stub()
            assert self._channel is not None
            try:
                try:
                    await asyncio.wait_for(self._channel.channel_ready(), timeout)
                except (asyncio.TimeoutError, grpc.aio.AioRpcError) as exc:
                    raise ConfigError(f"cannot connect to Clarifai at {self._target} within "
                                      f"{timeout:g} s to read model {self.model!r} "
                                      f"({type(exc).__name__}); check --endpoint and the "
                                      f"network") from None
                await self._read_model()
            finally:
                await self.aclose()

    async def _model_info(self, version: str) -> tuple[Any, str, str]:
        """GetModelOutputInfo of `version` ("" = latest), a free call: (response, "", "") when
        it succeeded, else (None, what the server answered, its kind: "connect" when the
        server could not be reached, "key" for a refused key or account, "model" for a model
        or version that does not exist, "other" for anything else — UNIMPLEMENTED,
        PERMISSION_DENIED, a key without the Models:Get scope)."""
        request = service_pb2.GetModelRequest(user_app_id=self._ids, model_id=self.model,
                                              version_id=version)
        try:
            response = await (await self._stub()).GetModelOutputInfo(
                request, metadata=self._authorization(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            said = f"gRPC {code.name}: {exc.details() or 'no details'}"
            kind = ("connect" if code in (grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED)
                    else "key" if code == grpc.StatusCode.UNAUTHENTICATED else "other")
            return None, said, kind
        code = response.status.code
        if code != SUCCESS:
            said = (f"status {code} ({status_name(code)}): "
                    f"{response.status.description or 'no description'}")
            kind = ("key" if code in FATAL - {SCOPES} else
                    "model" if code // 1000 == 21 and code not in TRANSIENT else "other")
            return None, said, kind
        return response, "", ""

    async def _read_model(self) -> None:
        """The model's version and concepts from GetModelOutputInfo; the columns are bound to
        concept ids (`_bind`). A pinned version the service no longer serves is refused with
        the version it serves now. When the call fails, `--labels` (or the concepts a run
        folder pinned) let the run go on with a note; otherwise ConfigError says what the
        server answered."""
        wanted = self._wanted_version()
        response, said, kind = await self._model_info(wanted)
        if response is None and kind == "model" and wanted and wanted == self.pinned_version:
            latest, _, _ = await self._model_info("")
            now = latest.model.model_version.id if latest is not None else ""
            if now and now != wanted:
                raise ConfigError(self.version_changed(wanted, now, gone=said))
        if response is None:
            self._without_model_info(said, kind)
            return
        self.found_version(response.model.model_version.id)
        if self.version:
            self.identity = f"{self._base}@{self.version}"
        concepts = [(c.id, c.name or c.id) for c in response.model.output_info.data.concepts]
        if not concepts:
            if not (self.given or self._pinned_concepts):
                raise ConfigError(f"{self.who} lists no concepts; name the ones it returns "
                                  f"with --labels")
            if self._pinned_concepts:  # as many columns; their names come with the first answer
                self.labels = list(self._pinned_concepts)
            return  # bound at the first answer
        self._bind(concepts, f"the concepts of {self.model!r}", ConfigError, self.given)

    def _without_model_info(self, said: str, kind: str) -> None:
        """The model-info call failed: ConfigError with the server's words, unless the
        columns are known without it (`--labels`, a run folder's concepts): then a note."""
        asked = f"{self.who} at {self._target}: the model-info call (free) was answered {said}"
        if kind == "connect":
            raise ConfigError(f"cannot connect to Clarifai at {self._target} to read model "
                              f"{self.model!r} ({said}); check --endpoint and the network")
        if kind == "key":
            raise ConfigError(f"{asked}; check the key (CLARIFAI_PAT or --key-file) and the "
                              f"account")
        if kind == "model":
            raise ConfigError(f"{asked}; check --model (MODEL[@VERSION] or "
                              f"USER/APP/MODEL[@VERSION])")
        if not (self.given or self._pinned_concepts):
            raise ConfigError(f"{asked}; pass --labels with the names or ids of the concepts "
                              f"it returns to go on without it")
        if self._pinned_concepts:  # as many columns; their names come with the first answer
            self.labels = list(self._pinned_concepts)
            columns = f"the concept ids this run was pinned to ({', '.join(self.labels)})"
        else:
            columns = (f"the concepts {', '.join(self.given or [])} (--labels), bound to concept "
                       f"ids at the first answer")
        self.label_note = (f"{asked}; going on without it with {columns}; the model version is "
                           f"read from the answers")

    def _bind(self, concepts: list[tuple[str, str]], where: str,
              error: Callable[[str], BarapiError], wanted: list[str] | None) -> None:
        """Bind the columns to concept ids among `concepts` [(id, name)]: the ids a run folder
        pinned, else the `wanted` labels (`--labels`, by id or name), else all of them.
        `error(message)` is raised for a label or a pinned id that is not there."""
        names = dict(concepts)
        shown = ", ".join(n if n == c else f"{n} (id {c})" for c, n in concepts)
        if self._pinned_concepts:
            lost = [c for c in self._pinned_concepts if c not in names]
            if lost:
                raise error(f"{self.who}: concept id(s) {', '.join(lost)}, which this run was "
                            f"trained on, are no longer among {where}: {shown}")
            chosen = list(self._pinned_concepts)
        elif wanted:
            chosen = []
            for label in wanted:
                same = [c for c, n in concepts if n == label]
                if label in names:
                    chosen.append(label)
                elif len(same) == 1:
                    chosen.append(same[0])
                elif same:
                    raise error(f"--labels: {label!r} names {len(same)} of {where} "
                                f"({', '.join(same)}); give its id")
                else:
                    unknown = [n for n in wanted if n not in names
                               and all(name != n for _, name in concepts)]
                    raise error(f"--labels: {', '.join(map(repr, unknown))} "
                                f"{'is' if len(unknown) == 1 else 'are'} not among {where}: "
                                f"{shown}")
            if len(set(chosen)) < len(chosen):
                twice = next(c for c in chosen if chosen.count(c) > 1)
                raise error(f"--labels: concept {names[twice]!r} (id {twice}) is named twice")
            if self.given and len(chosen) < len(concepts) and self.label_note is None:
                self.label_note = (f"using {len(chosen)} of the {len(concepts)} concepts of "
                                   f"{self.model!r} ({', '.join(names[c] for c in chosen)}); "
                                   f"the others, {', '.join(n for c, n in concepts if c not in chosen)}, "
                                   f"are ignored")
        else:
            chosen = [c for c, _ in concepts]
        self._use(chosen, [names[c] for c in chosen])

    def _use(self, ids: list[str], labels: list[str]) -> None:
        """Columns: concept `ids`, shown as `labels`."""
        changed = self._concepts != ids
        self._concepts, self.labels = list(ids), list(labels)
        self._index = {c: i for i, c in enumerate(ids)}
        if changed:
            self.pins_changed()

    async def _connected(self) -> None:
        """Wait briefly for the channel: a request that cannot connect provably never left."""
        assert self._channel is not None
        try:
            await asyncio.wait_for(self._channel.channel_ready(), min(10.0, self.timeout))
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            raise TransientError(f"cannot connect to Clarifai at {self._target} (not sent)",
                                 billed=False) from None

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        with self._key.guard():
            return await self._predict(images)

    async def _predict(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        if not self.labels and self._concepts is None:
            raise ConfigError(f"{self.who}: its concepts are not known yet (pass --labels, or "
                              f"let barapi read them: Session.check())")
        metadata = self._authorization()
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=self._ids, model_id=self.model, version_id=self._wanted_version(),
            inputs=[resources_pb2.Input(data=resources_pb2.Data(
                image=resources_pb2.Image(base64=encode_png(im)))) for im in images])
        stub = await self._stub()
        await self._connected()
        try:
            response = await stub.PostModelOutputs(
                request, metadata=metadata,
                timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            # the body may have left: whatever gRPC says, the request may have been billed
            message = f"Clarifai gRPC {exc.code().name}: {exc.details() or 'no details'}"
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise TransientError(message, throttled=True) from None
            if exc.code() in GRPC_TRANSIENT:
                raise TransientError(message) from None
            if exc.code() in GRPC_FATAL:
                raise FatalProviderError(message) from None
            raise TransientError(message) from None
        code = response.status.code
        per_input = len(response.outputs) == len(images) and code == FAILURE and all(
            o.status.code != SUCCESS for o in response.outputs)
        if code not in (SUCCESS, MIXED) and not per_input:
            raise classify(code, response.status.description)
        if len(response.outputs) != len(images):  # cannot be parsed: billed, asked again
            raise TransientError(f"Clarifai answered {len(response.outputs)} outputs for "
                                 f"{len(images)} images")
        probs = self._read(response.outputs, images)
        ok = np.array([o.status.code == SUCCESS for o in response.outputs])
        if not ok.all():  # MIXED_STATUS or FAILURE: the answered inputs are billed, no others
            reasons = ["" if o.status.code == SUCCESS else
                       f"{o.status.code} ({status_name(o.status.code)}) "
                       f"{o.status.description or 'no description'}" for o in response.outputs]
            failed = [f"image {i}: {r}" for i, r in enumerate(reasons) if r]
            raise PartialAnswer(f"Clarifai {status_name(code)}, failed inputs: "
                                f"{'; '.join(failed[:5])}", probs, ok, reasons)
        return probs

    def _read(self, outputs: Any, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, K) concept values of the answered `outputs`, matched by concept id; zero rows
        for failed inputs, NaN where an answer lacks a column's concept (`IncompleteAnswers`).
        The answers' model version must be the pinned one (FatalProviderError: billed)."""
        answered = [o for o in outputs if o.status.code == SUCCESS]
        for output in answered:
            self.found_version(output.model.model_version.id,
                               lambda message: FatalProviderError(message, billed=True))
        if self.version:  # (told by an answer where the model info could not be read)
            self.identity = f"{self._base}@{self.version}"
        if self._concepts is None and answered:  # no model info: bound by the first answer
            self._bind([(c.id, c.name or c.id) for c in answered[0].data.concepts],
                       "the concepts of its first answer",
                       lambda message: FatalProviderError(message, billed=True),
                       self.given or self.labels)
        probs = np.zeros((len(outputs), len(self.labels)), dtype=np.float32)
        missing: dict[int, list[int]] = {}
        for i, (row, output) in enumerate(zip(probs, outputs, strict=True)):
            if output.status.code != SUCCESS:
                continue
            seen = np.zeros(len(self.labels), dtype=bool)
            for concept in output.data.concepts:
                column = self._index.get(concept.id)
                if column is not None:
                    row[column], seen[column] = concept.value, True
            if not seen.all():
                missing[i] = np.flatnonzero(~seen).tolist()
        self._incomplete.settle(probs, images, missing, self.labels, self.who)
        return probs

    async def aclose(self) -> None:
        if self._channel is not None and self._loop is asyncio.get_running_loop():
            await self._channel.close()
        self._channel = None


def parse_model(spec: str) -> dict[str, str]:
    """"MODEL", "MODEL@VERSION" or "USER/APP/MODEL[@VERSION]" → adapter keyword arguments."""
    path, _, version = spec.partition("@")
    parts = path.split("/")
    if len(parts) == 1:
        return {"model": parts[0], "version_id": version}
    if len(parts) == 3 and all(parts):
        return {"user_id": parts[0], "app_id": parts[1], "model": parts[2], "version_id": version}
    raise ConfigError(f"Clarifai model must be MODEL[@VERSION] or USER/APP/MODEL[@VERSION], "
                      f"got {spec!r}")


def create(model: str = "moderation-recognition", endpoint: str | None = None,
           insecure: bool = False, labels: str | None = None, key_file: str | None = None,
           **_: Any) -> ClarifaiAdapter:
    """Entry point for ``--provider clarifai``; the key comes from CLARIFAI_PAT or `key_file`.
    `labels` (comma-separated concept ids or names, see `ClarifaiAdapter`) picks some of the
    concepts the model lists, or names them when the model cannot be read."""
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    ids = parse_model(model)
    return ClarifaiAdapter(ids["model"], key=read_key("CLARIFAI_PAT", key_file, lazy=True),
                           endpoint=endpoint,
                           insecure=insecure, labels=names, user_id=ids.get("user_id", "clarifai"),
                           app_id=ids.get("app_id", "main"), version_id=ids["version_id"])
