"""Loopback emulators of paid prediction APIs, answering from a real local model.

`ClarifaiEmulator` serves ``clarifai.api.V2/PostModelOutputs`` with a `grpc.aio` server built
from the `clarifai-grpc` package, on 127.0.0.1 only. Its concepts come from a local box
(`barapi.adapters.boxes`): by default ``imagenet`` — EfficientNet-Lite0's probabilities summed
over meaningful groups of ImageNet classes, whose "safe" saturates near 1 on ordinary images
as a real moderation service's does; or ``nudenet`` (a nudity detector, through
onnxruntime); or ``modk``, the easy box (ImageNet class i counted towards concept i mod K).
The request's model_id picks the view (moderation or nsfw). It checks the key, counts
billable images, and injects faults on demand (`Faults`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import numpy as np
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from barapi.adapters.base import Adapter
from barapi.adapters.clarifai import CONCEPTS
from barapi.errors import ConfigError
from barapi.wire import decode_png


def fold_matrix(n_sources: int, k: int) -> np.ndarray:
    """(n_sources, k) 0/1 float32 matrix F: probabilities @ F sums source class i into
    concept i mod k (how both emulators answer from the local model; see `fold`)."""
    fold = np.zeros((n_sources, k), dtype=np.float32)
    fold[np.arange(n_sources), np.arange(n_sources) % k] = 1.0
    return fold


def fold(probs: np.ndarray, k: int) -> np.ndarray:
    """(N, k) concept scores of (N, n_sources) probabilities: the sums `fold_matrix` defines,
    each row summed on its own, so that an image's answer is bit-identical whatever else
    shares its request (``probs @ fold_matrix(...)`` is not: BLAS takes other paths, and
    splits rows among threads, by the number of rows)."""
    probs = np.asarray(probs, dtype=np.float32)
    return np.stack([probs[:, j::k].sum(axis=1) for j in range(k)], axis=1)


Boxes: TypeAlias = "Adapter | Mapping[str, Adapter]"
"""What an emulator answers from: {Clarifai model_id: box} whose labels are that model's
concepts (answered as they are), or one adapter of many classes, folded i mod K (`fold`)."""


async def concept_scores(model: Adapter, images: np.ndarray, k: int) -> np.ndarray:
    """(N, k) concept scores of (N, H, W, 3) uint8 images from `model`: its own answers when it
    has k labels (a box view), else its answers folded i mod k (the easy box's rule)."""
    answers = np.asarray(await model.predict_proba(images), dtype=np.float32)
    return answers if answers.shape[1] == k else fold(answers, k)


def box_version(box: Adapter) -> str:
    """A model version id for the box: 16 hex digits of SHA-256 over its identity."""
    import hashlib

    return hashlib.sha256(box.identity.encode()).hexdigest()[:16]


HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 12 * 2**20
"""Largest request the Clarifai emulator accepts: the card's 10 MiB of images plus room for
the protobuf framing (gRPC's own default, 4 MiB, refused 128 incompressible 112 px PNGs)."""


@dataclass
class Faults:
    """What to break. Counters are per emulator; 0 / None switch a fault off."""

    max_rps: float = 0.0  # above this request rate: CONN_THROTTLED (11005)
    unavailable_every: int = 0  # every n-th request fails with gRPC UNAVAILABLE
    fail_input_every: int = 0  # every n-th input fails (30002) → MIXED_STATUS (10010)
    quota_images: int | None = None  # after this many billed images: CONN_EXCEEDS_LIMITS (11006)
    delay: float = 0.0  # seconds added to every answer
    drop_every: int = 0  # every n-th request is billed, then its response is lost
    bad_answer_every: int = 0  # every n-th answered input gets NaN scores (billed)
    burst: float = 1.0  # with max_rps: a token bucket of this many requests, refilled at
    # max_rps (1: requests at least 1/max_rps apart; 2: a gateway's small burst)


@dataclass
class TokenBucket:
    """The emulators' rate limit: `rate` tokens per second up to `burst`; a request that
    finds a whole token takes it, one that does not is throttled."""

    rate: float
    burst: float = 1.0
    tokens: float = field(default=0.0, init=False)
    last: float | None = field(default=None, init=False)

    def admit(self, now: float) -> bool:
        if self.last is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            return True
        return False


@dataclass
class Counters:
    requests: int = 0
    billed_images: int = 0
    throttled: int = 0
    unavailable: int = 0
    rejected_auth: int = 0
    dropped: int = 0
    model_calls: int = 0  # free calls (GetModelOutputInfo): never billed
    accepted_times: list[float] = field(default_factory=list)  # time.monotonic() of each request
    # that passed the rate check (what the provider's limit counts)
    throttled_times: list[float] = field(default_factory=list)  # and of each one throttled


class ClarifaiEmulator(service_pb2_grpc.V2Servicer):
    """`model`: see `Boxes`. A model_id the mapping lacks is answered "model not found"."""

    def __init__(self, model: Boxes, key: str, faults: Faults | None = None) -> None:
        self.model, self.key = model, key
        self.faults = faults or Faults()
        self.counters = Counters()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._inputs_seen = 0
        self._answered = 0
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.on_request: Callable[[Counters], None] | None = None
        """Called with the counters after each PostModelOutputs (e.g. to publish them)."""

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
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Key {self.key}":
            c.rejected_auth += 1
            return service_pb2.MultiOutputResponse(status=self._status(11009, "API key not found"))
        if f.unavailable_every and c.requests % f.unavailable_every == 0:
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
        box = self._box(request.model_id)
        if box is None:
            return service_pb2.MultiOutputResponse(status=self._status(21200, "model not found"))
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
            outputs.append(resources_pb2.Output(
                status=self._status(status_code_pb2.SUCCESS),
                data=resources_pb2.Data(concepts=[resources_pb2.Concept(id=name, name=name, value=v)
                                                  for v, name in concepts])))
        bad = n - len(good)
        c.billed_images += len(good)
        if f.drop_every and c.requests % f.drop_every == 0:
            c.dropped += 1  # billed above; the client never hears of it
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after processing")
        if not good:  # the service reports FAILURE when every input failed
            code = status_code_pb2.FAILURE
        else:
            code = status_code_pb2.MIXED_STATUS if bad else status_code_pb2.SUCCESS
        return service_pb2.MultiOutputResponse(status=self._status(code), outputs=outputs)

    def _box(self, model_id: str) -> Adapter | None:
        """The box answering `model_id`, None for a model this emulator does not serve."""
        if model_id not in CONCEPTS:
            return None
        if isinstance(self.model, Mapping):
            return self.model.get(model_id)
        return self.model

    async def GetModelOutputInfo(self, request: Any, context: Any) -> Any:
        """The model's concepts, as the service lists them (a free call: not billed)."""
        self.counters.model_calls += 1
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Key {self.key}":
            self.counters.rejected_auth += 1
            return service_pb2.SingleModelResponse(status=self._status(11009, "API key not found"))
        box = self._box(request.model_id)
        if box is None:
            return service_pb2.SingleModelResponse(status=self._status(21200, "model not found"))
        concepts = [resources_pb2.Concept(id=name, name=name) for name in CONCEPTS[request.model_id]]
        model = resources_pb2.Model(id=request.model_id, output_info=resources_pb2.OutputInfo(
            data=resources_pb2.Data(concepts=concepts)),
            model_version=resources_pb2.ModelVersion(id=box_version(box)))
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


Answer = tuple[int, Any, dict[str, str]]
"""HTTP status, JSON-serialisable body, extra response headers."""
DROP = 0
"""An `Answer` status: close the connection without any response."""


class LoopbackHTTPServer:
    """A threaded HTTP server on 127.0.0.1 that answers POSTs with JSON from
    `answer(path, headers, body)`; a context manager that starts and stops it."""

    def __init__(self, answer: Callable[[str, Any, bytes], Answer], port: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload, headers = answer(self.path, self.headers, body)
                if status == DROP:  # processed (and billed), then the connection is lost
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json",
                                    "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                return

        self.server = ThreadingHTTPServer((HOST, port), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class AzureEmulator:
    """Custom Vision v3.1 classification prediction on http://127.0.0.1:PORT.

    Routes ``POST /customvision/v3.1/prediction/{project}/classify/iterations/{name}/image``
    and ``.../image/nostore``; bodies as application/octet-stream or multipart `imageData`
    (what the SDK sends). `model`: a box whose labels are as many as the tags (tag i gets
    its concept i; see `barapi.adapters.boxes.view_for`), or an adapter of many classes,
    folded i mod K (`fold`), K the number of tags.
    Gateway errors use Azure's nested body ``{"error": {"code", "message"}}``; 429s carry
    Retry-After. Runs in a background thread; use as a context manager.
    """

    def __init__(self, model: Adapter, key: str, tags: list[str], faults: Faults | None = None,
                 port: int = 0) -> None:
        import threading

        self.model, self.key, self.tags = model, key, list(tags)
        self.faults = faults or Faults()
        self.counters = Counters()
        self._lock = threading.Lock()
        self._bucket = TokenBucket(self.faults.max_rps, self.faults.burst)
        self._http = LoopbackHTTPServer(self.answer, port)
        self.port = self._http.port

    @staticmethod
    def _error(status: int, message: str) -> Answer:
        """The gateway's error shape (401, 403, 429, 5xx)."""
        return status, {"error": {"code": str(status), "message": message}}, {}

    @staticmethod
    def _service_error(status: int, code: str, message: str) -> Answer:
        """The Custom Vision service's own error shape (400s about the request)."""
        return status, {"code": code, "message": message}, {}

    def answer(self, path: str, headers: Any, body: bytes) -> Answer:
        """Status, JSON body and extra headers for one request; `headers` are looked up
        case-insensitively (the SDK sends "Prediction-key")."""
        c, f = self.counters, self.faults
        parts = path.strip("/").split("/")
        if len(parts) < 8 or parts[:3] != ["customvision", "v3.1", "prediction"] or parts[7] != "image":
            return self._error(404, f"no route {path}")
        with self._lock:
            c.requests += 1
            if headers.get("Prediction-Key") != self.key:
                c.rejected_auth += 1
                return self._error(401, "Access denied due to invalid subscription key.")
            if f.unavailable_every and c.requests % f.unavailable_every == 0:
                c.unavailable += 1
                return self._error(503, "emulated outage")
            now = time.monotonic()
            if f.max_rps and not self._bucket.admit(now):
                c.throttled += 1
                c.throttled_times.append(now)
                status, payload, _ = self._error(429, "Rate limit is exceeded.")
                return status, payload, {"Retry-After": f"{1.0 / f.max_rps:.3f}"}
            c.accepted_times.append(now)
            if f.quota_images is not None and c.billed_images + 1 > f.quota_images:
                return self._error(403, "Out of call volume quota.")
            c.billed_images += 1  # counted now, so that concurrent requests respect the quota
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            from email.parser import BytesParser

            message = BytesParser().parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body)
            parts_in_body: list[Any] = list(message.get_payload())
            fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                      for p in parts_in_body}
            found = fields.get("imageData")
            body = found if isinstance(found, bytes) else b""
        try:
            image = decode_png(body)
        except Exception:
            with self._lock:
                c.billed_images -= 1  # a rejected image is not billed
            return self._service_error(400, "BadRequestImageFormat", "Bad Request Image Format")
        if f.delay:
            time.sleep(f.delay)
        k = len(self.tags)
        scores = [float(v) for v in asyncio.run(concept_scores(self.model, image[None], k))[0]]
        with self._lock:
            answered = c.billed_images
            if f.drop_every and c.requests % f.drop_every == 0:
                c.dropped += 1
                return DROP, None, {}
        if f.bad_answer_every and answered % f.bad_answer_every == 0:
            scores = [-1.0] * k
        ranked = sorted(zip(scores, range(k), self.tags, strict=True), reverse=True)
        predictions = [{"probability": s, "tagId": f"tag-{i}", "tagName": t} for s, i, t in ranked]
        return 200, {"id": "emulated", "project": parts[3], "iteration": parts[6],
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "predictions": predictions}, {}

    def __enter__(self) -> AzureEmulator:
        self._http.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.__exit__()


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


def write_counters(path: str, counters: Counters) -> None:
    """`counters` as JSON at `path`, replaced atomically (what `--counters-file` writes)."""
    import dataclasses
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(dataclasses.asdict(counters), handle)
    os.replace(tmp, path)
