from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import LinearSoftmaxAdapter
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from barapi.errors import ConfigError
from barapi.estimator import BARClassifier

FAST = dict(canvas=16, window=8, resolution=4, q=3, epochs=1, m=2, batch=20)


def digits(n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data[:n], data.target[:n]


def test_constructor_only_stores_parameters() -> None:
    est = BARClassifier(q=7, adapter=None)
    assert est.get_params()["q"] == 7
    assert not [k for k in vars(est) if k.endswith("_")]
    assert clone(est).get_params() == est.get_params()


def test_pipeline_and_cross_val_score_with_your_own_black_box() -> None:
    x, y = digits()
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a / 16.0)),
                     ("bar", BARClassifier(adapter=LinearSoftmaxAdapter(), **FAST))])
    scores = cross_val_score(pipe, x, y, cv=2)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    pipe.fit(x, y)
    proba = pipe.predict_proba(x[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(axis=1), 1)
    assert set(pipe.predict(x)) <= set(y)


def test_fitted_attributes_and_pickle_with_the_local_model() -> None:
    x, y = digits(120)
    est = BARClassifier(input_size=32, device="cpu", **FAST).fit(x, y)
    assert est.program_weights_.shape == (3, 4, 4) and est.n_queries_ > 0
    before = est.predict_proba(x[:8])
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.predict_proba(x[:8]), before)
    assert 0 <= est.score(x, y) <= 1


def test_custom_adapter_is_not_pickled_silently() -> None:
    x, y = digits(60)
    est = BARClassifier(adapter=LinearSoftmaxAdapter(), **FAST).fit(x, y)
    again = pickle.loads(pickle.dumps(est))
    with pytest.raises(ConfigError, match="set_params"):
        again.predict(x[:2])
    again.set_params(adapter=LinearSoftmaxAdapter())
    assert np.array_equal(again.predict(x[:5]), est.predict(x[:5]))


def test_bad_targets_are_refused() -> None:
    x, _ = digits(30)
    with pytest.raises(ConfigError, match="single class"):
        BARClassifier(adapter=LinearSoftmaxAdapter(), **FAST).fit(x, np.zeros(30))
    with pytest.raises(ConfigError, match="not a square image"):
        BARClassifier(adapter=LinearSoftmaxAdapter(), **FAST).fit(x[:, :10], np.arange(30) % 2)
