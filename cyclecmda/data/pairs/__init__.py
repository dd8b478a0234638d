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

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cyclecmda.data.demo import (
    MAX_COUNT,
    _check_int,
    _remove_stale,
    _write_png,
    demo_scene,
    layout_meta,
    scene_boxes,
    write_coco,
)
from cyclecmda.data.demo.render import render_visible, scene_mask
from cyclecmda.data.demo.scenes import CLASS_NAMES, SPLITS, Scene
from cyclecmda.data.pairs.common import (
    _DIGIT,
    _DIGIT_CLASS,
    _NIGHT,
    _SKETCH,
    _STREAMS,
    DIGIT_NAMES,
    MAX_SIZE,
    N_HANDWRITTEN,
    PAIRS,
    Item,
    MissingExtraError,
    _to_uint8,
    part_map,
)
from cyclecmda.data.pairs.digits import (
    PrintedDigit,
    _handwritten_split,
    _render_handwritten,
    handwritten_digits,
    render_printed_digit,
    sample_printed_digit,
)
from cyclecmda.data.pairs.night import Lamp, NightLook, render_night, sample_night_look
from cyclecmda.data.pairs.sketch import SketchStyle, render_sketch, sample_sketch_style
from cyclecmda.errors import ConfigError

__all__ = [
    "DIGIT_NAMES",
    "PAIRS",
    "Lamp",
    "MissingExtraError",
    "N_HANDWRITTEN",
    "NightLook",
    "PrintedDigit",
    "SketchStyle",
    "generate_pair",
    "handwritten_digits",
    "part_map",
    "render_night",
    "render_printed_digit",
    "render_sketch",
    "sample_night_look",
    "sample_printed_digit",
    "sample_sketch_style",
]


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
    return render_visible(scene), scene_mask(scene), scene.label, scene_boxes(scene)


def _scene_pair_items(kind: int, render: Callable[[Scene, np.random.Generator], np.ndarray]) -> Callable:
    def items(seed: int, size: int, n_train: int, n_test: int) -> Dict[str, Callable[[int], Item]]:
        def b_item(stream: str, i: int) -> Item:
            scene = demo_scene(seed, stream, i, size)
            rng = np.random.default_rng([seed, _STREAMS[stream], kind, i])
            return render(scene, rng), scene_mask(scene), scene.label, scene_boxes(scene)

        return {
            "trainA": lambda i: _visible_item(seed, "trainA", size, i),
            "trainB": lambda i: b_item("trainB", i),
            "testA": lambda i: _visible_item(seed, "test", size, i),
            "testB": lambda i: b_item("test", i),
        }

    return items


def _digit_mask(coverage: np.ndarray, digit: int) -> np.ndarray:
    return np.where(coverage >= 0.5, digit + 1, 0).astype(np.uint8)


def _digit_item(image: np.ndarray, mask: np.ndarray, digit: int) -> Item:
    """A digit image with its mask, class and box: the extent of its ink (mask) pixels."""
    rows, cols = np.nonzero(mask)
    x0, y0 = int(cols.min()), int(rows.min())
    box = [x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0]
    return image, mask, digit, [(box, digit)]


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
        return _digit_item(image, _digit_mask(coverage, d.digit), d.digit)

    def handwritten(split: str, i: int) -> Item:
        j = int(chosen[split][i])
        coverage = _render_handwritten(ink[j], size)
        return _digit_item(_to_uint8(1.0 - coverage), _digit_mask(coverage, int(labels[j])), int(labels[j]))

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
        boxes = []
        for i in range(counts[split]):
            image, mask, label, objects = items[split](i)
            _write_png(folder / f"{i:05d}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
            _write_png(mask_folder / f"{i:05d}.png", mask)
            labels.append(label)
            boxes.append((f"{i:05d}.png", size, objects))
        _write_labels(folder, labels, pair.classes)
        (root / "boxes").mkdir(exist_ok=True)
        write_coco(root / "boxes" / f"{split}.json", boxes, pair.classes)
        _remove_stale(folder, counts[split])
        _remove_stale(mask_folder, counts[split])

    mask_classes = ("background",) + tuple(pair.classes)
    meta = {
        "name": f"cyclecmda-pair-{name}",
        "description": pair.description,
        **layout_meta(pair.classes, mask_classes, size, seed, counts),
        "a": pair.a,
        "b": pair.b,
        "paired": ["testA", "testB"] if pair.paired else [],
        "ceiling_only": ["trainB/labels.csv", "masks/trainB", "boxes/trainB.json"],  # never for training a translator
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
