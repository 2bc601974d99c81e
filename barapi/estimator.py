"""scikit-learn estimator: ``BARClassifier`` reprograms a black box inside a Pipeline.

The constructor only stores parameters; `fit` builds the adapter, holds out a stratified
validation share of the training data for model selection, and trains. Fitted attributes
end in ``_``. A fitted estimator pickles without its adapter (rebuilt on first use).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from barapi.adapters.base import Adapter
from barapi.budget import Budget
from barapi.config import make_config
from barapi.data import Dataset, Split, to_rgb_uint8
from barapi.errors import BudgetExhausted, ConfigError
from barapi.progress import ProgressLines

log = logging.getLogger(__name__)
"""``barapi.estimator``: `fit` reports its progress here at INFO (`barapi.progress.ProgressLines`,
lines starting "fit: ")."""

InputScale = tuple[Any, ...]
"""A fitted scaling rule: ``("uint8",)`` or ``("affine", low, high)`` (plain Python floats)."""


def validate_X(X: ArrayLike) -> NDArray[Any]:
    """Any array-like X → a dense numeric ndarray of ≥ 2 dimensions, at least one sample and
    one feature, all finite (sklearn's `check_array` does the conversion; lists, DataFrames,
    memmaps and object arrays of numbers are accepted). Raises ConfigError (a ValueError),
    one line saying what was expected, for sparse, 1-D, empty, string or complex X and NaN
    or ±inf; TypeError ("X must hold real numbers (...)") for objects that are not numbers."""
    if sparse.issparse(X):
        raise ConfigError("X is a scipy sparse matrix: BARClassifier sends every pixel to the "
                          "black box, so it needs dense images; pass X.toarray()")
    values: Any = X if hasattr(X, "dtype") else np.asarray(X)  # lists, DataFrames
    if values.dtype == object:  # numbers held as Python objects are fine; anything else is named
        try:
            values = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"X must hold real numbers ({exc})") from None
    try:
        x = check_array(values, accept_sparse=False, dtype="numeric", ensure_2d=False,
                        allow_nd=True, ensure_all_finite=False, input_name="X")
    except ValueError as exc:  # empty, strings, complex: sklearn's own words, one line
        raise ConfigError(" ".join(str(exc).split())) from None
    if x.ndim < 2:
        raise ConfigError(f"X must be (N, D) rows or (N, h, w[, c]) images, got shape {x.shape}; "
                          f"Reshape your data: X.reshape(1, -1) for a single sample")
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"X must hold real numbers, got dtype {x.dtype}")
    if not int(np.prod(x.shape[1:])):
        raise ConfigError(f"X has 0 feature(s) (shape={x.shape}) while a minimum of 1 is required")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ConfigError("X contains NaN or infinite values")
    return x


def _as_arrays(X: ArrayLike, image_shape: tuple[int, ...] | None) -> NDArray[Any]:
    """(N, D) rows or (N, h, w[, c]) arrays → (N, h, w[, c]) real, finite numbers
    (see `validate_X`); flat rows must hold a square image unless `image_shape` is given."""
    x = validate_X(X)
    if x.ndim == 2:
        if image_shape is None:
            side = round(np.sqrt(x.shape[1]))
            if side * side != x.shape[1]:
                raise ConfigError(f"X has {x.shape[1]} features per row, not a square image; "
                                  f"pass image_shape=(h, w) or (h, w, 3)")
            image_shape = (side, side)
        if int(np.prod(image_shape)) != x.shape[1]:
            raise ConfigError(f"X has {x.shape[1]} features per row, but image_shape="
                              f"{tuple(image_shape)} needs {int(np.prod(image_shape))}")
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
    Bad X (sparse, 1-D, empty, not numbers) is refused with one line, before anything is sent;
    `predict` before `fit` raises NotFittedError. `fit` logs its progress at INFO on the
    ``barapi.estimator`` logger (`barapi.progress.ProgressLines`). scikit-learn's `check_estimator` passes
    except the checks `expected_failed_checks` declares, each with its reason.
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

    def _split(self, images: NDArray[np.uint8], labels: NDArray[np.int64],
               classes: NDArray[Any]) -> Split:
        from sklearn.model_selection import train_test_split

        n, n_classes = len(labels), len(classes)
        n_val = max(n_classes, round(self.val_fraction * n))
        if np.bincount(labels).min() < 2 or n - n_val < n_classes:
            raise ConfigError(f"X has {n} samples for {n_classes} classes: fit needs at least 2 per "
                              f"class (one for training, one for validation)")
        train, val = train_test_split(np.arange(n), test_size=n_val, stratify=labels,
                                      random_state=self.seed)
        names = [str(c) for c in classes]

        def part(ix: NDArray[np.int64]) -> Dataset:
            return Dataset(images[ix], labels[ix], names, "X")
        return Split(part(np.sort(train)), part(np.sort(val)), None)

    def fit(self, X: ArrayLike, y: ArrayLike) -> BARClassifier:
        """Reprogram the black box for (X, y): X as `validate_X` takes it, y (N,) class labels
        of at least 2 classes with 2 samples each. Raises ConfigError for bad X or y (nothing
        is sent), BudgetExhausted when the budget ran out before anything was learned.
        Progress goes to the ``barapi.estimator`` logger at INFO (`barapi.progress.ProgressLines`,
        lines starting "fit: ")."""
        from barapi import api

        self.__dict__.pop("_adapter_dropped", None)
        x = validate_X(X)
        targets = column_or_1d(y, warn=True)
        check_consistent_length(x, targets)
        check_classification_targets(targets)
        classes, labels = np.unique(targets, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError("y has one class; reprogramming needs at least 2")
        shape = self._row_shape(x)
        scale = fit_input_scale(x, shape)
        images = as_images(x, shape, scale)
        config = self._config()
        session = api.prepare(config, adapter=self._get_adapter(),
                              split=self._split(images, labels, classes), budget=self.budget)
        trainer = session.trainer
        trainer.lines = ProgressLines(trainer.total_steps, trainer.steps_per_epoch, config.epochs,
                                      session.service.budget.limit, logger=log, prefix="fit: ")
        result = session.run()
        self.spent_nano_ = session.service.budget.spent_nano
        if result.head is None:
            raise BudgetExhausted(f"fit stopped before anything was learned: {result.stopped}")
        if result.stopped:
            warnings.warn(f"fit stopped early: {result.stopped}; the estimator keeps the best "
                          f"program found so far", RuntimeWarning, stacklevel=2)
        self.classes_ = classes
        self.config_ = config
        self.program_weights_ = result.weights
        self.head_ = result.head
        self.best_val_accuracy_ = result.best_val_accuracy
        self.n_queries_ = result.extra["queries"]
        self.n_features_in_ = int(np.prod(x.shape[1:]))
        self.input_scale_ = scale
        log.info("fit done: %d images, $%.4f spent, best validation accuracy %.1f%%",
                 self.n_queries_, self.spent_nano_ / 1e9, 100 * self.best_val_accuracy_)
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

        check_is_fitted(self, "program_weights_")  # NotFittedError before fit
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
        x = validate_X(X)
        n_features = int(np.prod(x.shape[1:]))
        if n_features != self.n_features_in_:
            raise ConfigError(f"X has {n_features} features, but {type(self).__name__} is "
                              f"expecting {self.n_features_in_} features as input")
        scale: InputScale | None = self.__dict__.get("input_scale_")
        if scale is None:  # pickled by a version that scaled each batch on its own
            raise ConfigError("this BARClassifier was fitted without a stored input scaling "
                              "rule (input_scale_); fit it again")
        return as_images(x, self._row_shape(x), scale)

    def _row_shape(self, x: NDArray[Any]) -> tuple[int, ...] | None:
        """The image shape each flat row of `x` is reshaped to: `image_shape` (None: a
        square, see `as_images`). The one place the layout of a row is decided."""
        return self.image_shape

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """(N,) predicted classes, from `classes_` (NotFittedError before fit)."""
        check_is_fitted(self, "program_weights_")
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
        """Dense, finite, numeric X only (sparse and NaN are refused with a reason);
        deterministic for a fixed `seed` and black box. `poor_score`: sklearn's toy tasks
        (2 to 10 random features drawn as a tiny image) say nothing about reprogramming."""
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.poor_score = True
        return tags


_SQUARE = ("flat rows must be square images (h·w features) unless image_shape is given; "
           "this check's X has 2, 3, 5 or 10 features per row")
NOT_APPLICABLE_SQUARE: dict[str, str] = dict.fromkeys((
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array",
    "check_classifiers_classes", "check_classifiers_train", "check_supervised_y_2d",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d"), _SQUARE)
"""scikit-learn checks whose data is not a square image (by design, see `as_images`)."""

NOT_APPLICABLE_ADAPTER: dict[str, str] = {
    "check_estimators_overwrite_params": "a custom adapter is a live black box whose call "
                                         "state changes as fit queries it; not a value",
    "check_estimators_pickle": "a custom adapter is not pickled (it may hold connections): "
                               "pass it again with set_params(adapter=...) after unpickling",
}
"""scikit-learn checks that do not apply when `adapter` is given (not `provider`)."""


def expected_failed_checks(estimator: BARClassifier) -> dict[str, str]:
    """The scikit-learn checks that do not apply to `estimator`, each with its reason: pass
    as ``check_estimator(est, expected_failed_checks=expected_failed_checks(est))``."""
    declared = {} if estimator.image_shape is not None else dict(NOT_APPLICABLE_SQUARE)
    if estimator.adapter is not None:
        declared.update(NOT_APPLICABLE_ADAPTER)
    return declared


__all__ = ["BARClassifier", "as_images", "expected_failed_checks", "fit_input_scale",
           "validate_X"]
