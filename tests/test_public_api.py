"""The public surface, pinned: what `from barapi import ...` offers, and nothing by accident."""

import subprocess
import sys

import barapi


def test_the_public_api_is_pinned() -> None:
    assert barapi.__all__ == ["Adapter", "BARClassifier", "RunConfig", "__version__", "load_run",
                              "make_config", "prepare", "train"]
    from barapi import Adapter, BARClassifier, RunConfig, load_run, make_config, prepare, train  # noqa: F401
    from barapi.adapters.base import Adapter as BaseAdapter
    from barapi.estimator import BARClassifier as Estimator

    assert Adapter is BaseAdapter and BARClassifier is Estimator
    assert isinstance(make_config(epochs=1), RunConfig)


def test_importing_barapi_loads_no_model_framework() -> None:
    code = ("import sys, barapi; from barapi import BARClassifier, train; "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
