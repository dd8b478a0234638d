"""The digits pair: printed digits (A) and scikit-learn's handwritten digits (B)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, List, Tuple

import cv2
import numpy as np

from cyclecmda.data.pairs.common import (
    _DIGIT_SPLIT,
    _STREAMS,
    _SUPERSAMPLE,
    DIGIT_NAMES,
    RGB,
    MissingExtraError,
    _hsv,
    _smooth_noise,
    _to_uint8,
)

# --------------------------------------------------------------------------------------------
# digits: printed (A) and handwritten (B)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrintedDigit:
    """One printed digit: where and how it is set, and on what paper."""

    digit: int
    height: float  # ink height, fraction of the image side
    cx: float  # ink centre, fractions of the image side
    cy: float
    angle: float  # degrees, counter-clockwise
    aspect: float  # horizontal stretch
    bold: int  # stroke widening, font pixels at the 96 px reference size
    ink: RGB
    paper: RGB
    paper_texture: float
    noise_seed: int


def sample_printed_digit(rng: np.random.Generator, digit: int) -> PrintedDigit:
    """Draw the parameters of one printed ``digit``."""
    height = float(rng.uniform(0.55, 0.85))
    return PrintedDigit(
        digit=int(digit),
        height=height,
        cx=float(0.5 + rng.uniform(-0.12, 0.12)),
        cy=float(0.5 + rng.uniform(-0.5, 0.5) * (0.95 - height) / 2),
        angle=float(rng.uniform(-15.0, 15.0)),
        aspect=float(rng.uniform(0.85, 1.25)),
        bold=int(rng.integers(0, 4)),
        ink=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)),
        paper=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.35), rng.uniform(0.8, 1.0)),
        paper_texture=float(rng.uniform(0.01, 0.04)),
        noise_seed=int(rng.integers(2**31)),
    )


@functools.lru_cache(maxsize=None)
def _font() -> Any:
    from PIL import ImageFont

    try:
        font = ImageFont.load_default(size=96)
    except TypeError:  # Pillow < 10.1: bitmap font only
        font = None
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise MissingExtraError("the digits pair draws with Pillow's bundled font: it needs Pillow >= 10.1 "
                                "built with FreeType (pip install -U pillow)")
    return font


@functools.lru_cache(maxsize=None)
def _glyph(digit: int, bold: int) -> np.ndarray:
    """(h, w) float32 ink coverage of a digit at the 96 px reference size, cropped to its ink."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((20, 10), str(digit), font=_font(), fill=255, stroke_width=bold, stroke_fill=255)
    box = canvas.getbbox()
    assert box is not None, f"the font drew no ink for {digit}"
    left, top, right, bottom = box
    return np.asarray(canvas, dtype=np.float32)[top:bottom, left:right] / 255.0


def render_printed_digit(d: PrintedDigit, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (H, W, 3) image, float32 (H, W) ink coverage in [0, 1]) of a printed digit."""
    n = size * _SUPERSAMPLE
    glyph = _glyph(d.digit, d.bold)
    scale = d.height * n / glyph.shape[0]
    theta = np.deg2rad(d.angle)
    rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    linear = rotation @ np.diag([scale * d.aspect, scale])
    centre = np.array([glyph.shape[1] / 2, glyph.shape[0] / 2])
    shift = np.array([d.cx * n, d.cy * n]) - linear @ centre
    matrix = np.hstack([linear, shift[:, None]]).astype(np.float64)
    ink = cv2.warpAffine(glyph, matrix, (n, n), flags=cv2.INTER_LINEAR, borderValue=0.0)
    coverage = np.clip(cv2.resize(ink, (size, size), interpolation=cv2.INTER_AREA), 0.0, 1.0)

    rng = np.random.default_rng(d.noise_seed)
    grain = d.paper_texture * (_smooth_noise(rng, 3, size) + 0.5 * rng.uniform(-1.0, 1.0, (size, size)))
    paper = np.asarray(d.paper, np.float32) * (1.0 + grain.astype(np.float32))[..., None]
    a = coverage[..., None]
    image = paper * (1.0 - a) + np.asarray(d.ink, np.float32) * a
    image = image + rng.normal(0.0, 0.01, image.shape)
    return _to_uint8(image), coverage


def handwritten_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits: ((1797, 8, 8) float32 ink in [0, 1], (1797,) labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingExtraError("the digits pair needs scikit-learn: pip install 'cyclecmda[pairs]'") from None
    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def _handwritten_split(labels: np.ndarray, seed: int) -> np.ndarray:
    """An order of the handwritten digits in which every prefix and suffix holds the classes
    almost equally: each class shuffled, then dealt round-robin."""
    rng = np.random.default_rng([seed, _STREAMS["trainB"], _DIGIT_SPLIT])
    keys: List[Tuple[int, int, int]] = []
    for c in range(len(DIGIT_NAMES)):
        members = rng.permutation(np.flatnonzero(labels == c))
        keys.extend((rank, c, int(i)) for rank, i in enumerate(members))
    return np.array([i for _, _, i in sorted(keys)], dtype=np.int64)


def _render_handwritten(ink8: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 ink in [0, 1] of an 8x8 scan: upscaled into the middle 7/8 of the
    image, and its 4x4-block averages pulled back towards pen strokes by a soft threshold."""
    inner = size - 2 * (size // 16)
    ink = cv2.resize(ink8, (inner, inner), interpolation=cv2.INTER_CUBIC)
    ink = np.clip((ink - 0.3) / 0.4, 0.0, 1.0)
    ink = ink * ink * (3.0 - 2.0 * ink)
    margin = (size - inner) // 2
    return np.pad(ink, ((margin, size - inner - margin), (margin, size - inner - margin))).astype(np.float32)
