"""More domain pairs beside the demo, generated offline in the demo's layout: sketch, night, digits.

Each pair writes ``trainA/ trainB/ testA/ testB/`` (numbered PNGs and a ``labels.csv`` each),
``masks/<split>/`` (a label PNG per image: 0 background, 1 + the class index) and ``dataset.json``,
exactly as :func:`cyclecmda.data.demo.generate_demo_data` does. trainB's labels and masks are there for
the ceiling measurement only (a downstream model trained on real labelled B images); a translator
never trains on them.

- ``sketch``: A the demo's visible photos; B line drawings of other demo scenes (1-channel
  8-bit): dark strokes on light paper along every visible part's outline and the horizon, of
  varying width and pressure, wobbling off the exact geometry; no fills. testA/testB are paired.
- ``night``: A the demo's visible day photos; B other demo scenes at night through another camera
  (8-bit RGB): moonlight, sodium and LED lamp pools, a dark sky, vignetting, low-light sensor
  noise. Appearance changes, outlines do not. testA/testB are paired.
- ``digits``: A printed digits in Pillow's bundled font (8-bit RGB, dark ink on coloured paper);
  B real handwritten digits from scikit-learn's ``load_digits`` (8x8 scans upscaled, 1-channel
  8-bit), split deterministically into trainB and testB. Not paired.

Random parameters are drawn once per image (:func:`sample_sketch_style`, :func:`sample_night_look`,
:func:`sample_printed_digit`); rendering is a deterministic function of them. Same arguments, same
bytes.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import dataclasses
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cyclecmda.data.demo import MAX_COUNT, _check_int, _remove_stale, _write_png, demo_scene
from cyclecmda.data.demo.render import _grid, _horizon_mask, _parts, render_visible, scene_mask
from cyclecmda.data.demo.scenes import CLASS_NAMES, SPLITS, Scene
from cyclecmda.errors import CycleCMDAError, ConfigError

__all__ = [
    "DIGIT_NAMES",
    "PAIRS",
    "Lamp",
    "MissingExtraError",
    "NightLook",
    "PrintedDigit",
    "SketchStyle",
    "build_parser",
    "generate_pair",
    "handwritten_digits",
    "main",
    "part_map",
    "render_night",
    "render_printed_digit",
    "render_sketch",
    "sample_night_look",
    "sample_printed_digit",
    "sample_sketch_style",
]

PAIRS: Tuple[str, ...] = ("sketch", "night", "digits")
DIGIT_NAMES: Tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
N_HANDWRITTEN = 1797  # images in scikit-learn's load_digits
MAX_SIZE = 256

RGB = Tuple[float, float, float]
Item = Tuple[np.ndarray, np.ndarray, int]  # image (H, W) or (H, W, 3) uint8 RGB, mask (H, W) uint8, label

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


# --------------------------------------------------------------------------------------------
# sketch: line drawings of the demo scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SketchStyle:
    """How one drawing is drawn: strokes, their wobble off the geometry, the paper."""

    width: float  # stroke half-width, image pixels
    width_variation: float  # relative change of the width along the strokes
    wobble: float  # how far the drawn outlines wander off the true ones, image pixels
    ink: float  # darkness of a full stroke in [0, 1] (pencil ~0.6, pen ~0.9)
    pressure_variation: float  # relative lightening of the strokes where the hand eases off
    paper: float  # paper brightness in [0, 1]
    paper_texture: float  # amplitude of the paper's blotches and grain
    seed: int  # the noise fields


def sample_sketch_style(rng: np.random.Generator) -> SketchStyle:
    """Draw the parameters of one drawing."""
    return SketchStyle(
        width=float(rng.uniform(0.4, 0.65)),
        width_variation=float(rng.uniform(0.2, 0.5)),
        wobble=float(rng.uniform(0.3, 0.8)),
        ink=float(rng.uniform(0.6, 0.9)),
        pressure_variation=float(rng.uniform(0.1, 0.4)),
        paper=float(rng.uniform(0.88, 0.97)),
        paper_texture=float(rng.uniform(0.01, 0.03)),
        seed=int(rng.integers(2**31)),
    )


def render_sketch(scene: Scene, style: SketchStyle) -> np.ndarray:
    """The scene as an (H, W) uint8 line drawing: dark strokes along the outline of every visible
    part and the horizon, on light paper."""
    size, k = scene.size, _SUPERSAMPLE
    n = size * k
    rng = np.random.default_rng(style.seed)
    ids: np.ndarray = part_map(_scaled(scene, k)).astype(np.float32)
    # The hand: outlines wander smoothly off the geometry (a slow drift and a faster tremor).
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    drift = style.wobble * k
    dx = drift * (0.75 * _smooth_noise(rng, 3, n) + 0.25 * _smooth_noise(rng, 12, n))
    dy = drift * (0.75 * _smooth_noise(rng, 3, n) + 0.25 * _smooth_noise(rng, 12, n))
    ids = cv2.remap(ids, xx + dx, yy + dy, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    edges = np.zeros((n, n), dtype=bool)
    across, down = ids[:, 1:] != ids[:, :-1], ids[1:, :] != ids[:-1, :]
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    edges[1:, :] |= down
    edges[:-1, :] |= down
    distance = cv2.distanceTransform(np.where(edges, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    half_width = style.width * k * (1.0 + style.width_variation * _smooth_noise(rng, 6, n))
    cover = np.clip(half_width - distance, 0.0, 1.0)
    pressure = style.ink * (1.0 - style.pressure_variation * (0.5 + 0.5 * _smooth_noise(rng, 5, n)))
    stroke = cv2.resize(cover * pressure, (size, size), interpolation=cv2.INTER_AREA)

    paper = style.paper + style.paper_texture * (
        _smooth_noise(rng, 4, size) + 0.5 * rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    )
    return _to_uint8(paper * (1.0 - stroke))


# --------------------------------------------------------------------------------------------
# night: the demo scenes at night through another camera
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lamp:
    """A street lamp's pool of light on the ground."""

    x: float  # centre, pixels
    y: float
    radius: float  # horizontal radius (1 sigma), pixels; the pool is half as tall
    intensity: float  # linear light at the centre
    colour: RGB


@dataclass(frozen=True)
class NightLook:
    """The light of one night scene and the camera that takes it."""

    moon: float  # linear moonlight level
    moon_colour: RGB
    lamps: Tuple[Lamp, ...]
    sky_top: RGB  # linear
    sky_horizon: RGB  # linear: the town's glow near the horizon
    white_balance: RGB  # the camera's channel gains
    vignette: float  # light lost in the corners
    blur: float  # lens blur sigma, pixels
    shot_noise: float  # photon noise: variance per unit of linear signal
    read_noise: float  # linear sigma, per channel
    noise_seed: int


_SODIUM: RGB = (1.0, 0.55, 0.2)
_LED: RGB = (0.85, 0.88, 1.0)


def sample_night_look(rng: np.random.Generator, scene: Scene) -> NightLook:
    """Draw the light and the camera of one night photo of ``scene`` (the lamps stand on its ground)."""
    size, horizon = scene.size, scene.horizon
    lamps = []
    for _ in range(int(rng.integers(1, 4))):
        colour = _SODIUM if rng.uniform() < 0.7 else _LED
        tint = rng.uniform(0.9, 1.1, 3)
        lamps.append(Lamp(
            x=float(rng.uniform(-0.1, 1.1) * size),
            y=float(rng.uniform(horizon + 0.1 * (size - horizon), size)),
            radius=float(rng.uniform(0.15, 0.35) * size),
            intensity=float(rng.uniform(0.6, 1.5)),
            colour=(colour[0] * tint[0], colour[1] * tint[1], colour[2] * tint[2]),
        ))
    return NightLook(
        moon=float(rng.uniform(0.08, 0.2)),
        moon_colour=_hsv(rng.uniform(0.58, 0.66), rng.uniform(0.5, 0.75), 1.0),
        lamps=tuple(lamps),
        sky_top=_hsv(rng.uniform(0.6, 0.68), rng.uniform(0.6, 0.9), rng.uniform(0.003, 0.01)),
        sky_horizon=_hsv(rng.uniform(0.04, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.03, 0.08)),
        white_balance=(float(rng.uniform(0.9, 1.1)), 1.0, float(rng.uniform(0.9, 1.2))),
        vignette=float(rng.uniform(0.35, 0.6)),
        blur=float(rng.uniform(0.3, 0.5)),
        shot_noise=float(rng.uniform(0.0005, 0.0015)),
        read_noise=float(rng.uniform(0.0005, 0.0015)),
        noise_seed=int(rng.integers(2**31)),
    )


def render_night(scene: Scene, look: NightLook) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 RGB night photo."""
    size = scene.size
    yy, xx = _grid(size)
    # Colours of the scene's surfaces: the day photo under flat light, in linear units.
    day = render_visible(dataclasses.replace(scene, illumination=(1.0, 0.0, 0.0)))
    albedo = (day.astype(np.float32) / 255.0) ** 2.2

    light = np.broadcast_to(np.float32(look.moon) * np.asarray(look.moon_colour, np.float32), (size, size, 3)).copy()
    haze = np.zeros((size, size, 3), dtype=np.float32)
    for lamp in look.lamps:
        d2 = ((xx - lamp.x) / lamp.radius) ** 2 + ((yy - lamp.y) / (0.5 * lamp.radius)) ** 2
        colour = np.asarray(lamp.colour, np.float32)
        light += (lamp.intensity * np.exp(-0.5 * d2))[..., None] * colour
        spread = ((xx - lamp.x) ** 2 + (yy - lamp.y) ** 2) / (2.0 * lamp.radius) ** 2
        haze += (0.03 * lamp.intensity * np.exp(-0.5 * spread))[..., None] * colour

    rows = np.clip(yy / max(scene.horizon, 1e-6), 0.0, 1.0)[..., None] ** 2
    sky = np.asarray(look.sky_top, np.float32) * (1.0 - rows) + np.asarray(look.sky_horizon, np.float32) * rows
    sky_alpha = ((1.0 - _horizon_mask(scene, (yy, xx))[..., 0]) * _background_alpha(scene))[..., None]
    image = albedo * light * (1.0 - sky_alpha) + sky * sky_alpha + haze

    radius2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2 / 2.0  # 1 in the corners
    image = image * (1.0 - look.vignette * radius2)[..., None] * np.asarray(look.white_balance, np.float32)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=look.blur)
    rng = np.random.default_rng(look.noise_seed)
    sigma = np.sqrt(look.shot_noise * np.maximum(image, 0.0) + look.read_noise**2)
    image = image + sigma * rng.standard_normal(image.shape).astype(np.float32)
    return _to_uint8(np.clip(image, 0.0, 1.0) ** (1.0 / 2.2))


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


# --------------------------------------------------------------------------------------------
# The pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    description: str
    classes: Tuple[str, ...]
    a: Dict[str, Any]
    b: Dict[str, Any]
    paired: bool  # testA/testB show the same scenes under the same names
    n_train: int
    n_test: int
    size: int
    # (seed, size, n_train, n_test) -> {split: index -> (image, mask, label)}
    items: Callable[[int, int, int, int], Dict[str, Callable[[int], Item]]]


def _visible_item(seed: int, stream: str, size: int, i: int) -> Item:
    scene = demo_scene(seed, stream, i, size)
    return render_visible(scene), scene_mask(scene), scene.label


def _scene_pair_items(kind: int, render: Callable[[Scene, np.random.Generator], np.ndarray]) -> Callable:
    def items(seed: int, size: int, n_train: int, n_test: int) -> Dict[str, Callable[[int], Item]]:
        def b_item(stream: str, i: int) -> Item:
            scene = demo_scene(seed, stream, i, size)
            rng = np.random.default_rng([seed, _STREAMS[stream], kind, i])
            return render(scene, rng), scene_mask(scene), scene.label

        return {
            "trainA": lambda i: _visible_item(seed, "trainA", size, i),
            "trainB": lambda i: b_item("trainB", i),
            "testA": lambda i: _visible_item(seed, "test", size, i),
            "testB": lambda i: b_item("test", i),
        }

    return items


def _digit_mask(coverage: np.ndarray, digit: int) -> np.ndarray:
    return np.where(coverage >= 0.5, digit + 1, 0).astype(np.uint8)


def _digits_items(seed: int, size: int, n_train: int, n_test: int) -> Dict[str, Callable[[int], Item]]:
    ink, labels = handwritten_digits()
    order = _handwritten_split(labels, seed)
    # trainB from the front of the order, testB from its end: the test set does not move with n_train
    chosen = {"trainB": order[:n_train], "testB": order[len(order) - n_test:]}

    def printed(stream: str, i: int) -> Item:
        block, slot = divmod(i, len(DIGIT_NAMES))  # classes balanced within every block
        classes = np.random.default_rng([seed, _STREAMS[stream], _DIGIT_CLASS, block]).permutation(len(DIGIT_NAMES))
        d = sample_printed_digit(np.random.default_rng([seed, _STREAMS[stream], _DIGIT, i]), int(classes[slot]))
        image, coverage = render_printed_digit(d, size)
        return image, _digit_mask(coverage, d.digit), d.digit

    def handwritten(split: str, i: int) -> Item:
        j = int(chosen[split][i])
        coverage = _render_handwritten(ink[j], size)
        return _to_uint8(1.0 - coverage), _digit_mask(coverage, int(labels[j])), int(labels[j])

    return {
        "trainA": lambda i: printed("trainA", i),
        "trainB": lambda i: handwritten("trainB", i),
        "testA": lambda i: printed("test", i),
        "testB": lambda i: handwritten("testB", i),
    }


_PAIRS: Dict[str, _Pair] = {
    "sketch": _Pair(
        description="A: the demo's visible RGB photos (8-bit); B: line drawings of other demo scenes "
        "(1-channel 8-bit: dark strokes on light paper along every part's outline and the horizon). "
        "trainA/trainB unpaired; testA/testB paired by file name.",
        classes=CLASS_NAMES,
        a={"channels": 3, "bit_depth": 8, "modality": "visible"},
        b={"channels": 1, "bit_depth": 8, "modality": "sketch"},
        paired=True, n_train=600, n_test=200, size=32,
        items=_scene_pair_items(_SKETCH, lambda scene, rng: render_sketch(scene, sample_sketch_style(rng))),
    ),
    "night": _Pair(
        description="A: the demo's visible RGB day photos (8-bit); B: other demo scenes at night through "
        "another camera (8-bit RGB: moonlight, lamp pools, dark sky, vignetting, sensor noise). "
        "trainA/trainB unpaired; testA/testB paired by file name.",
        classes=CLASS_NAMES,
        a={"channels": 3, "bit_depth": 8, "modality": "visible day"},
        b={"channels": 3, "bit_depth": 8, "modality": "visible night"},
        paired=True, n_train=600, n_test=200, size=32,
        items=_scene_pair_items(_NIGHT, lambda scene, rng: render_night(scene, sample_night_look(rng, scene))),
    ),
    "digits": _Pair(
        description="A: printed digits in Pillow's bundled font (RGB 8-bit, dark ink on coloured paper); "
        "B: handwritten digits from scikit-learn's load_digits (8x8 scans upscaled; 1-channel 8-bit, "
        "dark ink on white). trainB and testB are disjoint; no split is paired.",
        classes=DIGIT_NAMES,
        a={"channels": 3, "bit_depth": 8, "modality": "printed"},
        b={"channels": 1, "bit_depth": 8, "modality": "handwritten",
           "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)"},
        paired=False, n_train=1000, n_test=797, size=32,
        items=_digits_items,
    ),
}


def _write_labels(folder: Path, labels: Sequence[int], classes: Sequence[str]) -> None:
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "class_name"])
        for i, label in enumerate(labels):
            writer.writerow([f"{i:05d}.png", label, classes[label]])


def generate_pair(
    name: str,
    out_dir: str | Path,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    size: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """Write domain pair ``name`` (one of :data:`PAIRS`) into ``out_dir`` in the demo's layout.

    ``trainA/ trainB/ testA/ testB/`` with ``labels.csv``, ``masks/<split>/`` and ``dataset.json``;
    ``n_train``, ``n_test`` and ``size`` default to the pair's own (sketch and night: 600, 200,
    32; digits: 1000, 797, 32: every handwritten digit, trainB and testB disjoint). Same
    arguments, same bytes.
    """
    if name not in _PAIRS:
        raise ConfigError(f"unknown domain pair {name!r}; choose one of: {', '.join(PAIRS)}")
    pair = _PAIRS[name]
    n_train = pair.n_train if n_train is None else n_train
    n_test = pair.n_test if n_test is None else n_test
    size = pair.size if size is None else size
    _check_int("n_train", n_train, 1, MAX_COUNT)
    _check_int("n_test", n_test, 1, MAX_COUNT)
    _check_int("size", size, 16, MAX_SIZE)
    _check_int("seed", seed, 0)
    n_train, n_test, size, seed = int(n_train), int(n_test), int(size), int(seed)
    if name == "digits" and n_train + n_test > N_HANDWRITTEN:
        raise ConfigError(f"n_train + n_test must be at most {N_HANDWRITTEN} for the digits pair (the handwritten "
                          f"digits trainB and testB are drawn from, without overlap), got {n_train} + {n_test}")
    items = pair.items(seed, size, n_train, n_test)

    root = Path(out_dir)
    counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
    for split in SPLITS:
        folder, mask_folder = root / split, root / "masks" / split
        folder.mkdir(parents=True, exist_ok=True)
        mask_folder.mkdir(parents=True, exist_ok=True)
        labels: List[int] = []
        for i in range(counts[split]):
            image, mask, label = items[split](i)
            _write_png(folder / f"{i:05d}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
            _write_png(mask_folder / f"{i:05d}.png", mask)
            labels.append(label)
        _write_labels(folder, labels, pair.classes)
        _remove_stale(folder, counts[split])
        _remove_stale(mask_folder, counts[split])

    mask_classes = ("background",) + tuple(pair.classes)
    meta = {
        "name": f"cyclecmda-pair-{name}",
        "description": pair.description,
        "classes": [{"index": i, "name": c} for i, c in enumerate(pair.classes)],
        "mask_classes": [{"value": i, "name": c} for i, c in enumerate(mask_classes)],
        "masks": {split: f"masks/{split}" for split in SPLITS},
        "image_size": [size, size],
        "seed": seed,
        "counts": counts,
        "a": pair.a,
        "b": pair.b,
        "paired": ["testA", "testB"] if pair.paired else [],
        "ceiling_only": ["trainB/labels.csv", "masks/trainB"],  # never for training a translator
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {
        "name": name,
        "root": str(root),
        "dirs": {split: str(root / split) for split in SPLITS},
        "counts": counts,
        "classes": list(pair.classes),
        "mask_classes": list(mask_classes),
        "image_size": size,
        "seed": seed,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cyclecmda.data.pairs", description="Generate a domain pair "
                                     "(demo layout: trainA/ trainB/ testA/ testB/, masks/, dataset.json).")
    parser.add_argument("name", choices=PAIRS, help="sketch: photos <-> line drawings; night: day <-> night photos; "
                        "digits: printed <-> handwritten digits (needs the [pairs] extra)")
    parser.add_argument("--out", help="output folder (default data/pairs/NAME)")
    parser.add_argument("--n-train", type=int, help="images in trainA and in trainB (default: the pair's)")
    parser.add_argument("--n-test", type=int, help="images in testA and in testB (default: the pair's)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cyclecmda.data.pairs NAME [--out DIR] [--n-train N] [--n-test N] [--size PX] [--seed S]``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    out = args.out or str(Path("data") / "pairs" / args.name)
    try:
        summary = generate_pair(args.name, out, n_train=args.n_train, n_test=args.n_test, size=args.size,
                                seed=args.seed)
    except CycleCMDAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {n}" for split, n in summary["counts"].items())
    print(f"{args.name} pair written to {out} ({counts}; {summary['image_size']} px, seed {summary['seed']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
