"""Labels and masks as users write them: palette masks, and mask values checked at start-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclecmda.config import load_config
from cyclecmda.data import build_dataset
from cyclecmda.errors import DataError
from cyclecmda.images import probe_image, read_image, write_image
from test_labels import mask_folder, names, write_labels
from test_train import overrides_of


def config(cfg, **changes):
    return load_config([], overrides_of(cfg, **changes))


@pytest.fixture
def split(tiny_config, rgb8_dir, image_factory, tmp_path):
    """Training images named person, car, animal, tree, person; four A test images meant to be
    person, car, animal, tree (indices 0 to 3 of that order); B test images for the test split."""
    train = write_labels(tmp_path / "train.csv", zip(names(rgb8_dir), ["person", "car", "animal", "tree", "person"]))
    test_root = image_factory("test_a", n=4, seed=1)
    image_factory("test_b", n=2, channels=1, dtype=np.uint16, seed=2)
    return {"train": train, "test_root": test_root, "test_files": sorted(test_root.glob("*.png")),
            "changes": dict(data__a__labels=train, data__a__test_root=test_root, data__b__test_root=tmp_path / "test_b")}


def write_palette_mask(path: Path, values: np.ndarray) -> Path:
    """A VOC-style mask: palette indices are the classes, each drawn in its own colour."""
    im = Image.fromarray(values, mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1], palette[2], palette[255] = (128, 0, 0), (0, 128, 0), (224, 224, 192)
    im.putpalette(palette.reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def test_palette_masks_are_read_as_class_indices(tiny_config, rgb8_dir, tmp_path):
    masks = tmp_path / "voc"
    expected = {}
    for i, name in enumerate(names(rgb8_dir)):
        values = np.zeros((40, 48), np.uint8)
        values[:20] = 1 + i % 2
        values[-2:] = 255
        expected[name] = values
        write_palette_mask(masks / name, values)
    ds = build_dataset(config(tiny_config, data__a__masks=masks, data__mask_classes="[bg,cat,dog]").data)
    for i in range(len(ds.a)):
        _, mask, path = ds.a.load_labelled(i)
        assert np.array_equal(mask, expected[path.name])
    assert probe_image(masks / name).palette
    # 8-bit gray masks read as before
    gray = mask_folder(rgb8_dir, tmp_path / "gray", lambda img: np.full(img.shape[:2], 2, np.uint8))
    ds = build_dataset(config(tiny_config, data__a__masks=gray, data__mask_classes="[bg,cat,dog]").data)
    assert not probe_image(next(gray.glob("*.png"))).palette
    assert set(np.unique(ds.a.load_labelled(0)[1])) == {2}


def test_full_scan_checks_every_mask_value_before_training(tiny_config, rgb8_dir, split, tmp_path):
    files = names(rgb8_dir)
    masks = mask_folder(rgb8_dir, tmp_path / "masks", lambda img: np.zeros(img.shape[:2], np.uint8))
    write_image(masks / files[2], np.full((40, 48), 7, np.uint8))
    common = dict(data__a__masks=masks, data__mask_classes="[bg,fg]", data__scan="full")
    with pytest.raises(DataError, match=rf"{files[2]}: holds the value 7, but there are 2 mask classes \(values 0 to 1, "
                                        r"and 255 for pixels to ignore\); check data\.mask_classes"):
        build_dataset(config(tiny_config, **common).data)
    with pytest.warns(UserWarning, match="holds the value 7"):
        ds = build_dataset(config(tiny_config, data__on_bad_file="skip", **common).data)
    assert files[2] not in [p.name for p in ds.a.files] and len(ds.a) == 4
    # the test split's masks: the header always, the values with a full scan
    test_masks = mask_folder(split["test_root"], tmp_path / "test_masks", lambda img: np.zeros(img.shape[:2], np.uint8))
    test_names = names(split["test_root"])
    write_image(test_masks / test_names[1], np.full((40, 48), 9, np.uint8))
    changes = dict(data__a__test_root=split["test_root"], data__b__test_root=tmp_path / "test_b",
                   data__a__test_masks=test_masks, data__mask_classes="[bg,fg]")
    build_dataset(config(tiny_config, **changes).data, split="test")
    with pytest.raises(DataError, match=rf"{test_names[1]}: holds the value 9"):
        build_dataset(config(tiny_config, data__scan="full", **changes).data, split="test")
    write_image(test_masks / test_names[1], np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=rf"{test_names[1]}: is 10x10 but its image .* is 48x40"):
        build_dataset(config(tiny_config, **changes).data, split="test")
    assert read_image(test_masks / test_names[0]).shape[:2] == (40, 48)
