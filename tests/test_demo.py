"""The built-in demo dataset: layout, formats, pairing, determinism and thermal physics."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from cyclecmda.data.demo import (
    B_RANGE,
    CLASS_NAMES,
    SPLITS,
    Texture,
    demo_scene,
    generate_demo_data,
    object_masks,
    render_scene,
    render_temperature,
    render_thermal,
    render_visible,
    sample_scene,
    temperature_to_counts,
)

SIZE, N_TRAIN, N_TEST, SEED = 32, 8, 8, 3
COUNTS_PER_DEG_C = float(temperature_to_counts(1.0) - temperature_to_counts(0.0))
WARM_CLASSES = ("person", "animal")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Dict:
    return generate_demo_data(tmp_path_factory.mktemp("demo"), n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)


def _pngs(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _labels(folder: Path) -> List[Dict[str, str]]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["filename", "label", "class_name"]
        return list(reader)


def _erode(mask: np.ndarray) -> np.ndarray:
    """Drop the one-pixel rim (anti-aliased edges), image borders included."""
    kernel = np.ones((3, 3), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def _all_bytes(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_metadata(demo: Dict) -> None:
    root = Path(demo["root"])
    expected = {"trainA": N_TRAIN, "trainB": N_TRAIN, "testA": N_TEST, "testB": N_TEST}
    assert demo["counts"] == expected
    for split, n in expected.items():
        assert Path(demo["dirs"][split]) == root / split
        assert _pngs(root / split) == [f"{i:05d}.png" for i in range(n)]
    meta = json.loads((root / "dataset.json").read_text())
    assert [c["name"] for c in meta["classes"]] == list(CLASS_NAMES)
    assert [c["index"] for c in meta["classes"]] == list(range(len(CLASS_NAMES)))
    assert meta["image_size"] == [SIZE, SIZE] and meta["seed"] == SEED and meta["counts"] == expected
    assert meta["b_range"] == list(B_RANGE) == demo["b_range"]
    assert 0 < B_RANGE[0] < B_RANGE[1] < 65535  # a fixed radiometric range, not the full 16 bits
    assert demo["classes"] == list(CLASS_NAMES)


def test_images_read_back_with_expected_dtypes_and_ranges(demo: Dict) -> None:
    root = Path(demo["root"])
    thermal_values = []
    for split in ("trainA", "testA"):
        for name in _pngs(root / split):
            image = _read(root / split / name)
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    for split in ("trainB", "testB"):
        for name in _pngs(root / split):
            image = _read(root / split / name)
            assert image.shape == (SIZE, SIZE) and image.dtype == np.uint16
            assert B_RANGE[0] <= image.min() and image.max() <= B_RANGE[1]
            thermal_values.append(image.ravel())
    assert len(np.unique(np.concatenate(thermal_values))) > 256  # really 16-bit data


def test_test_split_is_paired_by_file_name(demo: Dict) -> None:
    root = Path(demo["root"])
    assert _pngs(root / "testA") == _pngs(root / "testB")
    assert _labels(root / "testA") == _labels(root / "testB")
    for i, name in enumerate(_pngs(root / "testA")):
        scene = demo_scene(SEED, "test", i, SIZE)
        assert np.array_equal(_read(root / "testA" / name), cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR))
        assert np.array_equal(_read(root / "testB" / name), render_thermal(scene))


def test_labels_csv_matches_files_and_scenes(demo: Dict) -> None:
    root = Path(demo["root"])
    streams = {"trainA": "trainA", "trainB": "trainB", "testA": "test", "testB": "test"}
    for split in SPLITS:
        rows = _labels(root / split)
        assert [r["filename"] for r in rows] == _pngs(root / split)
        for i, row in enumerate(rows):
            label = int(row["label"])
            assert row["class_name"] == CLASS_NAMES[label]
            assert label == demo_scene(SEED, streams[split], i, SIZE).label
        assert {r["class_name"] for r in rows} == set(CLASS_NAMES)  # balanced per block of 4


def test_same_seed_same_bytes_different_seed_different_images(demo: Dict, tmp_path: Path) -> None:
    root = Path(demo["root"])
    again = tmp_path / "again"
    generate_demo_data(again, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)
    generate_demo_data(again, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)  # overwrite in place
    assert _all_bytes(again) == _all_bytes(root)

    other = tmp_path / "other"
    generate_demo_data(other, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED + 1)
    for split in SPLITS:
        for name in _pngs(root / split):
            assert not np.array_equal(_read(root / split / name), _read(other / split / name)), (split, name)


def test_images_do_not_depend_on_counts(demo: Dict, tmp_path: Path) -> None:
    root = Path(demo["root"])
    generate_demo_data(tmp_path, n_train=3, n_test=2, size=SIZE, seed=np.int64(SEED))  # numpy ints are fine too
    assert json.loads((tmp_path / "dataset.json").read_text())["seed"] == SEED
    for split, n in {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2}.items():
        assert _pngs(tmp_path / split) == [f"{i:05d}.png" for i in range(n)]
        for name in _pngs(tmp_path / split):
            assert (tmp_path / split / name).read_bytes() == (root / split / name).read_bytes()
        assert _labels(tmp_path / split) == _labels(root / split)[:n]


def test_train_domains_show_different_scenes(demo: Dict) -> None:
    root = Path(demo["root"])
    scenes_a = [demo_scene(SEED, "trainA", i, SIZE) for i in range(N_TRAIN)]
    scenes_b = [demo_scene(SEED, "trainB", i, SIZE) for i in range(N_TRAIN)]
    assert all(a != b for a in scenes_a for b in scenes_b)
    files_a = [_read(root / "trainA" / n) for n in _pngs(root / "trainA")]
    files_b = [_read(root / "trainB" / n) for n in _pngs(root / "trainB")]
    for scene in scenes_b:  # trainB's scenes, seen in visible light, are none of trainA's photos
        photo = cv2.cvtColor(render_visible(scene), cv2.COLOR_RGB2BGR)
        assert not any(np.array_equal(photo, f) for f in files_a)
    for scene in scenes_a:
        assert not any(np.array_equal(render_thermal(scene), f) for f in files_b)


def test_thermal_ignores_visible_colours_and_textures() -> None:
    scene = sample_scene(np.random.default_rng(7), 48, main_class=CLASS_NAMES.index("person"))
    repainted_objects = tuple(
        dataclasses.replace(
            o,
            colours={part: (1.0 - r, 1.0 - g, 1.0 - b) for part, (r, g, b) in o.colours.items()},
            texture=Texture(kind="checker", frequency=6.0, amplitude=0.4),
        )
        for o in scene.objects
    )
    repainted = dataclasses.replace(
        scene,
        objects=repainted_objects,
        ground_colours=((0.9, 0.1, 0.1), (0.1, 0.1, 0.9)),
        ground_texture=Texture(kind="stripes", frequency=5.0, amplitude=0.3),
    )
    visible_change = np.abs(render_visible(scene).astype(int) - render_visible(repainted).astype(int)).mean()
    assert visible_change > 25  # very different photos ...
    assert np.array_equal(render_thermal(scene), render_thermal(repainted))  # ... identical thermal frames


def test_warm_objects_glow_whatever_their_colour() -> None:
    size, n = 32, 48
    background_means, core = [], {name: [] for name in WARM_CLASSES}
    for i in range(n):
        scene = demo_scene(11, "test", i, size)
        thermal = render_thermal(scene).astype(np.float64)
        visible = render_visible(scene).astype(np.float64)
        masks = object_masks(scene)
        main = masks == len(scene.objects) - 1
        main_core = _erode(main)
        background_means.append(thermal[masks == -1].mean())
        name = CLASS_NAMES[scene.label]
        if name in core:
            core[name].append((visible[main_core].mean(axis=0), thermal[main_core].mean()))
    for name, samples in core.items():
        assert len(samples) >= 8, name
        colours = np.array([c for c, _ in samples])
        heat = np.array([t for _, t in samples])
        # the pair of most different colours still shows about the same temperature
        i, j = np.unravel_index(np.argmax(np.linalg.norm(colours[:, None] - colours[None], axis=-1)), (len(heat),) * 2)
        assert np.linalg.norm(colours[i] - colours[j]) > 100
        assert abs(heat[i] - heat[j]) < 4 * COUNTS_PER_DEG_C
        assert heat.min() > max(background_means) + 5 * COUNTS_PER_DEG_C  # warm objects outshine any background


def test_background_is_cool_and_smooth() -> None:
    checked_columns = 0
    for i in range(12):
        scene = demo_scene(5, "trainB", i, 48)
        temperature = render_temperature(scene)
        masks = object_masks(scene)
        assert temperature[_erode(masks == -1)].max() < scene.ambient + 2.0
        free = (masks == -1).all(axis=0)
        free[1:-1] &= free[:-2] & free[2:]  # object-free columns with object-free neighbours
        columns = temperature[:, free]  # sky down to ground
        if columns.size:
            steps = np.diff(columns, axis=0)
            assert (steps > -1e-3).all()  # monotone: no texture, no clouds
            assert steps.max() < 6.5  # the largest step is the sky-ground one at the horizon
            assert (columns[0] < columns[-1] - 10.0).all()  # cold sky above warmer ground
            checked_columns += columns.shape[1]
    assert checked_columns > 0


def test_main_object_is_largest_and_big() -> None:
    size = 40
    for i in range(40):
        scene = demo_scene(2, "trainA", i, size)
        masks = object_masks(scene)
        areas = [(masks == k).sum() for k in range(len(scene.objects))]
        assert areas[-1] == max(areas) and all(a < areas[-1] for a in areas[:-1])
        rows, cols = np.nonzero(masks == len(scene.objects) - 1)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 0.4 * size
        assert np.ptp(cols) + 1 >= 0.17 * size  # even a main person is not a sliver


def test_render_scene_returns_both_modalities_of_one_scene() -> None:
    visible, thermal, label = render_scene(np.random.default_rng(0), 24)
    assert visible.shape == (24, 24, 3) and visible.dtype == np.uint8
    assert thermal.shape == (24, 24) and thermal.dtype == np.uint16
    assert 0 <= label < len(CLASS_NAMES)
    scene = sample_scene(np.random.default_rng(0), 24)
    assert np.array_equal(render_visible(scene), visible) and np.array_equal(render_thermal(scene), thermal)
    assert label == scene.label


@pytest.mark.parametrize(
    "kwargs, name",
    [({"size": 8}, "size"), ({"n_train": 0}, "n_train"), ({"n_test": 0}, "n_test"), ({"seed": -1}, "seed"),
     ({"n_train": 2.5}, "n_train")],
)
def test_invalid_arguments_name_the_argument(tmp_path: Path, kwargs: Dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_demo_data(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written
