"""Run configuration: every hyperparameter of a run, validated, with documented defaults.

The CLI builds its options from these fields, so this model is the single source of truth.
Defaults were chosen by measurement (see docs/method.md and docs/results.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from barapi.errors import ConfigError
from barapi.zo import ZOEstimator

PRESETS: dict[str, dict[str, Any]] = {
    # Tsai, Chen & Ho (2020): full-resolution program, unit-sphere one-sided estimator with
    # b = d and β = 0.01, frequency mapping, focal loss, SGD with exponential decay, a fixed
    # number of epochs (6, pinned here so that the preset does not follow barapi's default).
    "paper": {"canvas": 224, "input_size": 224, "resolution": None, "directions": "sphere",
              "two_sided": False, "beta": 0.01, "q": 10, "optimizer": "sgd", "lr": 0.05,
              "decay": 0.9, "mapping": "frequency", "loss": "focal", "gamma": 2.0, "m": 10,
              "head": "map", "patience": 0, "epochs": 6},
    # The default job (`barapi run` naming no task and no black box): a two-output box like a
    # real NSFW API (EfficientNet-Lite0's ImageNet classes summed into nsfw/sfw), for which
    # the linear probe on its answers is weak, reprogrammed for MNIST 0 vs 1 with one output
    # per class; 300 test images. Measured: docs/results.md, "The default job".
    "demo": {"model": "imagenet-nsfw", "dataset": "mnist5k", "classes": "0,1", "m": 1,
             "test_fraction": 0.3},
}
DEFAULT_JOB = "demo"
"""The preset `barapi run` and `barapi estimate` use when none of `TASK_FIELDS` is given."""
TASK_FIELDS = ("provider", "model", "endpoint", "labels", "oip_input", "weights", "dataset",
               "classes")
"""Options naming the task or the black box: any of them given, the default job is not used."""


CONNECTION_FIELDS = ("endpoint", "insecure", "key_file", "device")
"""Settings that say how to reach the black box, not what is learned: the only ones a
resumed run may be given (for that invocation; its run folder keeps its own config)."""

OIP_INPUT_HELP = ("the served model's input tensor where its metadata does not tell, as "
                  "comma-separated KEY=VALUE: name=INPUT, datatype=FP32, shape=HxWxC (e.g. "
                  "8x8x1), layout=NHWC|NCHW|NHW|FLAT, range=LO..HI (pixel levels 0..255 are "
                  "mapped onto it, e.g. 0..1), output=OUTPUT (the one holding probabilities, "
                  "e.g. predict_proba)")
"""--oip-input's help (`barapi.adapters.oip.parse_spec` reads it)."""

MIN_CANVAS = 8
"""Smallest canvas and model input side, in px (a window of at least 4 px, a 3×k×k program)."""
MAX_CANVAS = 4096
"""Largest canvas and model input side, in px (one image is then 48 MiB)."""
MAX_STEP_BYTES = 2 << 30
"""Most bytes of queried images one training step may hold in memory (batch × (q + 1)
variants of S×S×3 uint8, and with per-sample directions as many float32 perturbations):
larger, a step would exhaust memory before its first request."""
MAX_BUDGET = 10_000_000.0
"""Largest budget in dollars (sums of nanodollars stay exact far beyond it)."""
LIST_FIELDS = ("classes", "labels")
"""Comma-separated lists of names: no empty name, no name twice."""
NUDENET_SIDE = 320
"""Side the NudeNet boxes' detector runs at (it was exported at that size; see
adapters/boxes.py): what a run of one records as its input_size."""


def check_budget_dollars(value: object, what: str = "--budget") -> float:
    """`value` as a budget in dollars: a finite number (not a bool) from 0 to MAX_BUDGET.
    Raises ConfigError naming `what`."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= MAX_BUDGET:
        raise ConfigError(f"{what}: expected a finite amount of dollars from 0 to "
                          f"{MAX_BUDGET:,.0f}, got {value!r}")
    return float(value)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    provider: str = Field("local", description="black box: an adapter name (see `barapi providers`)")
    model: str | None = Field(None, description="model of the provider (default: "
                              "efficientnet-lite0 for local, moderation-recognition for clarifai; "
                              "google: safe-search or labels; rekognition: a custom moderation "
                              "adapter's "
                              "ARN, default the base model; oip: NAME[@VERSION] on the server); "
                              "local also takes the few-output boxes imagenet-moderation, "
                              "imagenet-nsfw, nudenet-moderation, nudenet-nsfw, modk-moderation, "
                              "modk-nsfw")
    endpoint: str | None = Field(None, description="provider address host:port or URL (e.g. a "
                                 "loopback emulator); default: the provider's own")
    insecure: bool = Field(False, description="plaintext connection to --endpoint (loopback only; "
                           "oip, which sends no key: any host)")
    labels: str | None = Field(None, description="the provider's class names, comma-separated: "
                               "for Clarifai a subset of the model's concepts, each by id or by "
                               "name (default: all, read from the model; answers are matched by "
                               "concept id); for Azure some of the project's tags (default: all, "
                               "learned from one paid answer); for Rekognition moderation labels "
                               "of any level (default: the top-level categories); for Google "
                               "safe-search some of its 5 categories, for labels the labels to "
                               "read (required); for oip the output's columns, or @FILE with one "
                               "name per line (default: their numbers)")
    oip_input: str | None = Field(None, description="--provider oip: " + OIP_INPUT_HELP)
    key_file: str | None = Field(None, description="file holding the provider's API key on its "
                                 "one line (default: the provider's environment variable)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="local model device")
    weights: str | None = Field(None, description="weight file of a torchvision model (resnet50, "
                                "inception_v3, densenet121; default: torchvision's file name "
                                "under $TORCH_HOME/hub/checkpoints); barapi never downloads")
    input_size: int | None = Field(
        112, description="local model input side in px (images are resized to it); 0 = the "
        "model's native size (224 for EfficientNet-Lite0)")
    dataset: str = Field("digits", description="digits | mnist5k | fashion-mnist | PATH "
                         "(class folders, .csv of path,label, .npz with X and y, a folder "
                         "holding X.npy and y.npy)")
    classes: str | None = Field(None, description="keep only these classes, comma-separated "
                                "(e.g. 0,1 for a binary task on a few-output API)")
    val_fraction: float = Field(0.1, description="share of each class held out for validation")
    test_fraction: float = Field(0.2, description="share of each class held out for testing")
    val_size: int | None = Field(None, description="at most this many validation images, "
                                 "spread over the classes like the split (a budget plan sets it)")
    test_size: int | None = Field(None, description="at most this many test images, spread over "
                                  "the classes like the split (a budget plan sets it)")
    per_class: int | None = Field(None, description="at most this many training samples per class")
    rebalance: bool = Field(False, description="oversample training classes to equal size")
    canvas: int = Field(112, description="side S of the queried image in px")
    window: int | None = Field(None, description="side of the sample's window (default S/2)")
    window_top: int | None = Field(None, description="window row (default centred)")
    window_left: int | None = Field(None, description="window column (default centred)")
    resolution: int | None = Field(
        8, description="program side k: W is 3×k×k, upsampled to the canvas (None: the "
        "canvas's side, a full-resolution program as in the paper)")
    method: Literal["bar", "ar", "zero-shot"] = Field(
        "bar", description="bar: black-box ZO; ar: white-box autograd (local only); "
        "zero-shot: no program, the head alone (label map, or the linear probe)")
    head: Literal["map", "linear"] = Field(
        "linear", description="output head: map = the paper's fixed many-to-one label map; "
        "linear = logistic regression on the black box's log-probabilities, fitted to the "
        "unprogrammed answers (the linear probe) and trained with the program")
    head_l2: float = Field(0.01, description="L2 strength of the linear head")
    head_lr: float = Field(0.01, description="Adam step size of the linear head (without "
                           "--head-refit)")
    head_refit: bool = Field(True, description="on a black box of at most 20 outputs, refit "
                             "the linear head after every step to the answers of the last "
                             "epoch's steps (every variant's, the probe pass's first; no extra "
                             "query); off, or more outputs: Adam steps of --head-lr")
    mapping: Literal["frequency", "random"] = Field("frequency", description="label mapping")
    m: int = Field(4, description="source labels per target class")
    loss: Literal["focal", "ce"] = Field("ce", description="training loss")
    gamma: float = Field(2.0, description="focal loss γ")
    q: int = Field(10, description="random directions per step (q + 1 queries per sample; "
                   "2q when two-sided)")
    beta: float = Field(0.05, description="smoothing radius β (in units of W)")
    directions: Literal["sphere", "gaussian"] = Field("gaussian", description="ZO directions")
    two_sided: bool = Field(False, description="antithetic (two-sided) differences, 2q queries")
    per_sample_directions: bool = Field(
        False, description="each minibatch image its own q directions instead of q shared by "
        "the minibatch: the same queries, the estimate averaged over q × batch directions "
        "(docs/method.md; measured, not a win on NudeNet)")
    surrogate: str | None = Field(
        None, description="a local model of ours (efficientnet-lite0|1|2) whose gradient, "
        "through a proxy fitted to the paid answers, guides the ZO directions (P-RGF; "
        "one-sided, q ≥ 2; needs the local extra); default: none")
    b: float | None = Field(None, description="ZO scale b (default: d for sphere directions, "
                            "as in the paper; 1 for Gaussian ones)")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="optimiser")
    lr: float = Field(0.05, description="initial step size")
    decay: float = Field(1.0, description="step size multiplier per epoch")
    batch: int = Field(20, description="minibatch size (images per program variant)")
    epochs: int = Field(6, description="passes over the training split (at most: see patience)")
    max_steps: int | None = Field(None, description="stop training after this many steps in "
                                  "all, cutting the last epoch short (a budget plan sets it)")
    eval_every: int = Field(0, description="validate every N steps (0: once per epoch)")
    patience: int = Field(2, description="stop after this many validations without a better "
                          "validation accuracy or a lower validation loss, counted once the "
                          "program has improved on its start (0: train every epoch)")
    evaluate: bool = Field(True, description="query the validation and test splits (zero-shot, "
                           "model selection, test accuracy); off: only training is paid for")
    seed: int = Field(0, description="seed of split, label map, shuffling and directions")

    @model_validator(mode="before")
    @classmethod
    def _box_side(cls, data: Any) -> Any:
        """A NudeNet box (``--model nudenet-*``) runs at `NUDENET_SIDE` px whatever it is
        given, so that is what the config records; another side given explicitly is refused
        (112, the default that old run folders recorded, and 0, native, are taken as 320)."""
        if isinstance(data, dict) and data.get("provider", "local") == "local" \
                and isinstance(data.get("model"), str) and data["model"].startswith("nudenet-"):
            side = data.get("input_size")
            if side not in (None, 0, 112, NUDENET_SIDE):
                raise ValueError(f"input_size: {data['model']} runs at {NUDENET_SIDE} px (the "
                                 f"size its detector was exported at), not {side!r}; omit "
                                 f"--input-size")
            data = {**data, "input_size": NUDENET_SIDE}
        return data

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        self._check_text()
        if self.oip_input and self.provider != "oip":
            raise ValueError(f"oip_input: only --provider oip takes it (an Open Inference Protocol "
                             f"server's input tensor), not --provider {self.provider}")
        for name in ("patience", "eval_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        positive = {"canvas": self.canvas, "batch": self.batch, "epochs": self.epochs,
                    "q": self.q, "m": self.m, "per_class": self.per_class,
                    "window": self.window, "val_size": self.val_size,
                    "test_size": self.test_size, "max_steps": self.max_steps}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.canvas < MIN_CANVAS:
            raise ValueError(f"canvas must be at least {MIN_CANVAS} px, got {self.canvas}")
        if self.input_size is not None and self.input_size < 0:
            raise ValueError(f"input_size must be ≥ 1 px (0: the model's native size), "
                             f"got {self.input_size}")
        if self.input_size and self.input_size < MIN_CANVAS:
            raise ValueError(f"input_size must be at least {MIN_CANVAS} px, got {self.input_size}")
        for name in ("canvas", "input_size"):
            if (getattr(self, name) or 0) > MAX_CANVAS:
                raise ValueError(f"{name} must be at most {MAX_CANVAS} px, got "
                                 f"{getattr(self, name)}")
        variants = 2 * self.q if self.two_sided else self.q + 1  # ZOEstimator.n_evaluations
        step_bytes = self.batch * variants * self.canvas ** 2 * 3
        if self.per_sample_directions:  # and one float32 perturbation per queried image
            step_bytes *= 5
        if self.method == "bar" and step_bytes > MAX_STEP_BYTES:
            raise ValueError(f"q: one training step would query batch {self.batch} × {variants} "
                             f"program variants = {self.batch * variants:,} images of "
                             f"{self.canvas}×{self.canvas} px ({step_bytes / 2**30:.1f} GiB in "
                             f"memory, at most {MAX_STEP_BYTES / 2**30:g} GiB); lower --q, "
                             f"--batch or --canvas")
        if self.window is not None and self.window > self.canvas:
            raise ValueError(f"window {self.window} is larger than the canvas {self.canvas}")
        if self.window_size < 1:
            raise ValueError(f"the sample's window would be {self.window_size} px on a canvas "
                             f"of {self.canvas}; give --window or a larger --canvas")
        for name in ("window_top", "window_left"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= self.canvas - self.window_size:
                raise ValueError(f"{name} must be between 0 and {self.canvas - self.window_size} "
                                 f"(canvas {self.canvas} − window {self.window_size}), got {value}")
        if not 0 < self.val_fraction < 1 or not 0 < self.test_fraction < 1 \
                or self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum to less "
                             f"than 1, got {self.val_fraction} and {self.test_fraction}")
        if self.surrogate is not None and (self.two_sided or self.q < 2 or self.head != "linear"
                                           or self.per_sample_directions):
            raise ValueError("surrogate needs one-sided differences (--no-two-sided), q ≥ 2, "
                             "the linear head and directions shared by the minibatch "
                             "(--no-per-sample-directions)")
        if self.gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {self.gamma}")
        if self.resolution is not None and not 1 <= self.resolution <= self.canvas:
            raise ValueError(f"resolution must be between 1 and the canvas {self.canvas}")
        if min(self.beta, self.lr, self.head_lr) <= 0 or (self.b is not None and self.b <= 0):
            raise ValueError("beta, lr, head_lr and b must be positive")
        if self.head_l2 < 0:
            raise ValueError(f"head_l2 must be non-negative, got {self.head_l2}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        return self

    def _check_text(self) -> None:
        """No text setting is empty or blank (an unset shell variable is an error, never
        "the default"), and a list of names holds no empty name and no name twice."""
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                default = f" ({field.default})" if field.default is not None else ""
                raise ValueError(f"{name}: empty; give a value, or omit the option for the "
                                 f"default{default}")
        for name in LIST_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            names = [part.strip() for part in value.split(",")]
            if "" in names:
                raise ValueError(f"{name}: an empty name in {value!r}; give names separated by "
                                 f"single commas")
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{name}: {', '.join(map(repr, twice))} given more than once; "
                                 f"name each once")

    @property
    def window_size(self) -> int:
        return self.window if self.window is not None else self.canvas // 2

    def estimator(self) -> ZOEstimator:
        """The zeroth-order gradient estimator these settings describe."""
        return ZOEstimator(self.q, self.beta, self.directions, self.two_sided, self.b,
                           self.per_sample_directions)

    @property
    def program_resolution(self) -> int:
        return self.resolution if self.resolution is not None else self.canvas


def make_config(preset: str | None = None, **overrides: Any) -> RunConfig:
    """A RunConfig from an optional preset plus explicit overrides (which win)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(overrides)
    try:
        return RunConfig(**values)
    except ValueError as exc:
        raise ConfigError(one_line(exc)) from exc


def one_line(exc: Exception) -> str:
    """A validation error as one line: "field: message" for pydantic's, else str(exc)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "config"
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        given = first.get("input")
        if where != "config" and isinstance(given, (bool, int, float, str)) \
                and first.get("type") != "value_error":  # say what was given: "got True"
            message += f", got {given!r}"
        return f"{where}: {message}" if where != "config" else message
    return " ".join(str(exc).split())


def with_connection(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """`config` with the CONNECTION_FIELDS in `changes` replaced, validated again. Raises
    ConfigError for any other field (what a run learns cannot change mid-run) or an invalid
    value."""
    other = [name for name in changes if name not in CONNECTION_FIELDS]
    if other:
        raise ConfigError(f"{other[0]}: a resumed run keeps its own settings; only "
                          f"{', '.join(CONNECTION_FIELDS)} may change")
    try:
        return RunConfig(**{**config.model_dump(), **changes})
    except ValueError as exc:
        raise ConfigError(one_line(exc)) from exc
