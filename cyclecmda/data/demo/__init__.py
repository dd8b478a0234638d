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

import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cyclecmda.data.demo.render import (
    object_masks,
    render_scene,
    render_temperature,
    render_thermal,
    render_visible,
    scene_mask,
    temperature_to_counts,
)
from cyclecmda.data.demo.scenes import (
    _CLASS_BLOCK,
    _SCENE,
    _STREAMS,
    B_RANGE,
    CLASS_NAMES,
    MASK_CLASSES,
    MAX_COUNT,
    SPLITS,
    TEMPERATURE_RANGE_C,
    Scene,
    SceneObject,
    Texture,
    sample_scene,
)
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
    "scene_boxes",
    "scene_mask",
    "sample_scene",
    "temperature_to_counts",
]


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


Boxes = List[Tuple[List[int], int]]  # [x, y, width, height] in whole pixels, class index
MIN_BOX_PIXELS = 4  # an object showing fewer pixels than this (almost hidden) gets no box


def scene_boxes(scene: Scene) -> Boxes:
    """The box of every object of a scene that shows at least ``MIN_BOX_PIXELS`` pixels: its visible
    pixels' extent ``[x, y, width, height]`` (COCO's order, whole pixels) and its class index."""
    owner = object_masks(scene)
    boxes = []
    for k, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(owner == k)
        if len(rows) >= MIN_BOX_PIXELS:
            x0, y0 = int(cols.min()), int(rows.min())
            boxes.append(([x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0], obj.class_index))
    return boxes


def write_coco(path: Path, images: Sequence[Tuple[str, int, Boxes]], classes: Sequence[str]) -> None:
    """One split's boxes as a COCO file: (file name, square size, boxes) per image; category ids
    are 1 + the class index."""
    entries: List[Dict[str, object]] = []
    annotations: List[Dict[str, object]] = []
    for image_id, (name, size, boxes) in enumerate(images, 1):
        entries.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for box, cls in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}) + "\n",
                    encoding="utf-8")


def layout_meta(classes: Sequence[str], mask_classes: Sequence[str], size: int, seed: int,
                counts: Dict[str, int]) -> Dict[str, object]:
    """What ``dataset.json`` says of the folder layout the demo and the domain pairs share."""
    return {
        "classes": [{"index": i, "name": name} for i, name in enumerate(classes)],
        "mask_classes": [{"value": i, "name": name} for i, name in enumerate(mask_classes)],
        "masks": {split: f"masks/{split}" for split in SPLITS},
        "boxes": {split: f"boxes/{split}.json" for split in SPLITS},
        "image_size": [size, size],
        "seed": seed,
        "counts": counts,
    }


def _remove_stale(folder: Path, count: int) -> None:
    """Delete numbered images left by an earlier, larger generation into the same folder."""
    for path in folder.glob("[0-9][0-9][0-9][0-9][0-9].png"):
        if int(path.stem) >= count:
            path.unlink()


def generate_demo_data(
    out_dir: str | Path, n_train: int = 300, n_test: int = 60, size: int = 64, seed: int = 0
) -> dict:
    """Write the demo dataset (trainA/, trainB/, testA/, testB/ with labels.csv, masks/, boxes/,
    dataset.json).

    trainA holds visible photos and trainB thermal frames of different scenes; testA/testB hold
    the same scenes in both modalities under the same file names. ``masks/<split>/`` holds a
    label PNG per image under the same name (0 background, 1 + class index of the object), and
    ``boxes/<split>.json`` the box of every object seen in each image (COCO). Same arguments,
    same bytes.
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
    boxes: Dict[str, List[Tuple[str, int, Boxes]]] = {split: [] for split in SPLITS}

    def write(split: str, i: int, scene: Scene, image: np.ndarray) -> None:
        _write_png(dirs[split] / f"{i:05d}.png", image)
        _write_png(mask_dirs[split] / f"{i:05d}.png", scene_mask(scene))
        labels[split].append(scene.label)
        boxes[split].append((f"{i:05d}.png", scene.size, scene_boxes(scene)))

    for i in range(n_train):
        scene = demo_scene(seed, "trainA", i, size)
        write("trainA", i, scene, cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR))
        scene = demo_scene(seed, "trainB", i, size)
        write("trainB", i, scene, render_thermal(scene))
    for i in range(n_test):
        scene = demo_scene(seed, "test", i, size)
        write("testA", i, scene, cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR))
        write("testB", i, scene, render_thermal(scene))
    (root / "boxes").mkdir(exist_ok=True)
    for split in SPLITS:
        _write_labels(dirs[split], labels[split])
        write_coco(root / "boxes" / f"{split}.json", boxes[split], CLASS_NAMES)
        _remove_stale(dirs[split], len(labels[split]))
        _remove_stale(mask_dirs[split], len(labels[split]))

    counts = {split: len(labels[split]) for split in SPLITS}
    meta = {
        "name": "cyclecmda-demo",
        "description": "A: visible RGB photos (8-bit); B: thermal frames (16-bit raw counts). "
        "trainA/trainB unpaired; testA/testB paired by file name.",
        **layout_meta(CLASS_NAMES, MASK_CLASSES, size, seed, counts),
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
