"""Labels as data: image classes from a CSV or class-named folders, label masks, and their errors;
masks move with their images through every transform."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import mask_folder, names, overrides_of, write_labels

from cyclecmda.config import load_config
from cyclecmda.data.dataset import build_dataset
from cyclecmda.data.images import write_image
from cyclecmda.errors import DataError


def dataset(cfg, **changes):
    return build_dataset(load_config([], overrides_of(cfg, **changes)).data)


def test_csv_labels_by_index_and_by_name_reach_every_item(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    by_index = write_labels(tmp_path / "idx.csv", [(n, i % 3) for i, n in enumerate(files)])
    ds = dataset(tiny_config, data__a__labels=by_index)
    assert ds.a.classes == ["0", "1", "2"]
    expected = {str(rgb8_dir / n): i % 3 for i, n in enumerate(files)}
    for i in range(len(ds)):
        item = ds[i]
        assert item["a_label"] == expected[item["a_path"]]
        assert "b_label" not in item and "a_mask" not in item
    by_name = write_labels(tmp_path / "name.csv", [(n, ["dog", "cat"][i % 2]) for i, n in enumerate(files)], ("file", "label"))
    ds = dataset(tiny_config, data__a__labels=by_name)
    assert ds.a.classes == ["cat", "dog"]  # sorted names
    assert ds[0]["a_label"] == ds.a.classes.index(["dog", "cat"][files.index(Path(ds[0]["a_path"]).name) % 2])
    # configured class names fix the order (and the count) of the classes
    ds = dataset(tiny_config, data__a__labels=by_name, data__classes="[dog,cat,bird]")
    assert ds.a.classes == ["dog", "cat", "bird"]


def test_class_named_subfolders_are_labels(tiny_config, tmp_path):
    root = tmp_path / "byclass"
    rng = np.random.default_rng(0)
    for cls in ("car", "person"):
        for i in range(2):
            write_image(root / cls / f"{i}.png", rng.integers(0, 255, (36, 36, 3)).astype(np.uint8))
    ds = dataset(tiny_config, data__a__root=root, data__a__labels="folders")
    assert ds.a.classes == ["car", "person"]
    for i in range(4):
        item = ds[i]
        assert ds.a.classes[item["a_label"]] == Path(item["a_path"]).parent.name


def test_label_errors_name_the_file_and_skip_drops_only_it(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    missing = write_labels(tmp_path / "missing.csv", [(n, i % 2) for i, n in enumerate(files[1:])])
    expected = rf"(?s){files[0]}: has no label \(data\.a\.labels: .*missing\.csv has no row for it\).*on_bad_file=skip"
    with pytest.raises(DataError, match=expected):
        dataset(tiny_config, data__a__labels=missing)
    with pytest.warns(UserWarning, match=files[0]):
        ds = dataset(tiny_config, data__a__labels=missing, data__on_bad_file="skip")
    assert len(ds.a) == len(files) - 1 and all(Path(p).name != files[0] for p in map(str, ds.a.files))
    unknown = write_labels(tmp_path / "unknown.csv", [(n, "cat") for n in files[:-1]] + [(files[-1], "zebra")])
    with pytest.raises(DataError, match=rf"{files[-1]}: label 'zebra' is not a known class .*cat, dog"):
        dataset(tiny_config, data__a__labels=unknown, data__classes="[cat,dog]")
    with pytest.raises(DataError, match=r"data\.a\.labels: '.*nope\.csv' does not exist"):
        dataset(tiny_config, data__a__labels=tmp_path / "nope.csv")
    (tmp_path / "noheader.csv").write_text("a.png,1\n")
    with pytest.raises(DataError, match=r"needs a header row with a file column"):
        dataset(tiny_config, data__a__labels=tmp_path / "noheader.csv")


def test_mask_errors_name_the_file(tiny_config, rgb8_dir, tmp_path):
    zero = lambda img: np.zeros(img.shape[:2], np.uint8)  # noqa: E731
    masks = mask_folder(rgb8_dir, tmp_path / "masks", zero)
    files = names(rgb8_dir)
    common = dict(data__a__masks=masks, data__mask_classes="[bg,fg]")
    (masks / files[0]).unlink()
    with pytest.raises(DataError, match=rf"{files[0]}: its mask '.*' does not exist \(data\.a\.masks\)"):
        dataset(tiny_config, **common)
    write_image(masks / files[0], np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=rf"{files[0]}: is 10x10 but its image .* is 48x40"):
        dataset(tiny_config, **common)
    write_image(masks / files[0], np.full((40, 48), 7, np.uint8))  # right size, value out of range
    ds = dataset(tiny_config, **common)
    index = [Path(p).name for p in map(str, ds.a.files)].index(files[0])
    with pytest.raises(DataError, match=rf"{files[0]}: holds the value 7, but there are 2 mask classes.*255"):
        ds.a.load_labelled(index)
    with pytest.warns(UserWarning, match="holds the value 7"):
        _, mask, path = dataset(tiny_config, data__on_bad_file="skip", **common).a.load_labelled(index)
    assert path.name != files[0] and mask is not None  # skipped to the next file
    write_image(masks / files[0], np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(DataError, match=r"a mask must be a 1-channel 8-bit PNG"):
        dataset(tiny_config, **common)


def quadrant_image(size: int, seed: int) -> np.ndarray:
    """An 8-bit gray image of four flat quadrants in random order; quadrant q has value 40 + 50 q."""
    order = np.random.default_rng(seed).permutation(4)
    img = np.zeros((size, size), np.uint8)
    h = size // 2
    for q, (r, c) in zip(order, [(0, 0), (0, 1), (1, 0), (1, 1)]):
        img[r * h : (r + 1) * h, c * h : (c + 1) * h] = 40 + 50 * q
    return img


@pytest.mark.parametrize("transforms", [
    None,  # the default pipeline: Resize(load_size) -> RandomCrop -> HorizontalFlip
    "[{name: RandomRotate90, params: {p: 1.0}}, {name: Transpose, params: {p: 0.5}}, "
    "{name: Affine, params: {rotate: [-30, 30], p: 1.0}}, {name: RandomCrop, params: {height: 32, width: 32}}]",
])
def test_masks_move_with_their_images(tiny_config, tmp_path, transforms):
    """The mask of every item still labels the quadrant its image shows, after crops, flips and
    a user's rotations (images: linear interpolation, masks: nearest)."""
    images, masks = tmp_path / "quad", tmp_path / "quad_masks"
    for i in range(6):
        write_image(images / f"{i}.png", quadrant_image(48, i))
    mask_folder(images, masks, lambda img: ((img[..., 0].astype(int) - 40) // 50).astype(np.uint8))
    changes = dict(data__a__root=images, data__a__channels=1, data__a__masks=masks, data__mask_classes="[q0,q1,q2,q3]",
                   data__load_size=48, data__crop_size=32)
    if transforms:
        changes["data__a__transforms"] = transforms
    ds = dataset(tiny_config, **changes)
    unmoved_fit = []
    for epoch in range(3):
        for i in range(6):
            item = ds[(epoch, i)]
            image = (item["a"][0].numpy() + 1) / 2 * 255
            mask = item["a_mask"].numpy()
            assert item["a_mask"].dtype == torch.int64 and mask.shape == image.shape
            assert set(np.unique(mask)) <= {0, 1, 2, 3, 255}
            valid = mask != 255
            agrees = valid & (np.abs(image - (40 + 50 * mask.clip(0, 3))) < 2)
            # pixels on a quadrant border are blends in the image; every other one must agree
            assert agrees.sum() >= 0.85 * valid.sum(), (epoch, i)
            original = cv2.resize(((quadrant_image(48, i).astype(int) - 40) // 50).astype(np.uint8), (32, 32),
                                  interpolation=cv2.INTER_NEAREST)
            unmoved_fit.append((np.abs(image - (40 + 50 * original)) < 2).mean())
    # the transforms did move the images: a mask left where it was would not fit them
    assert min(unmoved_fit) < 0.7


def test_demo_writes_masks_that_label_its_objects(tmp_path):
    from cyclecmda.data.demo import CLASS_NAMES, MASK_CLASSES, generate_demo_data
    from cyclecmda.data.images import read_image

    info = generate_demo_data(tmp_path / "demo", n_train=8, n_test=4, size=64)
    for split in ("trainA", "trainB", "testA", "testB"):
        with open(tmp_path / "demo" / split / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == info["counts"][split]
        for row in rows:
            mask = read_image(tmp_path / "demo" / "masks" / split / row["filename"])[..., 0]
            assert mask.shape == (64, 64)
            assert set(np.unique(mask)) <= set(range(len(MASK_CLASSES)))
            # the image's main object (its label) is visible in its mask
            assert (mask == 1 + int(row["label"])).sum() > 20, (split, row)
    assert MASK_CLASSES[1:] == CLASS_NAMES
