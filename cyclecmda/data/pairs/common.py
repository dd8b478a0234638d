"""Constants and helpers shared by the domain pairs: seed streams, noise, colours, scene part maps."""

from __future__ import annotations

import colorsys
import dataclasses
from typing import List, Tuple

import cv2
import numpy as np

from cyclecmda.data.demo.render import _grid, _horizon_mask, _parts
from cyclecmda.data.demo.scenes import Scene
from cyclecmda.errors import CycleCMDAError

PAIRS: Tuple[str, ...] = ("sketch", "night", "digits")
DIGIT_NAMES: Tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
N_HANDWRITTEN = 1797  # images in scikit-learn's load_digits
MAX_SIZE = 256

RGB = Tuple[float, float, float]
# image (H, W) or (H, W, 3) uint8 RGB, mask (H, W) uint8, label, boxes ([x, y, w, h] in pixels, class)
Item = Tuple[np.ndarray, np.ndarray, int, List[Tuple[List[int], int]]]

# Seed streams: default_rng([seed, stream, kind, index]); stream codes and scenes are the demo's,
# the kinds below are this module's own.
_STREAMS = {"trainA": 0, "trainB": 1, "test": 2}
_SKETCH, _NIGHT, _DIGIT, _DIGIT_CLASS, _DIGIT_SPLIT = 100, 101, 102, 103, 104
_SUPERSAMPLE = 4  # strokes and glyphs are drawn at 4x the image size, then area-averaged


class MissingExtraError(CycleCMDAError, ImportError):
    """An optional dependency of one pair is not installed."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """(size, size) float32 noise in [-1, 1], smooth over size / cells pixels."""
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), -1.0, 1.0)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v))
    return (r, g, b)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _scaled(scene: Scene, factor: int) -> Scene:
    """The same scene on a grid ``factor`` times finer."""
    objects = tuple(
        dataclasses.replace(o, cx=o.cx * factor, bottom=o.bottom * factor, extent=o.extent * factor)
        for o in scene.objects
    )
    return dataclasses.replace(scene, size=scene.size * factor, horizon=scene.horizon * factor, objects=objects)


def part_map(scene: Scene) -> np.ndarray:
    """(H, W) int16 id of the surface seen at each pixel: 0 sky, 1 ground, then one id per visible
    part of each object in draw order (parts without a colour, such as a car's engine, are not
    seen in a photo and get none)."""
    g = _grid(scene.size)
    ground = _horizon_mask(scene, g)[..., 0]
    coverage = [1.0 - ground, ground]
    for o in scene.objects:
        for part, alpha in _parts(g, o):
            if part in o.colours:
                coverage = [c * (1.0 - alpha) for c in coverage] + [alpha]
    return np.argmax(np.stack(coverage), axis=0).astype(np.int16)


def _background_alpha(scene: Scene) -> np.ndarray:
    """(H, W) float32 share of each pixel that no object covers."""
    g = _grid(scene.size)
    background: np.ndarray = np.ones((scene.size, scene.size), dtype=np.float32)
    for o in scene.objects:
        for part, alpha in _parts(g, o):
            if part in o.colours:
                background = background * (1.0 - alpha)
    return background
