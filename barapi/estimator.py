"""scikit-learn estimator: ``BARClassifier`` reprograms a black box inside a Pipeline.

The constructor only stores parameters; `fit` builds the adapter, holds out a stratified
validation share of the training data for model selection, and trains. Fitted attributes
end in ``_``. A fitted estimator pickles without its adapter (rebuilt on first use).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from barapi.adapters.base import Adapter
from barapi.budget import Budget
from barapi.config import make_config
from barapi.data import Dataset, Split, to_rgb_uint8
from barapi.errors import BudgetExhausted, ConfigError

InputScale = tuple[Any, ...]
"""A fitted scaling rule: ``("uint8",)`` or ``("affine", low, high)`` (plain Python floats)."""


def _as_arrays(X: ArrayLike, image_shape: tuple[int, ...] | None) -> NDArray[Any]:
    """(N, D) rows or (N, h, w[, c]) arrays → (N, h, w[, c]) real, finite numbers."""
    x = np.asarray(X)
    if x.ndim < 2:
        raise ConfigError(f"X must be (N, D) rows or (N, h, w[, c]) images, got shape {x.shape}; "
                          f"pass a single sample as X.reshape(1, -1)")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"X must hold real numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ConfigError("X contains NaN or infinite values")
    if x.ndim == 2:
        if image_shape is None:
            side = round(np.sqrt(x.shape[1]))
            if side * side != x.shape[1]:
                raise ConfigError(f"X has {x.shape[1]} features per row, not a square image; "
                                  f"pass image_shape=(h, w) or (h, w, 3)")
            image_shape = (side, side)
        x = x.reshape(len(x), *image_shape)
    return x


def fit_input_scale(X: ArrayLike, image_shape: tuple[int, ...] | None = None) -> InputScale:
    """The scaling rule `BARClassifier.fit` stores as ``input_scale_``, from the training X:
    uint8 X → ``("uint8",)`` (kept as is); other numbers whose training values all lie in
    [0, 1] → ``("affine", 0.0, 1.0)`` (× 255); anything else → ``("affine", low, high)``, the
    training set's min and max mapped to 0 and 255."""
    x = _as_arrays(X, image_shape)
    if x.dtype == np.uint8:
        return ("uint8",)
    if not x.size:
        raise ConfigError("X has no values to fit the image scaling to")
    low, high = float(x.min()), float(x.max())
    if low >= 0 and high <= 1:
        return ("affine", 0.0, 1.0)
    return ("affine", low, high)


def as_images(X: ArrayLike, image_shape: tuple[int, ...] | None,
              scale: InputScale | None = None) -> NDArray[np.uint8]:
    """(N, D) rows or (N, h, w[, c]) arrays → (N, h, w, 3) uint8 under the rule `scale`
    (see `fit_input_scale`), applied to each value alone: ``("affine", low, high)`` maps
    low..high to 0..255, rounds, and clips values outside low..high to 0 or 255 (a constant
    training set, low == high, maps everything to 0); ``("uint8",)`` keeps uint8 values and
    rounds and clips other numbers to 0..255. So a row's image never depends on the other
    rows. Without `scale` the rule is fitted to this X itself (then it does depend on them)."""
    x = _as_arrays(X, image_shape)
    if scale is None:
        scale = fit_input_scale(x)
    if scale[0] == "uint8":
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x.astype(np.float64)), 0, 255).astype(np.uint8)
    elif scale[0] == "affine":
        low, high = float(scale[1]), float(scale[2])
        values = x.astype(np.float64)
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        x = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    else:
        raise ConfigError(f"unknown image scaling rule {scale!r}")
    return to_rgb_uint8(x, "X")


class BARClassifier(ClassifierMixin, BaseEstimator):
    """Black-box adversarial reprogramming as a scikit-learn classifier.

    Parameters mirror `barapi.config.RunConfig` (see `barapi run --help`). `adapter` lets you
    pass your own black box instead of `provider`/`model`; `image_shape` reshapes flat rows.
    `budget`: dollars for `fit` and every later `predict`/`predict_proba`/`score` together
    (needed for a priced provider; the spend so far is ``spent_nano_``, in nanodollars).

    Scaling of X to 0..255 pixels is decided once, at `fit`, from the training X and stored
    as ``input_scale_`` (plain numbers; see `fit_input_scale`): uint8 X is kept as is; other
    numbers whose training values all lie in [0, 1] are multiplied by 255; anything else maps
    the training set's min and max to 0 and 255. `predict`/`predict_proba` apply exactly that
    rule to each value of any X, clipping values outside the training range to 0 or 255 (they
    are not rescaled), so a sample's answer never depends on the other samples of its batch.
    X at predict time must have ``n_features_in_`` features and no NaN or infinite values.
    """

    def __init__(self, provider: str = "local", model: str | None = None,
                 endpoint: str | None = None, insecure: bool = False, labels: str | None = None,
                 input_size: int | None = 112, device: str = "auto", canvas: int = 112,
                 window: int | None = None, resolution: int | None = 8, method: str = "bar",
                 mapping: str = "frequency", m: int = 4, loss: str = "ce", gamma: float = 2.0,
                 q: int = 10, beta: float = 0.05, directions: str = "gaussian",
                 two_sided: bool = False, optimizer: str = "adam", lr: float = 0.05,
                 decay: float = 1.0, batch: int = 20, epochs: int = 6, val_fraction: float = 0.15,
                 seed: int = 0, budget: float | None = None, image_shape: tuple[int, ...] | None = None,
                 adapter: Adapter | None = None, key_file: str | None = None) -> None:
        self.provider = provider
        self.model = model
        self.endpoint = endpoint
        self.insecure = insecure
        self.labels = labels
        self.input_size = input_size
        self.device = device
        self.canvas = canvas
        self.window = window
        self.resolution = resolution
        self.method = method
        self.mapping = mapping
        self.m = m
        self.loss = loss
        self.gamma = gamma
        self.q = q
        self.beta = beta
        self.directions = directions
        self.two_sided = two_sided
        self.optimizer = optimizer
        self.lr = lr
        self.decay = decay
        self.batch = batch
        self.epochs = epochs
        self.val_fraction = val_fraction
        self.seed = seed
        self.budget = budget
        self.image_shape = image_shape
        self.adapter = adapter
        self.key_file = key_file

    _CONFIG_KEYS = ("provider", "model", "endpoint", "insecure", "labels", "key_file", "input_size",
                    "device", "canvas", "window", "resolution", "method", "mapping", "m", "loss", "gamma",
                    "q", "beta", "directions", "two_sided", "optimizer", "lr", "decay", "batch",
                    "epochs", "val_fraction", "seed")

    def _config(self) -> Any:
        return make_config(**{k: getattr(self, k) for k in self._CONFIG_KEYS})

    def _split(self, images: NDArray[np.uint8], labels: NDArray[np.int64]) -> Split:
        from sklearn.model_selection import train_test_split

        n, n_classes = len(labels), len(self.classes_)
        n_val = max(n_classes, round(self.val_fraction * n))
        if np.bincount(labels).min() < 2 or n - n_val < n_classes:
            raise ConfigError(f"X has {n} samples for {n_classes} classes: fit needs at least 2 per "
                              f"class (one for training, one for validation)")
        train, val = train_test_split(np.arange(n), test_size=n_val, stratify=labels,
                                      random_state=self.seed)
        classes = [str(c) for c in self.classes_]

        def part(ix: NDArray[np.int64]) -> Dataset:
            return Dataset(images[ix], labels[ix], classes, "X")
        return Split(part(np.sort(train)), part(np.sort(val)), None)

    def fit(self, X: ArrayLike, y: ArrayLike) -> BARClassifier:
        from barapi import api

        self.__dict__.pop("_adapter_dropped", None)
        check_classification_targets(y)
        scale = fit_input_scale(X, self.image_shape)
        images = as_images(X, self.image_shape, scale)
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError("y has a single class; reprogramming needs at least 2")
        config = self._config()
        session = api.prepare(config, adapter=self._get_adapter(), split=self._split(images, labels),
                              budget=self.budget)
        result = session.run()
        self.spent_nano_ = session.service.budget.spent_nano
        if result.head is None:
            raise BudgetExhausted(f"fit stopped before anything was learned: {result.stopped}")
        if result.stopped:
            warnings.warn(f"fit stopped early: {result.stopped}; the estimator keeps the best "
                          f"program found so far", RuntimeWarning, stacklevel=2)
        self.config_ = config
        self.program_weights_ = result.weights
        self.head_ = result.head
        self.best_val_accuracy_ = result.best_val_accuracy
        self.n_queries_ = result.extra["queries"]
        self.n_features_in_ = int(np.prod(np.asarray(X).shape[1:]))
        self.input_scale_ = scale
        return self

    def _get_adapter(self) -> Adapter:
        if self.adapter is not None:
            return self.adapter
        if self.__dict__.get("_adapter_dropped"):
            raise ConfigError("this BARClassifier was unpickled without its custom adapter; "
                              "pass it again with set_params(adapter=...)")
        key = (self.provider, self.model, self.endpoint, self.insecure, self.labels, self.key_file,
               self.device, self.input_size)
        cached: Adapter | None = self.__dict__.get("_adapter")
        if cached is None or self.__dict__.get("_adapter_key") != key:
            from barapi import api

            cached = api.open_adapter(self._config())
            self.__dict__.update(_adapter=cached, _adapter_key=key)
        return cached

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """(N, C) target-class scores (rows sum to 1), columns in `classes_` order."""
        import asyncio

        from barapi import api

        check_is_fitted(self, "program_weights_")
        images = self._images(X)
        head = self.head_
        assert head is not None
        fitted = api.FittedProgram(self.config_, self.program_weights_,
                                   head,
                                   [str(c) for c in self.classes_])
        adapter = self._get_adapter()
        card = api.card_for(adapter)
        budget = Budget(card.price_per_1000, self.budget)
        budget.spent_nano = self.__dict__.get("spent_nano_", 0)  # fit and predictions share it
        service = api.make_service(adapter, budget, card=card)
        try:
            return asyncio.run(fitted.predict_proba(service, images))
        finally:
            self.spent_nano_ = budget.spent_nano

    def _images(self, X: ArrayLike) -> NDArray[np.uint8]:
        """X → images under the rule fitted in `fit`, after checking its feature count."""
        x = np.asarray(X)
        n_features = int(np.prod(x.shape[1:])) if x.ndim >= 2 else None
        if n_features is not None and n_features != self.n_features_in_:
            raise ConfigError(f"X has {n_features} features, but {type(self).__name__} is "
                              f"expecting {self.n_features_in_} features as input")
        scale: InputScale | None = self.__dict__.get("input_scale_")
        if scale is None:  # pickled by a version that scaled each batch on its own
            raise ConfigError("this BARClassifier was fitted without a stored input scaling "
                              "rule (input_scale_); fit it again")
        return as_images(x, self.image_shape, scale)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __getstate__(self) -> dict[str, Any]:
        """Adapters (connections, devices) are not pickled: one built from `provider` is
        rebuilt on first use; a user-supplied one must be passed again with set_params."""
        state = self.__dict__.copy()
        state.pop("_adapter", None)
        if state.get("adapter") is not None:
            state["adapter"] = None
            state["_adapter_dropped"] = True
        return state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


__all__ = ["BARClassifier", "as_images", "fit_input_scale"]
