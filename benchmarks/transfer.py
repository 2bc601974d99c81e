"""The paper's white-box transfer baselines, on the same splits as the reprogramming runs.

- `feature_extraction`: logistic regression on EfficientNet-Lite0's pooled penultimate
  features (reads the model's internals: white-box, not possible through an API);
- `cnn_from_scratch`: a small CNN trained on the target task alone (no pretrained model).

Both select their epoch / regularisation on the validation split and report test accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from barapi.data import Split


def _tensor(images: NDArray[np.uint8], size: int) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                           align_corners=False, antialias=True)


def feature_extraction(split: Split, input_size: int = 112, seed: int = 0) -> dict[str, Any]:
    """Test accuracy of an L2 logistic regression on Lite0 features (C chosen on validation)."""
    from barapi.adapters.local import IMAGENET_MEAN, IMAGENET_STD, _efficientnet_lite

    torch.manual_seed(seed)
    model = _efficientnet_lite("efficientnet-lite0")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def features(images: NDArray[np.uint8]) -> NDArray[np.float32]:
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), 32):
                x = (_tensor(images[i:i + 32], input_size) - mean) / std
                out.append(model.extract_features(x).mean(dim=(2, 3)).numpy())
        return np.concatenate(out)

    assert split.val is not None and split.test is not None
    train, val, test = (features(p.images) for p in (split.train, split.val, split.test))
    best: tuple[float, float] = (-1.0, 1.0)
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(train, split.train.labels)
        best = max(best, (clf.score(val, split.val.labels), c))
    clf = LogisticRegression(C=best[1], max_iter=2000).fit(train, split.train.labels)
    return {"test_accuracy": float(clf.score(test, split.test.labels)),
            "best_val_accuracy": best[0], "images": 0}


def cnn_from_scratch(split: Split, size: int = 28, epochs: int = 40,
                     seed: int = 0) -> dict[str, Any]:
    """A 2-conv-layer CNN with Adam, the epoch chosen on validation accuracy."""
    torch.manual_seed(seed)
    n_classes = split.train.n_classes
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(64 * (size // 4) ** 2, n_classes))
    assert split.val is not None and split.test is not None
    x_train, x_val, x_test = (_tensor(p.images, size) for p in (split.train, split.val, split.test))
    y_train = torch.from_numpy(split.train.labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    best_val, best_test = -1.0, 0.0

    def accuracy(x: torch.Tensor, y: NDArray[np.int64]) -> float:
        net.eval()
        with torch.inference_mode():
            return float((net(x).argmax(dim=1).numpy() == y).mean())

    for _ in range(epochs):
        net.train()
        for batch in torch.randperm(len(y_train), generator=generator).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        val = accuracy(x_val, split.val.labels)
        if val > best_val:
            best_val, best_test = val, accuracy(x_test, split.test.labels)
    return {"test_accuracy": best_test, "best_val_accuracy": best_val, "images": 0}
