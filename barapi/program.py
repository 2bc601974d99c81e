"""Embedding of target samples into a canvas, the mask, and the universal program.

Coordinates: a canvas is S×S×3 in the continuous range [-1, 1] (0 is mid-grey). Each target
sample is resized into a w×w window at (top, left); the mask M is 0 on the window and 1
elsewhere. The program is P = tanh(U(W)) ⊙ M, where W has shape (3, k, k) and U is bilinear
upsampling to S×S (identity when k == S, the paper's full-resolution program). The queried
image is the 8-bit quantisation of P with the window replaced by the sample's own pixels,
so the window of every queried image equals the embedded sample exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from barapi.wire import Uint8Images, to_uint8

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Canvas:
    """Geometry: canvas side `size`, window side `window`, window corner (top, left).

    `top`/`left` of None centre the window.
    """

    size: int
    window: int
    top: int | None = None
    left: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or self.window < 1:
            raise ValueError(f"canvas ({self.size}) and window ({self.window}) must be positive")
        if self.window > self.size:
            raise ValueError(f"window {self.window} is larger than the canvas {self.size}")
        if not (0 <= self.row <= self.size - self.window and 0 <= self.col <= self.size - self.window):
            raise ValueError(
                f"window {self.window} at ({self.row}, {self.col}) does not fit in canvas {self.size}"
            )

    @property
    def row(self) -> int:
        return (self.size - self.window) // 2 if self.top is None else self.top

    @property
    def col(self) -> int:
        return (self.size - self.window) // 2 if self.left is None else self.left

    @property
    def window_slice(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.window), slice(self.col, self.col + self.window)

    @cached_property
    def mask(self) -> FloatArray:
        """(S, S, 1) float32: 0 on the window, 1 elsewhere."""
        mask = np.ones((self.size, self.size, 1), dtype=np.float32)
        mask[self.window_slice] = 0.0
        return mask

    def embed(self, images: Uint8Images) -> Uint8Images:
        """Resize (N, h, w, 3) uint8 samples to the (N, window, window, 3) window content."""
        if images.shape[1:3] == (self.window, self.window):
            return images
        size = (self.window, self.window)
        return np.stack(
            [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BILINEAR)) for im in images]
        )


def bilinear_matrix(out_size: int, in_size: int) -> FloatArray:
    """(out_size, in_size) matrix A such that A @ x bilinearly resizes x (half-pixel centres,
    edge clamped; the same convention as torch's interpolate with align_corners=False)."""
    if out_size == in_size:
        return np.eye(out_size, dtype=np.float32)
    centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    centres = np.clip(centres, 0, in_size - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = (centres - low).astype(np.float32)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


@dataclass(frozen=True)
class Program:
    """A universal program on `canvas` with parameters W of shape (3, k, k), k = `resolution`.

    `resolution` equal to the canvas size is the paper's full-resolution program (d = 3·S·S).
    """

    canvas: Canvas
    resolution: int

    def __post_init__(self) -> None:
        if not 1 <= self.resolution <= self.canvas.size:
            raise ValueError(
                f"program resolution {self.resolution} must be between 1 and the canvas size "
                f"{self.canvas.size}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    @property
    def dim(self) -> int:
        """Number of free parameters d."""
        return 3 * self.resolution * self.resolution

    @cached_property
    def upsample(self) -> FloatArray:
        """(S, k) bilinear upsampling matrix."""
        return bilinear_matrix(self.canvas.size, self.resolution)

    def zeros(self) -> FloatArray:
        return np.zeros(self.shape, dtype=np.float32)

    def perturbation(self, weights: FloatArray) -> FloatArray:
        """P = tanh(U(W)) ⊙ M for W of shape (..., 3, k, k); returns (..., S, S, 3) in [-1, 1]."""
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape[-3:] != self.shape:
            raise ValueError(f"program weights must have shape {self.shape}, got {weights.shape}")
        full_resolution = self.resolution == self.canvas.size
        full = weights if full_resolution else self.upsample @ weights @ self.upsample.T
        return np.tanh(np.moveaxis(full, -3, -1)) * self.canvas.mask

    def compose(self, windows: Uint8Images, perturbations: FloatArray) -> Uint8Images:
        """Queried images for every (program variant, sample) pair.

        windows: (B, w, w, 3) uint8 embedded samples; perturbations: (V, S, S, 3) in [-1, 1],
        or (V, B, S, S, 3), one per sample (per-sample directions). Returns (V·B, S, S, 3)
        uint8, variant-major (all B samples under variant 0 first).
        """
        backgrounds = to_uint8(perturbations)
        n_variants, n_samples = backgrounds.shape[0], windows.shape[0]
        if backgrounds.ndim == 5:
            if backgrounds.shape[1] != n_samples:
                raise ValueError(f"{backgrounds.shape[1]} perturbations per variant for "
                                 f"{n_samples} samples")
            out = backgrounds
        else:
            out = np.repeat(backgrounds[:, None], n_samples, axis=1)
        rows, cols = self.canvas.window_slice
        out[:, :, rows, cols] = windows[None]
        return out.reshape(n_variants * n_samples, *backgrounds.shape[-3:])

    def images(self, windows: Uint8Images, weights: FloatArray) -> Uint8Images:
        """(B, S, S, 3) uint8 queried images of B samples under one program W."""
        return self.compose(windows, self.perturbation(weights)[None])
