"""The sketch pair's B side: line drawings of demo scenes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cyclecmda.data.demo.scenes import Scene
from cyclecmda.data.pairs.common import _SUPERSAMPLE, _scaled, _smooth_noise, _to_uint8, part_map

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
