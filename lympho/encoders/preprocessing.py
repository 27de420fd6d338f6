"""How an image becomes an encoder's input: resized, then centre-cropped.

Part of every torch encoder's identity: its ``key`` enters the feature cache key, so a
change of size, crop or version never reuses stale features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lympho.data import read_image

PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``size`` (the challenge crops are 224), then centre-crop to ``crop``.

    A smaller crop keeps the central lymphocyte and drops most of the background.
    """

    size: int = 224
    crop: int | None = None

    @property
    def key(self) -> str:
        return f"v{PREPROCESSING_VERSION}-s{self.size}-c{self.crop or self.size}"

    def load(self, path: Path) -> np.ndarray:
        image = read_image(path)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), resample=3)  # bicubic
        return self.crop_array(np.array(image, dtype=np.uint8))  # writable copy: torch wants one

    def crop_array(self, image):
        """The centre crop of an image already ``size`` x ``size`` (HWC, numpy or torch)."""
        if not self.crop or self.crop >= self.size:
            return image
        offset = (self.size - self.crop) // 2
        return image[offset:offset + self.crop, offset:offset + self.crop]
