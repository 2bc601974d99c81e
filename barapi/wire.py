"""What goes over the wire: 8-bit RGB images and their PNG encoding.

Every image barapi sends to a black box is an array of shape (H, W, 3), dtype uint8.
Programs live in the continuous range [-1, 1]; `to_uint8` is the one quantiser between the
two, so what the estimator perturbs is exactly what the provider sees.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

Uint8Images = NDArray[np.uint8]
"""A batch of images, shape (N, H, W, 3), values 0..255."""


def to_uint8(values: NDArray[np.floating]) -> Uint8Images:
    """Quantise values in [-1, 1] to grey levels 0..255 (clipped).

    The half-level offset puts 0 (an all-zero program) in the middle of level 128 rather
    than on the rounding boundary between 127 and 128, where any perturbation, however
    small, would flip every pixel and fake a signal.
    """
    levels = np.rint((np.asarray(values, dtype=np.float32) + 1.0) * 127.5 + 0.5)
    return np.clip(levels, 0, 255).astype(np.uint8)


def to_unit(images: Uint8Images) -> NDArray[np.float32]:
    """Inverse of `to_uint8` on grey levels: the value at the centre of each level."""
    return np.clip((images.astype(np.float32) - 0.5) / 127.5 - 1.0, -1.0, 1.0)


def encode_png(image: Uint8Images) -> bytes:
    """Lossless PNG bytes of one (H, W, 3) uint8 image, as a cloud adapter sends it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected one (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> Uint8Images:
    """(H, W, 3) uint8 image from encoded bytes (PNG, JPEG, anything Pillow reads)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def worst_case_png_bytes(shape: tuple[int, ...]) -> int:
    """Upper bound on the PNG size of one (H, W, 3) image, whatever its content: the raw
    scanlines (one filter byte each), zlib's stored-block overhead, and 1 KiB of headers."""
    height, width = shape[0], shape[1]
    raw = height * (width * 3 + 1)
    return raw + 5 * (raw // 65_535 + 1) + 1024


def check_batch(images: Uint8Images) -> None:
    """Raise ValueError unless `images` is a (N, H, W, 3) uint8 batch."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError("images must be a uint8 numpy array of shape (N, H, W, 3)")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
