"""Drawing helpers shared by the figure scripts: images to RGB, framed rows, column titles."""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np


def to_rgb(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """An image of raw values in [lo, hi] (gray or RGB) as 8-bit RGB."""
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    unit = np.clip((image.astype(np.float32) - lo) / (hi - lo), 0, 1)
    unit = unit[..., None].repeat(3, -1) if unit.ndim == 2 else unit
    return (unit * 255).astype(np.uint8)


def framed_row(cells: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-height RGB cells side by side, each in a 2-pixel white frame."""
    return np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], 1)


def titles(width: int, columns: Sequence[Tuple[str, ...]], height: int = 40) -> np.ndarray:
    """A white band with each column's title (up to two lines) centred over it."""
    band = np.full((height, width, 3), 255, np.uint8)
    cell = width // len(columns)
    for c, lines in enumerate(columns):
        for k, text in enumerate(lines):
            (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            cv2.putText(band, text, (c * cell + max(0, (cell - w) // 2), 16 + 17 * k), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return band
