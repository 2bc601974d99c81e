"""The Clarifai emulator: ``clarifai.api.V2`` (PostModelOutputs, GetModelOutputInfo) on a
`grpc.aio` server built from the `clarifai-grpc` package, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from barapi.adapters.base import Adapter
from barapi.adapters.clarifai import CONCEPTS
from barapi.emulate.common import HOST, Boxes, Counters, Faults, TokenBucket, box_version, concept_scores
from barapi.errors import ConfigError
from barapi.wire import decode_png

MAX_MESSAGE_BYTES = 12 * 2**20
"""Largest request the Clarifai emulator accepts: the card's 10 MiB of images plus room for
the protobuf framing (gRPC's own default, 4 MiB, refused 128 incompressible 112 px PNGs)."""


class ClarifaiEmulator(service_pb2_grpc.V2Servicer):
    """`model`: see `Boxes`. A model_id the mapping lacks is answered "model not found".

    Each box is a model version (id: `box_version`); `publish` makes another box the
    "latest" version of its models, the earlier ones still served when a request names their
    version id (unless retired). Concept ids are the names in `CONCEPTS`; the answers may
    carry other names (`Faults.answer_names`)."""

    def __init__(self, model: Boxes, key: str, faults: Faults | None = None) -> None:
        self.model, self.key = model, key
        self.faults = faults or Faults()
        self.counters = Counters()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._inputs_seen = 0
        self._answered = 0
        self._versions: dict[str, dict[str, Adapter]] = {}
        self.publish(model)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.on_request: Callable[[Counters], None] | None = None
        """Called with the counters after each PostModelOutputs (e.g. to publish them)."""

    def publish(self, model: Boxes, keep_old: bool = True) -> None:
        """Make `model` (see `Boxes`) the "latest" version of the models it answers: a request
        without a version id gets it from now on. With `keep_old` the versions before stay
        served to requests that name them; without, they are gone ("model not found")."""
        if not keep_old:
            self._versions = {}
        for model_id in CONCEPTS:
            box = model.get(model_id) if isinstance(model, Mapping) else model
            if box is not None:
                served = self._versions.setdefault(model_id, {})
                served.pop(box_version(box), None)
                served[box_version(box)] = box  # the last one is "latest"
        self.model = model

    def _status(self, code: int, description: str = "") -> Any:
        return status_pb2.Status(code=code, description=description)

    async def PostModelOutputs(self, request: Any, context: Any) -> Any:
        try:
            return await self._post_model_outputs(request, context)
        finally:
            if self.on_request is not None:
                self.on_request(self.counters)

    async def _post_model_outputs(self, request: Any, context: Any) -> Any:
        c, f = self.counters, self.faults
        c.requests += 1
        number = c.requests  # this request's: others may arrive while the model runs
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Key {self.key}":
            c.rejected_auth += 1
            return service_pb2.MultiOutputResponse(status=self._status(11009, "API key not found"))
        if f.unavailable_every and number % f.unavailable_every == 0:
            c.unavailable += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "emulated outage")
        now = time.monotonic()
        if f.max_rps and not self._bucket.admit(now):
            c.throttled += 1
            c.throttled_times.append(now)
            return service_pb2.MultiOutputResponse(status=self._status(11005, "throttled"))
        c.accepted_times.append(now)
        n = len(request.inputs)
        if f.quota_images is not None and c.billed_images + n > f.quota_images:
            return service_pb2.MultiOutputResponse(status=self._status(11006, "quota exhausted"))
        found = self._box(request.model_id, request.version_id)
        if isinstance(found, str):
            return service_pb2.MultiOutputResponse(status=self._status(21200, found))
        version, box = found
        names = CONCEPTS[request.model_id]
        decoded: dict[int, np.ndarray] = {}
        for i, item in enumerate(request.inputs):
            self._inputs_seen += 1
            try:
                image = decode_png(item.data.image.base64)
            except Exception:
                continue
            if not (f.fail_input_every and self._inputs_seen % f.fail_input_every == 0):
                decoded[i] = image
        if f.delay:
            await asyncio.sleep(f.delay)
        good = sorted(decoded)
        scores: dict[int, np.ndarray] = {}
        for i in good:  # batched when sizes agree, as they do for barapi's queries
            if i in scores:
                continue
            same = [j for j in good if decoded[j].shape == decoded[i].shape]
            answers = await concept_scores(box, np.stack([decoded[j] for j in same]), len(names))
            scores.update(zip(same, answers, strict=True))
        served = resources_pb2.Model(id=request.model_id,
                                     model_version=resources_pb2.ModelVersion(id=version))
        outputs = []
        for i in range(n):
            self._answered += i in scores
            if i in scores and f.bad_answer_every and self._answered % f.bad_answer_every == 0:
                scores[i] = np.full_like(scores[i], np.nan)
            if i not in scores:
                outputs.append(resources_pb2.Output(status=self._status(30002, "input failed")))
                continue
            concepts = sorted(((float(v), name) for v, name in zip(scores[i], names, strict=True)),
                              reverse=True)  # like the service: highest first
            if f.omit_every and self._answered % f.omit_every == 0:
                concepts = concepts[:-1]  # the lowest-scored concept left out
            outputs.append(resources_pb2.Output(
                status=self._status(status_code_pb2.SUCCESS), model=served,
                data=resources_pb2.Data(concepts=[
                    resources_pb2.Concept(id=name, value=v, name=f.answer_names.get(
                        name, f.concept_names.get(name, name))) for v, name in concepts])))
        bad = n - len(good)
        c.billed_images += len(good)
        c.billed_by_version[version] = c.billed_by_version.get(version, 0) + len(good)
        if f.drop_every and number % f.drop_every == 0:
            c.dropped += 1  # billed above; the client never hears of it
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after processing")
        if not good:  # the service reports FAILURE when every input failed
            code = status_code_pb2.FAILURE
        else:
            code = status_code_pb2.MIXED_STATUS if bad else status_code_pb2.SUCCESS
        return service_pb2.MultiOutputResponse(status=self._status(code), outputs=outputs)

    def _box(self, model_id: str, version_id: str = "") -> tuple[str, Adapter] | str:
        """(version id, box) answering `model_id` at `version_id` ("" = latest), or why none
        does ("model not found", "model version not found")."""
        served = self._versions.get(model_id)
        if not served:
            return "model not found"
        version = version_id or next(reversed(served))
        box = served.get(version)
        return (version, box) if box is not None else f"model version {version_id} not found"

    async def GetModelOutputInfo(self, request: Any, context: Any) -> Any:
        """The model's concepts and version, as the service lists them (a free call: not
        billed); `Faults.model_info_error` makes it fail."""
        self.counters.model_calls += 1
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Key {self.key}":
            self.counters.rejected_auth += 1
            return service_pb2.SingleModelResponse(status=self._status(11009, "API key not found"))
        error = self.faults.model_info_error
        if isinstance(error, str):
            await context.abort(grpc.StatusCode[error], f"emulated {error} for GetModelOutputInfo")
        if isinstance(error, int):
            return service_pb2.SingleModelResponse(status=self._status(
                error, "API key has insufficient scopes: Models:Get" if error == 11007 else
                "emulated failure"))
        found = self._box(request.model_id, request.version_id)
        if isinstance(found, str):
            return service_pb2.SingleModelResponse(status=self._status(21200, found))
        version, _ = found
        concepts = [resources_pb2.Concept(id=name, name=self.faults.concept_names.get(name, name))
                    for name in CONCEPTS[request.model_id]]
        model = resources_pb2.Model(id=request.model_id, output_info=resources_pb2.OutputInfo(
            data=resources_pb2.Data(concepts=concepts)),
            model_version=resources_pb2.ModelVersion(id=version))
        return service_pb2.SingleModelResponse(status=self._status(status_code_pb2.SUCCESS),
                                               model=model)

    async def start(self, port: int = 0) -> int:
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])  # a port in use is an error, not shared
        service_pb2_grpc.add_V2Servicer_to_server(self, self.server)
        try:
            self.port = self.server.add_insecure_port(f"{HOST}:{port}")
        except RuntimeError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {HOST}:{port} (in use?)") from exc
        if not self.port:
            raise ConfigError(f"--port {port}: cannot listen on {HOST}:{port} (in use?)")
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)


class ClarifaiEmulatorThread:
    """A ClarifaiEmulator served from its own event loop in a background thread (for tests
    and benchmarks that drive it from synchronous code, or from other processes); `port` is
    where it listens, `emulator.counters` what it counted. `stop()` ends it."""

    def __init__(self, model: Adapter, key: str, faults: Faults | None = None, port: int = 0) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="clarifai-emulator")
        self._thread.start()
        self.emulator = ClarifaiEmulator(model, key, faults)
        self.port = asyncio.run_coroutine_threadsafe(self.emulator.start(port), self.loop).result()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ClarifaiEmulatorThread:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
