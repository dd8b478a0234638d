"""The demo's scenes: classes, temperatures and colours of their objects, and drawing one scene's
random parameters (:func:`sample_scene`)."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

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
