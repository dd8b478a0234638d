"""The night pair's B side: demo scenes at night through another camera."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from cyclecmda.data.demo.render import _grid, _horizon_mask, render_visible
from cyclecmda.data.demo.scenes import Scene
from cyclecmda.data.pairs.common import RGB, _background_alpha, _hsv, _to_uint8

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
