"""scikit-learn estimator: ``BARClassifier`` reprograms a black box inside a Pipeline.

The constructor only stores parameters; `fit` builds the adapter, holds out a stratified
validation share of the training data for model selection, and trains. Fitted attributes
end in ``_``. A fitted estimator pickles without its adapter (rebuilt on first use).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from barapi.adapters.base import Adapter
from barapi.config import make_config
from barapi.data import Dataset, Split, to_rgb_uint8
from barapi.errors import ConfigError


def as_images(X: ArrayLike, image_shape: tuple[int, ...] | None) -> NDArray[np.uint8]:
    """(N, D) rows or (N, h, w[, c]) arrays → (N, h, w, 3) uint8 (see `data.to_rgb_uint8`)."""
    x = np.asarray(X)
    if x.ndim == 2:
        if image_shape is None:
            side = round(np.sqrt(x.shape[1]))
            if side * side != x.shape[1]:
                raise ConfigError(f"X has {x.shape[1]} features per row, not a square image; "
                                  f"pass image_shape=(h, w) or (h, w, 3)")
            image_shape = (side, side)
        x = x.reshape(len(x), *image_shape)
    if x.dtype != np.uint8 and x.size and x.min() >= 0 and x.max() <= 1:
        x = np.rint(x * 255).astype(np.uint8)  # images given in [0, 1]
    return to_rgb_uint8(x, "X")


class BARClassifier(ClassifierMixin, BaseEstimator):
    """Black-box adversarial reprogramming as a scikit-learn classifier.

    Parameters mirror `barapi.config.RunConfig` (see `barapi run --help`). `adapter` lets you
    pass your own black box instead of `provider`/`model`; `image_shape` reshapes flat rows.
    """

    def __init__(self, provider: str = "local", model: str = "efficientnet-lite0",
                 endpoint: str | None = None, insecure: bool = False, labels: str | None = None,
                 input_size: int | None = 112, device: str = "auto", canvas: int = 112,
                 window: int | None = None, resolution: int | None = 8, method: str = "bar",
                 mapping: str = "frequency", m: int = 4, loss: str = "ce", gamma: float = 2.0,
                 q: int = 10, beta: float = 0.05, directions: str = "gaussian",
                 two_sided: bool = False, optimizer: str = "adam", lr: float = 0.05,
                 decay: float = 1.0, batch: int = 20, epochs: int = 6, val_fraction: float = 0.15,
                 seed: int = 0, budget: float | None = None, image_shape: tuple[int, ...] | None = None,
                 adapter: Adapter | None = None) -> None:
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

    _CONFIG_KEYS = ("provider", "model", "endpoint", "insecure", "labels", "input_size", "device",
                    "canvas", "window", "resolution", "method", "mapping", "m", "loss", "gamma",
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
        images = as_images(X, self.image_shape)
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError("y has a single class; reprogramming needs at least 2")
        config = self._config()
        session = api.prepare(config, adapter=self._get_adapter(), split=self._split(images, labels),
                              budget=self.budget)
        result = session.run()
        self.config_ = config
        self.program_weights_ = result.weights
        self.head_ = result.head
        self.best_val_accuracy_ = result.best_val_accuracy
        self.n_queries_ = result.extra["queries"]
        self.n_features_in_ = int(np.prod(np.asarray(X).shape[1:]))
        return self

    def _get_adapter(self) -> Adapter:
        if self.adapter is not None:
            return self.adapter
        if self.__dict__.get("_adapter_dropped"):
            raise ConfigError("this BARClassifier was unpickled without its custom adapter; "
                              "pass it again with set_params(adapter=...)")
        key = (self.provider, self.model, self.endpoint, self.insecure, self.labels, self.device,
               self.input_size)
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
        images = as_images(X, self.image_shape)
        fitted = api.FittedProgram(self.config_, self.program_weights_,
                                   self.head_,
                                   [str(c) for c in self.classes_])
        service = api.make_service(self._get_adapter(), self.budget)
        return asyncio.run(fitted.predict_proba(service, images))

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


__all__ = ["BARClassifier", "as_images"]
