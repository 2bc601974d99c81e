"""Any Open Inference Protocol (KServe V2) server, over REST: NVIDIA Triton, KServe, Seldon Core 2,
MLServer, OpenVINO Model Server — a model served by another team is a black box as much as a
cloud API.

Wire (the KServe V2 protocol, https://kserve.github.io/website/docs/concepts/architecture/
data-plane/v2-protocol, read 2026-12-06): ``GET v2/health/ready``, ``GET v2/models/NAME[/versions/
V]`` (metadata: inputs and outputs, each {name, datatype, shape}), ``GET .../ready``, ``POST
.../infer`` with ``{"inputs": [{name, shape, datatype, data}], "outputs": [{name}]}``, answered
``{"model_name", "model_version", "outputs": [{name, shape, datatype, data}]}``; errors are
``{"error": "text"}`` with a 4xx/5xx status. The protocol has no label list and no value range:
labels come from ``--labels`` (or ``@FILE``, one per line) or are the output's column numbers,
and what the metadata cannot tell the user states in ``--oip-input`` (`InputSpec`).

Free by default (a self-hosted server: the ``oip`` card); a metered deployment sets its price
with ``--card-set price_per_1000=…``. Errors map to barapi's kinds as Azure's do: refused
connection → not sent; 429 → throttled, not billed; 5xx and timeouts after sending → billed;
other 4xx → refused.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from barapi.adapters.base import Adapter
from barapi.adapters.rest import LoopClient, endpoint_url, refusal, send
from barapi.errors import ConfigError, FatalProviderError, TransientError

DATATYPES: dict[str, type[np.generic]] = {
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8,
    "UINT16": np.uint16, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64}
"""V2 tensor datatypes an image can be sent as (the protocol's names)."""
LAYOUTS = ("NHWC", "NCHW", "NHW", "FLAT")
"""How an image's pixels are laid out in the input tensor: channels last, channels first, one
grey channel without its axis, or every pixel in one row (row by row, channels last)."""
MAX_BODY_BYTES = 16 << 20
"""Largest JSON request barapi builds (images per request are capped to fit): a bound of its
own, under the common defaults of the servers' body limits (e.g. uvicorn/FastAPI: none; Triton:
none; proxies often 16–32 MB)."""
SPEC_KEYS = ("name", "datatype", "shape", "layout", "range", "output")

@dataclass(frozen=True)
class InputSpec:
    """How an (H, W, 3) uint8 image becomes the model's input tensor, and which output to read.

    `height`, `width`, `channels` (1: grey, ITU-R 601 luma; 3: RGB): the image the model takes;
    `low`, `high`: the values pixel levels 0 and 255 map to (linearly); `output`: the output
    tensor holding the (N, K) probabilities (None: the server's default outputs, one of them)."""

    name: str
    datatype: str
    height: int
    width: int
    channels: int
    layout: str
    low: float
    high: float
    output: str | None = None

    def shape(self, n: int) -> list[int]:
        """The input tensor's shape for `n` images."""
        h, w, c = self.height, self.width, self.channels
        return {"NHWC": [n, h, w, c], "NCHW": [n, c, h, w], "NHW": [n, h, w],
                "FLAT": [n, h * w * c]}[self.layout]

    def tensor(self, images: NDArray[np.uint8]) -> NDArray[np.generic]:
        """(N, H, W, 3) uint8 images → the input tensor (`shape(N)`, `datatype`): resized to the
        model's side (Pillow: box filter when shrinking, bilinear when enlarging), made grey if
        it takes one channel, pixel levels mapped linearly onto [low, high]."""
        rows = []
        for image in images:
            picture = Image.fromarray(image)
            if picture.size != (self.width, self.height):
                shrink = self.width < picture.width or self.height < picture.height
                picture = picture.resize((self.width, self.height), Image.Resampling.BOX if shrink
                                         else Image.Resampling.BILINEAR)
            if self.channels == 1:
                picture = picture.convert("L")
            rows.append(np.asarray(picture).reshape(self.height, self.width, self.channels))
        x = np.stack(rows).astype(np.float64)
        x = self.low + (self.high - self.low) * x / 255.0
        kind = DATATYPES[self.datatype]
        if np.issubdtype(kind, np.integer):
            info = np.iinfo(kind)  # type: ignore[type-var]
            x = np.clip(np.rint(x), info.min, info.max)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return x.astype(kind).reshape(self.shape(len(images)))

    def describe(self) -> str:
        """One line: what the model is sent."""
        grey = "grey" if self.channels == 1 else "RGB"
        return (f"input {self.name!r}: {self.datatype} {self.layout} "
                f"{'x'.join(map(str, self.shape(-1)[1:]))} ({grey} {self.height}×{self.width}, "
                f"pixel levels 0..255 → {self.low:g}..{self.high:g}); output "
                f"{self.output or 'the default'}")


def parse_spec(text: str | None) -> dict[str, str]:
    """--oip-input's key=value pairs; ConfigError naming the pair on anything else."""
    given: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = (s.strip() for s in pair.partition("="))
        if not sep or key not in SPEC_KEYS or not value:
            raise ConfigError(f"--oip-input: expected KEY=VALUE with KEY one of "
                              f"{', '.join(SPEC_KEYS)}, got {pair.strip()!r}")
        if key in given:
            raise ConfigError(f"--oip-input: {key} is given twice")
        given[key] = value
    return given


def _dims(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.lower().split("x")]
    except ValueError:
        dims = []
    if not 2 <= len(dims) <= 3 or min(dims) < 1 or (len(dims) == 3 and dims[2] not in (1, 3)):
        raise ConfigError(f"--oip-input: shape={text}: expected HxW (grey) or HxWxC with C 1 or 3, "
                          f"e.g. 28x28x1")
    return dims if len(dims) == 3 else [*dims, 1]


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("..")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        lo = hi = math.nan
    if not sep or not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
        raise ConfigError(f"--oip-input: range={text}: expected LO..HI, two different numbers "
                          f"(e.g. 0..1, 0..255, -1..1)")
    return lo, hi


def infer_geometry(shape: list[int]) -> tuple[int, int, int, str] | None:
    """(height, width, channels, layout) read from a metadata shape (a leading batch
    dimension of -1 dropped), or None when it does not tell: NHWC/NCHW by which axis is 1 or
    3, NHW for a 2-dim image, FLAT for one dimension of s² (grey s×s) or 3s² (RGB s×s)."""
    dims = shape[1:] if shape and shape[0] == -1 else list(shape)
    if any(d < 1 for d in dims):
        return None
    if len(dims) == 3:
        if dims[2] in (1, 3):
            return dims[0], dims[1], dims[2], "NHWC"
        if dims[0] in (1, 3):
            return dims[1], dims[2], dims[0], "NCHW"
    if len(dims) == 2:
        return dims[0], dims[1], 1, "NHW"
    if len(dims) == 1:
        for channels in (1, 3):
            side = math.isqrt(dims[0] // channels)
            if dims[0] % channels == 0 and side * side * channels == dims[0]:
                return side, side, channels, "FLAT"
    return None


def resolve_spec(given: dict[str, str], metadata: dict[str, Any], where: str) -> InputSpec:
    """The input spec from --oip-input's `given` keys, the rest from the model's `metadata`
    (untrusted: every field checked). ConfigError naming the key to state when neither says."""
    inputs = _tensors(metadata, "inputs", where)
    outputs = _tensors(metadata, "outputs", where)
    names = [t["name"] for t in inputs]
    name = given.get("name")
    if name is None:
        if len(inputs) != 1:
            listed = f"it lists {', '.join(names)}" if names else "its metadata lists no inputs"
            raise ConfigError(f"--oip-input: {where} does not say which input takes the image "
                              f"({listed}): add name=INPUT")
        name = names[0]
    meta = next((t for t in inputs if t["name"] == name), None)
    if meta is None and inputs:
        raise ConfigError(f"--oip-input: name={name}: {where} has no such input; it has "
                          f"{', '.join(names)}")
    datatype = given.get("datatype", meta["datatype"] if meta else "").upper()
    if datatype not in DATATYPES:
        raise ConfigError(f"--oip-input: datatype={datatype or '?'} for input {name!r}: expected "
                          f"one of {', '.join(DATATYPES)}" + ("" if datatype else
                          " (the metadata does not say: add datatype=…)"))
    geometry = infer_geometry(meta["shape"]) if meta else None
    if "shape" in given:
        h, w, c = _dims(given["shape"])
        layout = given.get("layout", geometry[3] if geometry else "").upper()
    elif geometry is not None:
        h, w, c, layout = geometry
        layout = given.get("layout", layout).upper()
    else:
        told = f"its shape {meta['shape']}" if meta else "no shape"
        raise ConfigError(f"--oip-input: {where} gives {told} for input {name!r}, which does not "
                          f"say the image's size: add shape=HxWxC (e.g. 28x28x1) and layout=…")
    if layout not in LAYOUTS:
        raise ConfigError(f"--oip-input: layout={layout or '?'}: expected one of "
                          f"{', '.join(LAYOUTS)}")
    if geometry is not None and h * w * c != geometry[0] * geometry[1] * geometry[2]:
        raise ConfigError(f"--oip-input: shape={h}x{w}x{c} holds {h * w * c} values, but {where} "
                          f"takes {meta['shape'] if meta else '?'} for input {name!r}")
    if "range" in given:
        low, high = _range(given["range"])
    elif datatype == "UINT8":
        low, high = 0.0, 255.0
    else:
        raise ConfigError(f"--oip-input: the protocol does not say what values input {name!r} "
                          f"({datatype}) expects: add range=LO..HI (e.g. 0..1, or 0..255, -1..1, "
                          f"what the model was trained on)")
    output = given.get("output")
    if output is None and outputs:
        probable = [t["name"] for t in outputs if "prob" in t["name"].lower()]
        if len(outputs) == 1 or len(probable) == 1:
            output = outputs[0]["name"] if len(outputs) == 1 else probable[0]
        else:
            raise ConfigError(f"--oip-input: {where} has outputs "
                              f"{', '.join(t['name'] for t in outputs)}: add output=NAME (the "
                              f"one holding class probabilities)")
    return InputSpec(name, datatype, h, w, c, layout, low, high, output)


def _tensors(metadata: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """The metadata's `key` ("inputs"/"outputs") as checked {name, datatype, shape} entries."""
    found = metadata.get(key) or []
    if not isinstance(found, list):
        raise ConfigError(f"{where}: metadata field {key!r} is not a list")
    tensors = []
    for entry in found:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("datatype"), str) and isinstance(entry.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) for d in entry["shape"])):
            raise ConfigError(f"{where}: metadata field {key!r} holds {str(entry)[:80]!r}; "
                              f"expected {{name, datatype, shape: [ints]}}")
        tensors.append(entry)
    return tensors


def error_text(response: httpx.Response) -> str:
    """The server's `{"error": text}`, or the start of its body, or the status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])[:300]
    if isinstance(body, dict) and body.get("detail"):  # FastAPI's validation errors (MLServer)
        return str(body["detail"])[:300]
    return response.text.strip()[:300] or response.reason_phrase or "no message"


class OIPAdapter(Adapter):
    """A model on an Open Inference Protocol server, by name (and version), as a black box.

    `labels`: the output's class names in column order ([] → "0".."K-1" once K is known from
    the output metadata or the first answer). `given`: the --oip-input keys (`parse_spec`),
    completed from the model's metadata by `check`. Answers must be (N, K) probabilities
    ("scores": each in [0, 1], a softmax's or a multi-label model's sigmoids): an output of
    class ids or logits is refused with the fix in one line.
    """

    answers = "scores"

    def __init__(self, model: str, *, endpoint: str, labels: list[str], given: dict[str, str],
                 timeout: float = 30.0) -> None:
        name, _, version = model.partition("@")
        if not name or "/" in name or (_ and not version):
            raise ConfigError(f"--model {model!r}: expected NAME or NAME@VERSION (the model's name "
                              f"on the server)")
        self._name, self._version = name, version or None
        self._base = endpoint.rstrip("/")
        self._model_path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
        self._given, self._timeout = given, timeout
        self.labels, self.given_labels = list(labels), list(labels)
        self.card = "oip"
        self.max_batch = 64
        self.spec: InputSpec | None = None
        self.identity = f"oip/{self._base}/{name}@{version or 'default'}"
        self._http = LoopClient(self._base, self._timeout)

    @property
    def who(self) -> str:
        return f"inference server {self._base}, model {self._name}" + (
            f" version {self._version}" if self._version else "")

    async def _get(self, path: str, timeout: float) -> httpx.Response:
        """GET `path`, waiting up to `timeout` s for a server that is still starting;
        ConfigError when it cannot be reached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self._http().get(path)
            except httpx.TransportError as exc:
                if loop.time() + 0.2 < deadline:
                    await asyncio.sleep(0.2)
                    continue
                raise ConfigError(f"cannot reach the inference server at {self._base} within "
                                  f"{timeout:g} s ({type(exc).__name__}); check --endpoint") from None

    async def check(self, timeout: float = 10.0) -> None:
        """Free: the server is ready, the model is ready, its metadata read, the input spec
        resolved (`resolve_spec`) and the labels' count checked against the output's. Raises
        ConfigError naming what is missing; sends no inference."""
        ready = await self._get("/v2/health/ready", timeout)
        if ready.status_code != 200:
            raise ConfigError(f"{self.who}: the server is not ready (GET v2/health/ready: "
                              f"{ready.status_code} {error_text(ready)})")
        meta = await self._get(self._model_path, timeout)
        if meta.status_code != 200:
            raise ConfigError(f"{self.who}: no such model on the server (GET "
                              f"{self._model_path.lstrip('/')}: {meta.status_code} "
                              f"{error_text(meta)})")
        state = await self._get(f"{self._model_path}/ready", timeout)
        if state.status_code != 200:
            raise ConfigError(f"{self.who}: the model is not ready ({state.status_code} "
                              f"{error_text(state)}); load it on the server, then try again")
        try:
            metadata = meta.json()
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            raise ConfigError(f"{self.who}: its metadata is not a JSON object")
        self.spec = resolve_spec(self._given, metadata, self.who)
        self.input_note = f"sending {self.spec.describe()}"
        self.identity = (f"oip/{self._base}/{self._name}@{self._version or 'default'}/"
                         f"{self.spec.describe()}")
        elements = int(np.prod(self.spec.shape(1)))
        self.max_batch = max(1, min(self.max_batch, MAX_BODY_BYTES // (elements * 24)))
        columns = self._output_columns(metadata)
        if columns is not None:
            self._take_count(columns, "its output metadata")
        elif not self.labels:
            self.paid_labels = True  # told by the first answer (free on a self-hosted server)

    def _output_columns(self, metadata: dict[str, Any]) -> int | None:
        """K from the chosen output's metadata shape ([-1, K]), when it says."""
        assert self.spec is not None
        for tensor in _tensors(metadata, "outputs", self.who):
            if tensor["name"] == self.spec.output and len(tensor["shape"]) == 2 \
                    and tensor["shape"][1] > 0:
                return int(tensor["shape"][1])
        return None

    def _take_count(self, k: int, source: str) -> None:
        """The output has `k` columns: the labels given must be as many (ConfigError); none
        given, they are the column numbers."""
        if k < 2:
            raise ConfigError(f"{self.who}: {source} gives {k} output column(s); a classifier "
                              f"needs 2 or more (output={self.spec.output if self.spec else '?'})")
        if self.given_labels and len(self.given_labels) != k:
            raise ConfigError(f"--labels names {len(self.given_labels)} classes, but {source} "
                              f"gives {k} output columns")
        if not self.given_labels:
            self.labels = [str(i) for i in range(k)]
            self.label_note = (f"the model's {k} output columns are named by number (0..{k - 1}); "
                               f"--labels (or --labels @FILE) names them")

    async def discover_labels(self, image: NDArray[np.uint8]) -> list[str]:
        """The output's column numbers, from one answer (the metadata did not tell K)."""
        probs = await self._infer(image[None])
        self._take_count(probs.shape[1], "its first answer")
        return list(self.labels)

    def use_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.paid_labels = False

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        probs = await self._infer(images)
        if probs.shape[1] != len(self.labels):
            raise FatalProviderError(f"{self.who} answered {probs.shape[1]} columns, but the run "
                                     f"has {len(self.labels)} labels", billed=True)
        return probs

    async def _infer(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """POST infer for (N, H, W, 3) uint8 `images`; their (N, K) answer, read and checked."""
        if self.spec is None:
            await self.check()
        assert self.spec is not None
        tensor = self.spec.tensor(images)
        body: dict[str, Any] = {"inputs": [{
            "name": self.spec.name, "shape": list(tensor.shape), "datatype": self.spec.datatype,
            "data": tensor.reshape(-1).tolist()}]}
        if self.spec.output:
            body["outputs"] = [{"name": self.spec.output}]
        response = await send(self._http(), "POST", f"{self._model_path}/infer", self.who,
                              json=body)
        if response.status_code != 200:  # 429 throttled, 5xx billed, other 4xx refused
            raise refusal(response, f"{self.who} {response.status_code}: {error_text(response)}")
        return self._read(response, len(images))

    def _read(self, response: httpx.Response, n: int) -> NDArray[np.float32]:
        """The (n, K) probabilities of a 200 answer (untrusted: the output's name, shape,
        datatype and values checked); the model version it names is pinned."""
        assert self.spec is not None
        try:
            answer = response.json()
            outputs = answer["outputs"]
            if not isinstance(outputs, list) or not outputs:
                raise TypeError("outputs is not a non-empty list")
            chosen = [o for o in outputs if isinstance(o, dict)
                      and (self.spec.output is None or o.get("name") == self.spec.output)]
            if len(chosen) != 1:
                raise TypeError(f"expected one output named {self.spec.output or 'anything'}, "
                                f"got {len(chosen)}")
            output = chosen[0]
            values = np.asarray(output["data"], dtype=np.float64).reshape(-1)
            shape = [int(d) for d in output["shape"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"{self.who}: its answer could not be parsed "
                                 f"({type(exc).__name__}: {exc}); billed, asked again") from None
        version = answer.get("model_version")
        if isinstance(version, str):
            self.found_version(version, lambda m: FatalProviderError(m, billed=True))
        name = output.get("name", "?")
        if len(shape) != 2 or shape[0] != n or values.size != n * shape[1] \
                or str(output.get("datatype", "")).upper() not in ("FP16", "FP32", "FP64"):
            raise FatalProviderError(
                f"{self.who}: output {name!r} is {output.get('datatype')} of shape {shape} for "
                f"{n} images, not (N, K) probabilities (class ids?): name the probability output "
                f"with --oip-input output=NAME (for MLServer's scikit-learn runtime: "
                f"output=predict_proba)", billed=True)
        if np.isfinite(values).all() and ((values < 0).any() or (values > 1 + 1e-6).any()):
            raise FatalProviderError(
                f"{self.who}: output {name!r} holds values outside [0, 1] (logits?); barapi reads "
                f"only what a black box answers as probabilities or scores: serve the model's "
                f"softmax or sigmoid output and name it with --oip-input output=NAME", billed=True)
        return values.reshape(n, shape[1]).astype(np.float32)

    async def aclose(self) -> None:
        await self._http.aclose()


def read_labels(labels: str | None) -> list[str]:
    """--labels as names: comma-separated, or ``@FILE`` with one name per line (blank lines
    ignored). ConfigError naming the file when it cannot be read."""
    text = (labels or "").strip()
    if not text.startswith("@"):
        return [t.strip() for t in text.split(",") if t.strip()]
    from barapi.files import read_small_text

    path = Path(text[1:]).expanduser()
    names = [line.strip() for line in read_small_text(path, "labels file", 1 << 20).splitlines()
             if line.strip()]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"labels file {path}: {twice!r} is named twice")
    return names


def create(model: str = "", endpoint: str | None = None, insecure: bool = False,
           labels: str | None = None, oip_input: str | None = None, **_: Any) -> OIPAdapter:
    """Entry point for ``--provider oip``: --endpoint URL, --model NAME[@VERSION], --labels,
    --oip-input."""
    if not endpoint:
        raise ConfigError("--provider oip needs --endpoint, the inference server's address "
                          "(e.g. http://127.0.0.1:8080)")
    if not model:
        raise ConfigError("--provider oip needs --model NAME[@VERSION], the model's name on the "
                          "server")
    url = str(endpoint_url(endpoint, insecure, "http(s)://HOST:PORT of the inference server",
                           secret=False))
    return OIPAdapter(model, endpoint=url, labels=read_labels(labels), given=parse_spec(oip_input))
