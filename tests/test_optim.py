import numpy as np
import pytest

from barapi.optim import Optimizer


def test_sgd_step_and_exponential_decay() -> None:
    opt = Optimizer("sgd", lr=0.1, decay=0.5, decay_steps=2)
    w = np.ones(3, dtype=np.float32)
    w = opt.step(w, np.ones(3, dtype=np.float32))
    assert w == pytest.approx([0.9] * 3)
    opt.step(w, w)
    assert opt.step_size() == pytest.approx(0.05)  # after one decay period


def test_adam_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5).astype(np.float32)
    grads = rng.standard_normal((4, 5)).astype(np.float32)
    ours = Optimizer("adam", lr=0.01)
    w = w0.copy()
    for g in grads:
        w = ours.step(w, g)
    param = torch.nn.Parameter(torch.tensor(w0))
    ref = torch.optim.Adam([param], lr=0.01)
    for g in grads:
        param.grad = torch.tensor(g)
        ref.step()
    assert w == pytest.approx(param.detach().numpy(), abs=1e-6)


def test_invalid_optimiser_settings() -> None:
    with pytest.raises(ValueError):
        Optimizer("rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Optimizer("sgd", lr=0)
