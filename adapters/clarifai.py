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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter, is_loopback
from barapi.errors import ConfigError, FatalProviderError, PartialAnswer, ProviderError, TransientError
from barapi.keys import Secret, read_key
from barapi.wire import encode_png

try:
    import grpc
    from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
    from clarifai_grpc.grpc.api.status import status_code_pb2
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ConfigError("the clarifai provider needs clarifai-grpc: pip install 'barapi[cloud]'") from exc

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
    Concept values are confidences in [0, 1], not a distribution."""

    answers = "scores"

    def __init__(self, model: str = "moderation-recognition", *, key: Secret,
                 endpoint: str | None = None, insecure: bool = False, user_id: str = "clarifai",
                 app_id: str = "main", version_id: str = "", labels: list[str] | None = None,
                 max_batch: int = 128, timeout: float = 60.0) -> None:
        self.model, self.given = model, list(labels) if labels else None
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
        self._index = {name: i for i, name in enumerate(self.labels)}
        self._insecure = insecure
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """The request metadata; ConfigError (nothing sent) without a usable key."""
        key = self._key.reveal()
        if not key.isascii():
            raise ConfigError("the Clarifai key holds characters that cannot be sent in a "
                              "gRPC header (ASCII only); check CLARIFAI_PAT or --key-file")
        return (("authorization", f"Key {key}"),)

    async def check(self, timeout: float = 10.0) -> None:
        """The key is there, and the endpoint connects (no prediction is sent); ConfigError
        otherwise."""
        self._authorization()
        await self._stub()
        assert self._channel is not None
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
            await self._discover_labels()
        except (asyncio.TimeoutError, grpc.aio.AioRpcError) as exc:
            raise ConfigError(f"cannot connect to Clarifai at {self._target} within {timeout:g} s "
                              f"to read model {self.model!r} ({type(exc).__name__}); check "
                              f"--endpoint and the network") from None
        finally:
            await self.aclose()

    async def _discover_labels(self) -> None:
        """The model's concepts from GetModelOutputInfo (a free model call, no prediction);
        `--labels` given are checked against them. Raises ConfigError."""
        request = service_pb2.GetModelRequest(user_app_id=self._ids, model_id=self.model,
                                              version_id=self._version)
        response = await (await self._stub()).GetModelOutputInfo(
            request, metadata=self._authorization(), timeout=self.timeout)
        if response.status.code != SUCCESS:
            error = classify(response.status.code, response.status.description)
            raise ConfigError(f"model {self.model!r}: {error}")
        if not self._version and response.model.model_version.id:
            self.identity = f"{self._base}@{response.model.model_version.id}"
        names = [c.name for c in response.model.output_info.data.concepts]
        if not names:
            if not self.given:
                raise ConfigError(f"Clarifai model {self.model!r} lists no concepts; name the "
                                  f"ones it returns with --labels")
            return
        if self.given is None:
            self.labels = names
            return
        unknown = [name for name in self.given if name not in names]
        if unknown:
            raise ConfigError(f"--labels: {', '.join(map(repr, unknown))} "
                              f"{'is' if len(unknown) == 1 else 'are'} not among the concepts of "
                              f"{self.model!r}: {', '.join(names)}")
        self.labels = list(self.given)
        if len(self.given) < len(names):
            self.label_note = (f"using {len(self.given)} of the {len(names)} concepts of "
                               f"{self.model!r} ({', '.join(self.given)}); the others, "
                               f"{', '.join(n for n in names if n not in self.given)}, are ignored")

    async def _connected(self) -> None:
        """Wait briefly for the channel: a request that cannot connect provably never left."""
        assert self._channel is not None
        try:
            await asyncio.wait_for(self._channel.channel_ready(), min(10.0, self.timeout))
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            raise TransientError(f"cannot connect to Clarifai at {self._target} (not sent)",
                                 billed=False) from None

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        if not self.labels:
            raise ConfigError(f"Clarifai model {self.model!r}: its concepts are not known yet "
                              f"(pass --labels, or let barapi read them: Session.check())")
        metadata = self._authorization()
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=self._ids, model_id=self.model, version_id=self._version,
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
        probs = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        ok = np.array([o.status.code == SUCCESS for o in response.outputs])
        for row, output in zip(probs, response.outputs, strict=True):
            for concept in output.data.concepts:
                column = self._index.get(concept.name)
                if column is not None:
                    row[column] = concept.value
        if not ok.all():  # MIXED_STATUS or FAILURE: the answered inputs are billed, no others
            reasons = ["" if o.status.code == SUCCESS else
                       f"{o.status.code} ({status_name(o.status.code)}) "
                       f"{o.status.description or 'no description'}" for o in response.outputs]
            failed = [f"image {i}: {r}" for i, r in enumerate(reasons) if r]
            raise PartialAnswer(f"Clarifai {status_name(code)}, failed inputs: "
                                f"{'; '.join(failed[:5])}", probs, ok, reasons)
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
    `labels` (comma-separated concept names) overrides the concepts the model lists."""
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    ids = parse_model(model)
    return ClarifaiAdapter(ids["model"], key=read_key("CLARIFAI_PAT", key_file, lazy=True),
                           endpoint=endpoint,
                           insecure=insecure, labels=names, user_id=ids.get("user_id", "clarifai"),
                           app_id=ids.get("app_id", "main"), version_id=ids["version_id"])
