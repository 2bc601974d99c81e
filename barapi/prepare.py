"""How a new image is prepared for `predict`: exactly as training prepared the dataset's.

A run records its dataset's sample format in config.json ("session" → "input"): the side of
its samples in pixels, whether they are grey (three equal channels) and, for
floating-point samples, the rule that scaled them to 0..255 (`data.FloatScale`). `predict`
reads an image file as training read the dataset's files (`data.read_image`: EXIF
orientation, bit depth, alpha onto black; floats scaled by the recorded rule), turns it grey
if the dataset was, and resizes it to the dataset's sample size (Pillow: box filter when
shrinking, bilinear when enlarging). The canvas then embeds it as it embedded every training
image. An image saved at another size or in colour thus gets the answer its training-size
original gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from barapi.data import Dataset, FloatScale
from barapi.errors import ConfigError

MAX_SIDE = 1 << 16
"""Largest sample side accepted from a run folder's record, in pixels (Pillow's own limit
for one side is 65,535 + 1)."""


@dataclass(frozen=True)
class InputFormat:
    """A dataset's sample format: `height` × `width` pixels, `grey` (three equal channels),
    `scale` (its floating-point samples' rule to 0..255, or None)."""

    height: int
    width: int
    grey: bool
    scale: FloatScale | None = None

    @classmethod
    def of(cls, data: Dataset) -> InputFormat:
        """The format of `data`'s (N, h, w, 3) uint8 samples."""
        images = data.images
        grey = bool(np.array_equal(images[..., 0], images[..., 1])
                    and np.array_equal(images[..., 0], images[..., 2]))
        return cls(int(images.shape[1]), int(images.shape[2]), grey, data.float_scale)

    def to_json(self) -> dict[str, Any]:
        scale = None if self.scale is None else [self.scale.low, self.scale.high]
        return {"height": self.height, "width": self.width, "grey": self.grey,
                "float_scale": scale}

    @classmethod
    def from_json(cls, value: object, source: str) -> InputFormat:
        """The record written by `to_json`, checked; ConfigError naming `source` and the field."""
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: input: expected an object, got {value!r}")
        sides = []
        for field in ("height", "width"):
            side = value.get(field)
            if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_SIDE:
                raise ConfigError(f"{source}: input.{field}: expected a whole number of pixels "
                                  f"from 1 to {MAX_SIDE}, got {side!r}")
            sides.append(side)
        grey = value.get("grey")
        if not isinstance(grey, bool):
            raise ConfigError(f"{source}: input.grey: expected true or false, got {grey!r}")
        raw = value.get("float_scale")
        scale = None
        if raw is not None:
            if not (isinstance(raw, list) and len(raw) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v) for v in raw) and raw[0] <= raw[1]):
                raise ConfigError(f"{source}: input.float_scale: expected [low, high], two "
                                  f"finite numbers with low ≤ high, or null, got {raw!r}")
            scale = FloatScale(float(raw[0]), float(raw[1]))
        return cls(sides[0], sides[1], grey, scale)

    @classmethod
    def of_run(cls, session: dict[str, Any], source: str) -> InputFormat | None:
        """The format a run folder's session record holds (None: a run made before barapi
        recorded it)."""
        return None if "input" not in session else cls.from_json(session["input"], source)

    def prepare(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """An (h, w, 3) uint8 image as a (height, width, 3) uint8 sample of the dataset."""
        im = Image.fromarray(image)
        if self.grey:
            im = im.convert("L")  # ITU-R 601-2 luma, Pillow's grey conversion
        if im.size != (self.width, self.height):
            shrink = im.width >= self.width and im.height >= self.height
            im = im.resize((self.width, self.height),
                           Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)

    def describe(self) -> str:
        """E.g. "8×8 px, grey", as `predict` tells the user."""
        return f"{self.width}×{self.height} px, {'grey' if self.grey else 'colour'}"
