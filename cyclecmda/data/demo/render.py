"""Rendering a demo scene: soft part masks from signed distances, the visible photo, the
thermal frame and the label masks, each a deterministic function of the scene."""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np

from cyclecmda.data.demo.scenes import B_RANGE, TEMPERATURE_RANGE_C, Scene, SceneObject, Texture, sample_scene

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
