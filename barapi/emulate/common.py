"""What every emulator shares: how a box's answers become a provider's concepts or tags
(`fold`, `concept_scores`), a version id per box, the faults to inject, the rate limit, the
counters, and a loopback HTTP server for REST providers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from barapi.adapters.base import Adapter


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
    omit_every: int = 0  # every n-th answered input leaves out its lowest-scored concept/tag
    answer_names: Mapping[str, str] = field(default_factory=dict)  # names the answers carry
    # instead (Clarifai: by concept id; Azure: by tag name): a concept or tag localised or
    # renamed in the answers only, its id unchanged (clarifai-python-grpc#62)
    concept_names: Mapping[str, str] = field(default_factory=dict)  # Clarifai: the model's
    # own names by concept id, in its model info and its answers (a concept renamed in the app)
    model_info_error: str | int | None = None  # Clarifai GetModelOutputInfo fails: a gRPC
    # status name ("UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE") or
    # an in-band status code (11007: a key without the Models:Get scope)


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
    billed_by_version: dict[str, int] = field(default_factory=dict)  # billed images per
    # model version (Clarifai) or iteration (Azure) that answered them
    accepted_times: list[float] = field(default_factory=list)  # time.monotonic() of each request
    # that passed the rate check (what the provider's limit counts)
    throttled_times: list[float] = field(default_factory=list)  # and of each one throttled


Answer = tuple[int, Any, dict[str, str]]
"""HTTP status, JSON-serialisable body, extra response headers."""
DROP = 0
"""An `Answer` status: close the connection without any response."""


class LoopbackHTTPServer:
    """A threaded HTTP server on 127.0.0.1 that answers POSTs with JSON from
    `answer(path, headers, body)` (Content-Type application/json unless the answer's headers
    name another), and GETs from `get(path)` (405 without it); a context manager that starts and
    stops it."""

    def __init__(self, answer: Callable[[str, Any, bytes], Answer], port: int = 0,
                 get: Callable[[str], Answer] | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.reply(*answer(self.path, self.headers, body))

            def do_GET(self) -> None:
                if get is None:
                    self.reply(405, {"error": "GET is not served here"}, {})
                else:
                    self.reply(*get(self.path))

            def reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                if status == DROP:  # processed (and billed), then the connection is lost
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers,
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


def write_counters(path: str, counters: Counters) -> None:
    """`counters` as JSON at `path`, replaced atomically (what `--counters-file` writes)."""
    import dataclasses
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(dataclasses.asdict(counters), handle)
    os.replace(tmp, path)
