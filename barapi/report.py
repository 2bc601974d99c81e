"""Pictures of a run: the learned program, and loss / validation accuracy curves (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from barapi.program import Program


def save_program_png(path: Path, program: Program, weights: NDArray[np.float32],
                     example: NDArray[np.uint8] | None = None) -> None:
    """The program as the black box sees it, with `example` (a window) in place, or grey."""
    window = example if example is not None else np.full(
        (program.canvas.window, program.canvas.window, 3), 128, dtype=np.uint8)
    Image.fromarray(program.images(window[None], weights)[0]).save(path)


def save_curves_png(path: Path, metrics: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in metrics if r.get("event") == "step"]
    vals = [r for r in metrics if r.get("event") == "val"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="train")
    ax_loss.plot([r["step"] for r in vals], [r["val_loss"] for r in vals], "o-", label="val")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_acc.plot([r["step"] for r in vals], [r["val_accuracy"] for r in vals], "o-")
    starts = [r for r in metrics if r.get("event") == "start"]
    if starts:
        ax_acc.axhline(starts[0]["zero_shot_test_accuracy"], ls="--", c="grey",
                       label="zero-shot (test)")
        ax_acc.legend()
    ax_acc.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
