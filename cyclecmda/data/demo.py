"""Built-in demo data: procedurally rendered, unpaired visible (A) <-> thermal infrared (B) scenes.

Each scene holds 1 to 3 objects of four classes standing on the ground under a sky. The visible
render is an 8-bit RGB photo (colours, textures, illumination gradient, colour noise); the
thermal render is a 16-bit radiometric frame whose raw counts depend only on each part's
temperature (textures and colours vanish; sensor noise, column fixed-pattern noise and blur are
its own). ``trainA`` and ``trainB`` show different scenes; ``testA`` and ``testB`` show the same
scenes under the same file names, so translation error can be measured exactly.

Random parameters are drawn once per scene (:func:`sample_scene`); rendering
(:func:`render_visible`, :func:`render_thermal`) is a deterministic function of the scene.
"""

from __future__ import annotations

import colorsys
import csv
import json
from dataclasses import dataclass, field
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cyclecmda.errors import ConfigError, DataError

__all__ = [
    "B_RANGE",
    "CLASS_NAMES",
    "MASK_CLASSES",
    "SPLITS",
    "TEMPERATURE_RANGE_C",
    "Scene",
    "SceneObject",
    "Texture",
    "demo_scene",
    "generate_demo_data",
    "object_masks",
    "render_scene",
    "render_temperature",
    "render_thermal",
    "render_visible",
    "scene_mask",
    "sample_scene",
    "temperature_to_counts",
]

CLASS_NAMES: Tuple[str, ...] = ("person", "car", "tree", "animal")
MASK_CLASSES: Tuple[str, ...] = ("background",) + CLASS_NAMES  # values of the masks/ label images
SPLITS: Tuple[str, ...] = ("trainA", "trainB", "testA", "testB")
TEMPERATURE_RANGE_C: Tuple[float, float] = (-20.0, 80.0)  # maps linearly onto B_RANGE
B_RANGE: Tuple[int, int] = (20000, 40000)  # raw counts of the demo thermal camera (of 0..65535)
MAX_COUNT = 99_999  # file names have five digits

RGB = Tuple[float, float, float]
HSVRange = Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]

# Seed streams: each image's scene comes from default_rng([seed, stream, kind, index]).
_STREAMS = {"trainA": 0, "trainB": 1, "test": 2}
_SCENE, _CLASS_BLOCK = 0, 1


# --------------------------------------------------------------------------------------------
# Scene parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Texture:
    """A multiplicative visible-only pattern: ``1 + amplitude * pattern`` with pattern in [-1, 1]."""

    kind: str = "plain"  # plain | stripes | checker | noise
    frequency: float = 4.0  # cycles (stripes, checker) or cells (noise) per image side
    angle: float = 0.0  # radians (stripes)
    phase: float = 0.0
    amplitude: float = 0.0
    seed: int = 0  # noise


@dataclass(frozen=True)
class SceneObject:
    """One object: where it stands, its size, and the colour and temperature of each part."""

    class_index: int
    cx: float  # horizontal centre, pixels
    bottom: float  # ground contact row, pixels
    extent: float  # characteristic size (height, or width of cars), pixels
    facing: int  # +1 right, -1 left (cars, animals)
    variant: int  # shape variant (trees: 0 conifer, 1 broadleaf)
    colours: Dict[str, RGB]  # part -> RGB in [0, 1]; parts absent here do not change the photo
    temperatures: Dict[str, float]  # part -> degC; parts absent here do not change the thermal
    texture: Texture = field(default_factory=Texture)  # on the object's main part

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_index]


@dataclass(frozen=True)
class Scene:
    """All random parameters of one scene; objects are in draw order, the main one last."""

    size: int
    horizon: float  # row of the horizon, pixels
    ambient: float  # degC
    sky_colours: Tuple[RGB, RGB]  # top, horizon
    ground_colours: Tuple[RGB, RGB]  # far (horizon), near (bottom)
    sky_texture: Texture
    ground_texture: Texture
    sky_temperatures: Tuple[float, float]  # top, horizon
    ground_temperatures: Tuple[float, float]  # far, near
    objects: Tuple[SceneObject, ...]
    illumination: Tuple[float, float, float]  # brightness, gradient strength, gradient angle
    noise_seed: int

    @property
    def label(self) -> int:
        """Class index of the main (largest, front-most) object."""
        return self.objects[-1].class_index


@dataclass(frozen=True)
class _ClassStyle:
    """Per-class parameter ranges: colour of each colour key, temperature of each part."""

    colour_keys: Dict[str, str]  # part -> colour key (parts sharing a key share a colour)
    colours: Dict[str, HSVRange]  # colour key -> HSV ranges in [0, 1]
    temperatures: Dict[str, Tuple[float, float]]  # part -> degC range
    relative: Tuple[str, ...] = ()  # parts whose temperature range is an offset from ambient
    textures: Tuple[str, ...] = ("plain",)
    variants: int = 1
    box: Tuple[float, float, float] = (0.5, 0.5, 1.0)  # back, front, height in units of extent


_ANY_HUE = (0.0, 1.0)
_STYLES: Dict[str, _ClassStyle] = {
    "person": _ClassStyle(
        colour_keys={"body": "clothes", "head": "skin"},
        colours={"clothes": (_ANY_HUE, (0.3, 0.9), (0.15, 0.95)), "skin": ((0.03, 0.1), (0.25, 0.6), (0.35, 0.95))},
        temperatures={"body": (29.0, 32.0), "head": (34.0, 36.5)},
        textures=("plain", "stripes", "checker"),
        box=(0.19, 0.19, 1.0),
    ),
    "car": _ClassStyle(
        colour_keys={"body": "paint", "cabin": "paint", "windows": "glass", "lights": "lights", "wheels": "tyre"},
        colours={
            "paint": (_ANY_HUE, (0.3, 1.0), (0.2, 0.95)),
            "glass": ((0.55, 0.65), (0.1, 0.4), (0.15, 0.4)),
            "lights": ((0.12, 0.16), (0.1, 0.5), (0.9, 1.0)),
            "tyre": (_ANY_HUE, (0.0, 0.1), (0.05, 0.15)),
        },
        temperatures={
            "body": (2.0, 6.0), "cabin": (1.0, 4.0), "windows": (-8.0, -4.0),  # windows mirror the cold sky
            "engine": (50.0, 70.0), "wheels": (30.0, 40.0),
        },
        relative=("body", "cabin", "windows"),
        textures=("plain", "stripes"),
        box=(0.5, 0.5, 0.52),
    ),
    "tree": _ClassStyle(
        colour_keys={"trunk": "bark", "foliage": "leaves"},
        colours={"leaves": ((0.2, 0.4), (0.45, 0.9), (0.2, 0.6)), "bark": ((0.05, 0.1), (0.4, 0.7), (0.2, 0.4))},
        temperatures={"foliage": (-4.0, -1.5), "trunk": (-1.0, 1.0)},
        relative=("foliage", "trunk"),
        textures=("noise",),
        variants=2,
        box=(0.33, 0.33, 1.0),
    ),
    "animal": _ClassStyle(
        colour_keys={"legs": "fur", "body": "fur", "head": "fur"},
        colours={"fur": ((0.02, 0.12), (0.0, 0.7), (0.1, 0.9))},
        temperatures={"legs": (28.0, 32.0), "body": (30.0, 34.0), "head": (34.0, 37.0)},
        textures=("plain", "noise", "checker"),
        box=(0.36, 0.53, 0.64),
    ),
}


def _rgb(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v))
    return (r, g, b)


def _hsv(rng: np.random.Generator, ranges: HSVRange) -> RGB:
    h, s, v = (float(rng.uniform(lo, hi)) for lo, hi in ranges)
    return _rgb(h, s, v)


def _texture(rng: np.random.Generator, kind: str, amplitude: Tuple[float, float]) -> Texture:
    frequency = float(rng.uniform(2.0, 5.0) if kind == "noise" else rng.uniform(3.0, 9.0))
    return Texture(
        kind=kind,
        frequency=frequency,
        angle=float(rng.uniform(0.0, np.pi)),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        amplitude=float(rng.uniform(*amplitude)) if kind != "plain" else 0.0,
        seed=int(rng.integers(2**31)),
    )


def _sample_object(
    rng: np.random.Generator, class_index: int, extent: float, ambient: float, size: int, horizon: float, main: bool
) -> SceneObject:
    style = _STYLES[CLASS_NAMES[class_index]]
    facing = int(rng.choice([-1, 1]))
    variant = int(rng.integers(style.variants))
    key_colours = {key: _hsv(rng, ranges) for key, ranges in style.colours.items()}
    colours = {part: key_colours[key] for part, key in style.colour_keys.items()}
    temperatures = {
        part: float(rng.uniform(lo, hi)) + (ambient if part in style.relative else 0.0)
        for part, (lo, hi) in style.temperatures.items()
    }
    texture = _texture(rng, str(rng.choice(style.textures)), (0.15, 0.35))
    back, front, height = style.box
    left, right = (back, front) if facing > 0 else (front, back)
    if main:  # fully inside the image, standing on the ground
        cx = float(rng.uniform(left * extent, size - right * extent))
        bottom = float(rng.uniform(min(max(horizon + 0.1 * size, height * extent), size), size))
    else:
        cx = float(rng.uniform(-0.1 * size, 1.1 * size))
        bottom = float(rng.uniform(horizon + 0.05 * size, 1.05 * size))
    return SceneObject(class_index, cx, bottom, extent, facing, variant, colours, temperatures, texture)


def sample_scene(rng: np.random.Generator, size: int, main_class: Optional[int] = None) -> Scene:
    """Draw the parameters of one random scene; ``main_class`` fixes the label."""
    if main_class is None:
        main_class = int(rng.integers(len(CLASS_NAMES)))
    horizon = float(rng.uniform(0.3, 0.55)) * size
    # A clear (deep blue) sky means a warmer day and a colder sky in thermal: the visible cue
    # that lets a translator predict the background temperatures.
    clearness = float(rng.uniform(0.0, 1.0))
    ambient = 12.0 + 6.0 * clearness + float(rng.normal(0.0, 0.3))

    sky_hue = rng.uniform(0.55, 0.62)
    sky_colours = (
        _rgb(sky_hue, 0.3 + 0.4 * clearness, rng.uniform(0.6, 0.9)),  # top
        _rgb(sky_hue, rng.uniform(0.05, 0.3), rng.uniform(0.85, 1.0)),  # horizon
    )
    ground_hue = rng.choice([rng.uniform(0.2, 0.33), rng.uniform(0.06, 0.1)])  # grass | soil
    ground_sat = rng.uniform(0.05, 0.7)
    ground_colours = (
        _rgb(ground_hue, ground_sat * 0.7, rng.uniform(0.4, 0.7)),  # far
        _rgb(ground_hue, ground_sat, rng.uniform(0.25, 0.55)),  # near
    )
    sky_texture = _texture(rng, str(rng.choice(["plain", "noise"])), (0.05, 0.2))
    ground_texture = _texture(rng, str(rng.choice(["stripes", "checker", "noise"])), (0.1, 0.3))
    sky_temperatures = (-8.0 - 7.0 * clearness + float(rng.normal(0.0, 0.3)), ambient - float(rng.uniform(5.0, 6.0)))
    ground_temperatures = (ambient - float(rng.uniform(0.5, 1.0)), ambient + float(rng.uniform(0.5, 1.0)))

    main_extent = float(rng.uniform(0.5, 0.8)) * size  # persons (narrowest) >= 19% of the width
    main = _sample_object(rng, main_class, main_extent, ambient, size, horizon, main=True)
    others = [
        _sample_object(
            rng, int(rng.integers(len(CLASS_NAMES))), float(rng.uniform(0.15 * size, 0.6 * main_extent)),
            ambient, size, horizon, main=False,
        )
        for _ in range(int(rng.integers(0, 3)))
    ]
    others.sort(key=lambda o: o.bottom)  # farther (higher up) first
    illumination = (float(rng.uniform(0.85, 1.1)), float(rng.uniform(0.0, 0.35)), float(rng.uniform(0.0, 2 * np.pi)))
    return Scene(
        size=size,
        horizon=horizon,
        ambient=ambient,
        sky_colours=sky_colours,
        ground_colours=ground_colours,
        sky_texture=sky_texture,
        ground_texture=ground_texture,
        sky_temperatures=sky_temperatures,
        ground_temperatures=ground_temperatures,
        objects=tuple(others) + (main,),
        illumination=illumination,
        noise_seed=int(rng.integers(2**31)),
    )


# --------------------------------------------------------------------------------------------
# Geometry: soft (anti-aliased) part masks from signed distances
# --------------------------------------------------------------------------------------------

Grid = Tuple[np.ndarray, np.ndarray]  # (yy, xx) pixel centres, float32


def _grid(size: int) -> Grid:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _coverage(distance: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - distance, 0.0, 1.0)


def _ellipse(g: Grid, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = g
    norm = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return _coverage((norm - 1.0) * min(rx, ry))


def _rect(g: Grid, x0: float, x1: float, y0: float, y1: float, radius: float = 0.0) -> np.ndarray:
    yy, xx = g
    x0, x1 = min(x0, x1), max(x0, x1)
    radius = min(radius, (x1 - x0) / 2, (y1 - y0) / 2)
    qx = np.abs(xx - (x0 + x1) / 2) - ((x1 - x0) / 2 - radius)
    qy = np.abs(yy - (y0 + y1) / 2) - ((y1 - y0) / 2 - radius)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return _coverage(outside + np.minimum(np.maximum(qx, qy), 0.0) - radius)


def _triangle(g: Grid, apex: Tuple[float, float], half_base: float, base_y: float) -> np.ndarray:
    yy, xx = g
    ax, ay = apex
    height = base_y - ay
    slant = np.hypot(half_base, height)
    left = ((xx - ax) * -height - (yy - ay) * half_base) / slant  # > 0 outside the left edge
    right = ((xx - ax) * height - (yy - ay) * half_base) / slant
    return _coverage(np.maximum(np.maximum(left, right), yy - base_y))


def _person(g: Grid, o: SceneObject) -> List[Tuple[str, np.ndarray]]:
    e, cx, b = o.extent, o.cx, o.bottom
    return [
        ("body", _ellipse(g, cx, b - 0.37 * e, 0.19 * e, 0.37 * e)),
        ("head", _ellipse(g, cx, b - 0.87 * e, 0.13 * e, 0.13 * e)),
    ]


def _car(g: Grid, o: SceneObject) -> List[Tuple[str, np.ndarray]]:
    e, cx, b, p = o.extent, o.cx, o.bottom, o.facing
    body = _rect(g, cx - 0.5 * e, cx + 0.5 * e, b - 0.36 * e, b - 0.1 * e, 0.07 * e)
    return [
        ("cabin", _rect(g, cx - p * 0.3 * e, cx + p * 0.18 * e, b - 0.52 * e, b - 0.32 * e, 0.06 * e)),
        ("body", body),
        ("windows", _rect(g, cx - p * 0.27 * e, cx + p * 0.15 * e, b - 0.49 * e, b - 0.37 * e, 0.03 * e)),
        ("engine", body * _rect(g, cx + p * 0.2 * e, cx + p * 0.5 * e, b - 0.36 * e, b - 0.1 * e)),  # under the hood
        ("lights", _rect(g, cx + p * 0.44 * e, cx + p * 0.5 * e, b - 0.3 * e, b - 0.22 * e)),
        ("wheels", np.maximum(_ellipse(g, cx - 0.3 * e, b - 0.1 * e, 0.1 * e, 0.1 * e),
                              _ellipse(g, cx + 0.3 * e, b - 0.1 * e, 0.1 * e, 0.1 * e))),
    ]


def _tree(g: Grid, o: SceneObject) -> List[Tuple[str, np.ndarray]]:
    e, cx, b = o.extent, o.cx, o.bottom
    if o.variant == 0:  # conifer
        foliage = _triangle(g, (cx, b - e), 0.3 * e, b - 0.15 * e)
    else:  # broadleaf
        foliage = _ellipse(g, cx, b - 0.62 * e, 0.33 * e, 0.38 * e)
    half = max(0.05 * e, 0.5)
    return [("trunk", _rect(g, cx - half, cx + half, b - 0.3 * e, b)), ("foliage", foliage)]


def _animal(g: Grid, o: SceneObject) -> List[Tuple[str, np.ndarray]]:
    e, cx, b, p = o.extent, o.cx, o.bottom, o.facing
    half = max(0.03 * e, 0.5)  # legs at least a pixel wide
    offsets = np.array([-0.25, -0.12, 0.12, 0.25]) * e
    legs = np.max([_rect(g, cx + dx - half, cx + dx + half, b - 0.38 * e, b) for dx in offsets], axis=0)
    return [
        ("legs", legs),
        ("body", _ellipse(g, cx, b - 0.38 * e, 0.35 * e, 0.17 * e)),
        ("head", _ellipse(g, cx + p * 0.42 * e, b - 0.52 * e, 0.11 * e, 0.11 * e)),
    ]


_SHAPES: Dict[str, Callable[[Grid, SceneObject], List[Tuple[str, np.ndarray]]]] = {
    "person": _person, "car": _car, "tree": _tree, "animal": _animal,
}
_TEXTURED_PART = {"person": "body", "car": "body", "tree": "foliage", "animal": "body"}


def _parts(g: Grid, o: SceneObject) -> List[Tuple[str, np.ndarray]]:
    return _SHAPES[o.class_name](g, o)


def object_masks(scene: Scene) -> np.ndarray:
    """(H, W) int16 index into ``scene.objects`` of the object that contributes most to each
    pixel (after occlusion); -1 is background."""
    g = _grid(scene.size)
    coverage = [np.ones((scene.size, scene.size), dtype=np.float32)]  # background, then objects
    for o in scene.objects:
        alpha = 1.0 - np.prod([1.0 - a for _, a in _parts(g, o)], axis=0)
        coverage = [c * (1.0 - alpha) for c in coverage] + [alpha]
    return (np.argmax(np.stack(coverage), axis=0) - 1).astype(np.int16)


def scene_mask(scene: Scene) -> np.ndarray:
    """(H, W) uint8 class of each pixel: 0 background, 1 + the class index of the object seen there."""
    classes = np.array([0] + [o.class_index + 1 for o in scene.objects], dtype=np.uint8)
    return classes[object_masks(scene) + 1]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _pattern(t: Texture, g: Grid, size: int) -> np.ndarray:
    """Texture multiplier, (H, W) float32 around 1."""
    yy, xx = g
    if t.kind == "plain" or t.amplitude == 0.0:
        return np.ones_like(xx)
    w = 2 * np.pi * t.frequency / size
    if t.kind == "stripes":
        p = np.sin(w * (xx * np.cos(t.angle) + yy * np.sin(t.angle)) + t.phase)
    elif t.kind == "checker":
        p = np.tanh(4.0 * np.sin(w * xx + t.phase) * np.sin(w * yy + t.phase))
    elif t.kind == "noise":
        cells = max(int(round(t.frequency)), 1)
        coarse = np.random.default_rng(t.seed).uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
        p = np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), -1.0, 1.0)
    else:
        raise ValueError(f"unknown texture kind {t.kind!r}")
    return (1.0 + t.amplitude * p).astype(np.float32)


def _vertical_blend(g: Grid, top: float, bottom: float, y0: float, y1: float) -> np.ndarray:
    yy, _ = g
    s = np.clip((yy - y0) / max(y1 - y0, 1e-6), 0.0, 1.0)
    return (top + (bottom - top) * s).astype(np.float32)


def _horizon_mask(scene: Scene, g: Grid) -> np.ndarray:
    return _coverage(scene.horizon - g[0])[..., None]  # 1 = ground


def render_visible(scene: Scene) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 RGB photo."""
    size, g = scene.size, _grid(scene.size)
    sky = np.stack([_vertical_blend(g, a, b, 0.0, scene.horizon) for a, b in zip(*scene.sky_colours)], axis=-1)
    sky = 1.0 - (1.0 - sky) / _pattern(scene.sky_texture, g, size)[..., None]  # clouds: lighter and darker patches
    ground = np.stack([_vertical_blend(g, a, b, scene.horizon, size) for a, b in zip(*scene.ground_colours)], axis=-1)
    ground = ground * _pattern(scene.ground_texture, g, size)[..., None]
    ground_alpha = _horizon_mask(scene, g)
    image = sky * (1.0 - ground_alpha) + ground * ground_alpha

    for o in scene.objects:
        texture = _pattern(o.texture, g, size)[..., None]
        for part, alpha in _parts(g, o):
            colour = o.colours.get(part)
            if colour is None:
                continue
            paint = np.asarray(colour, dtype=np.float32) * (texture if part == _TEXTURED_PART[o.class_name] else 1.0)
            a = alpha[..., None]
            image = image * (1.0 - a) + paint * a

    brightness, strength, angle = scene.illumination
    yy, xx = g
    ramp = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) / size
    image = image * (brightness * (1.0 + strength * ramp))[..., None]
    rng = np.random.default_rng([scene.noise_seed, 0])
    image = image + rng.normal(0.0, 0.015, image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def temperature_to_counts(temperature: np.ndarray) -> np.ndarray:
    """degC -> raw counts (float), TEMPERATURE_RANGE_C mapped linearly onto B_RANGE."""
    (t0, t1), (c0, c1) = TEMPERATURE_RANGE_C, B_RANGE
    return c0 + (np.asarray(temperature, dtype=np.float32) - t0) * ((c1 - c0) / (t1 - t0))


def render_temperature(scene: Scene) -> np.ndarray:
    """Noise-free (H, W) float32 temperature map of the scene, degC."""
    size, g = scene.size, _grid(scene.size)
    sky = _vertical_blend(g, *scene.sky_temperatures, 0.0, scene.horizon)
    ground = _vertical_blend(g, *scene.ground_temperatures, scene.horizon, size)
    ground_alpha = _horizon_mask(scene, g)[..., 0]
    temperature = sky * (1.0 - ground_alpha) + ground * ground_alpha
    for o in scene.objects:
        for part, alpha in _parts(g, o):
            t = o.temperatures.get(part)
            if t is not None:
                temperature = temperature * (1.0 - alpha) + t * alpha
    return temperature.astype(np.float32)


def render_thermal(scene: Scene) -> np.ndarray:
    """The scene as an (H, W) uint16 radiometric frame with values inside B_RANGE."""
    size = scene.size
    temperature = render_temperature(scene)
    temperature = cv2.GaussianBlur(temperature, (0, 0), sigmaX=0.6 * max(size / 64, 1.0))
    rng = np.random.default_rng([scene.noise_seed, 1])
    temperature = temperature + rng.normal(0.0, 0.15, (1, size)).astype(np.float32)  # column fixed pattern
    temperature = temperature + rng.normal(0.0, 0.2, (size, size)).astype(np.float32)
    counts = np.rint(temperature_to_counts(temperature))
    return np.clip(counts, *B_RANGE).astype(np.uint16)


def render_scene(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """One random scene in both modalities: (RGB uint8 (H, W, 3), thermal uint16 (H, W), label)."""
    scene = sample_scene(rng, size)
    return render_visible(scene), render_thermal(scene), scene.label


# --------------------------------------------------------------------------------------------
# Dataset on disk
# --------------------------------------------------------------------------------------------


def demo_scene(seed: int, stream: str, index: int, size: int) -> Scene:
    """The scene of image ``index`` in ``stream`` ('trainA', 'trainB' or 'test'); independent of counts."""
    if stream not in _STREAMS:
        raise ValueError(f"stream must be one of {sorted(_STREAMS)}, got {stream!r}")
    code = _STREAMS[stream]
    block, slot = divmod(index, len(CLASS_NAMES))  # classes balanced within every block
    order = np.random.default_rng([seed, code, _CLASS_BLOCK, block]).permutation(len(CLASS_NAMES))
    return sample_scene(np.random.default_rng([seed, code, _SCENE, index]), size, main_class=int(order[slot]))


def _check_int(name: str, value: int, minimum: int, maximum: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise DataError(f"could not write {path}")


def _write_labels(folder: Path, labels: Sequence[int]) -> None:
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "class_name"])
        for i, label in enumerate(labels):
            writer.writerow([f"{i:05d}.png", label, CLASS_NAMES[label]])


def _remove_stale(folder: Path, count: int) -> None:
    """Delete numbered images left by an earlier, larger generation into the same folder."""
    for path in folder.glob("[0-9][0-9][0-9][0-9][0-9].png"):
        if int(path.stem) >= count:
            path.unlink()


def generate_demo_data(
    out_dir: str | Path, n_train: int = 300, n_test: int = 60, size: int = 64, seed: int = 0
) -> dict:
    """Write the demo dataset (trainA/, trainB/, testA/, testB/ with labels.csv, masks/, dataset.json).

    trainA holds visible photos and trainB thermal frames of different scenes; testA/testB hold
    the same scenes in both modalities under the same file names. ``masks/<split>/`` holds a
    label PNG per image under the same name (0 background, 1 + class index of the object).
    Same arguments, same bytes.
    """
    _check_int("n_train", n_train, 1, MAX_COUNT)
    _check_int("n_test", n_test, 1, MAX_COUNT)
    _check_int("size", size, 16)
    _check_int("seed", seed, 0)
    n_train, n_test, size, seed = int(n_train), int(n_test), int(size), int(seed)
    root = Path(out_dir)
    dirs = {split: root / split for split in SPLITS}
    mask_dirs = {split: root / "masks" / split for split in SPLITS}
    for d in (*dirs.values(), *mask_dirs.values()):
        d.mkdir(parents=True, exist_ok=True)

    labels: Dict[str, List[int]] = {split: [] for split in SPLITS}

    def write(split: str, i: int, scene: Scene, image: np.ndarray) -> None:
        _write_png(dirs[split] / f"{i:05d}.png", image)
        _write_png(mask_dirs[split] / f"{i:05d}.png", scene_mask(scene))
        labels[split].append(scene.label)

    for i in range(n_train):
        scene = demo_scene(seed, "trainA", i, size)
        write("trainA", i, scene, cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR))
        scene = demo_scene(seed, "trainB", i, size)
        write("trainB", i, scene, render_thermal(scene))
    for i in range(n_test):
        scene = demo_scene(seed, "test", i, size)
        write("testA", i, scene, cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR))
        write("testB", i, scene, render_thermal(scene))
    for split in SPLITS:
        _write_labels(dirs[split], labels[split])
        _remove_stale(dirs[split], len(labels[split]))
        _remove_stale(mask_dirs[split], len(labels[split]))

    counts = {split: len(labels[split]) for split in SPLITS}
    classes = [{"index": i, "name": name} for i, name in enumerate(CLASS_NAMES)]
    meta = {
        "name": "cyclecmda-demo",
        "description": "A: visible RGB photos (8-bit); B: thermal frames (16-bit raw counts). "
        "trainA/trainB unpaired; testA/testB paired by file name.",
        "classes": classes,
        "mask_classes": [{"value": i, "name": name} for i, name in enumerate(MASK_CLASSES)],
        "masks": {split: f"masks/{split}" for split in SPLITS},
        "image_size": [size, size],
        "seed": seed,
        "counts": counts,
        "a": {"channels": 3, "bit_depth": 8, "modality": "visible"},
        "b": {"channels": 1, "bit_depth": 16, "modality": "thermal", "temperature_range_c": list(TEMPERATURE_RANGE_C)},
        "b_range": list(B_RANGE),
        "paired": ["testA", "testB"],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {
        "root": str(root),
        "dirs": {split: str(d) for split, d in dirs.items()},
        "counts": counts,
        "classes": list(CLASS_NAMES),
        "b_range": list(B_RANGE),
        "image_size": size,
        "seed": seed,
    }


def ensure_demo_data(demo_dir: str) -> None:
    """Generate the built-in demo data into ``demo_dir`` (``data.demo_dir``) when it is set and absent."""
    if not demo_dir or (Path(demo_dir) / "dataset.json").is_file():
        return
    print(f"generating the demo dataset in {demo_dir} ...", file=sys.stderr, flush=True)
    generate_demo_data(demo_dir)
