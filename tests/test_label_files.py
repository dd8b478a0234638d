"""Labels and masks as users write them: one class order for every labels file, CSVs from Excel
and macOS, sparse indices, empty class folders, palette masks, and mask values checked at start-up."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
from helpers import mask_folder, names, overrides_of, write_labels
from PIL import Image

from cyclecmda.config import load_config
from cyclecmda.data.dataset import build_dataset
from cyclecmda.data.images import probe_image, read_image, write_image
from cyclecmda.data.targets import test_targets as read_test_targets
from cyclecmda.errors import DataError


def config(cfg, **changes):
    return load_config([], overrides_of(cfg, **changes))


def one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def split(tiny_config, rgb8_dir, image_factory, tmp_path):
    """Training images named person, car, animal, tree, person; four A test images meant to be
    person, car, animal, tree (indices 0 to 3 of that order); B test images for the test split."""
    train = write_labels(tmp_path / "train.csv", zip(names(rgb8_dir), ["person", "car", "animal", "tree", "person"]))
    test_root = image_factory("test_a", n=4, seed=1)
    image_factory("test_b", n=2, channels=1, dtype=np.uint16, seed=2)
    return {"train": train, "test_root": test_root, "test_files": sorted(test_root.glob("*.png")),
            "changes": dict(data__a__labels=train, data__a__test_root=test_root, data__b__test_root=tmp_path / "test_b")}


def test_index_test_labels_next_to_named_training_labels_need_data_classes(tiny_config, split, tmp_path):
    test = write_labels(tmp_path / "test.csv", [(n, i) for i, n in enumerate(names(split["test_root"]))])
    cfg = config(tiny_config, data__a__test_labels=test, **split["changes"])
    classes = build_dataset(cfg.data).a.classes
    assert classes == ["animal", "car", "person", "tree"]  # sorted names
    order = (r"data\.a\.test_labels \('.*test\.csv'\) gives class indices, but the class order comes from "
             r"data\.a\.labels \('.*train\.csv'\), which gives class names .*set data\.classes .* or use class names")
    # the in-training evaluation (eval/downstream_a) and the test split both refuse to guess
    one_line_error(order, read_test_targets, split["test_files"], cfg.data.a, cfg.data, "data.a", "class", list(classes))
    one_line_error(order, build_dataset, cfg.data, split="test")
    # data.classes fixes the index order once: every test label lands where the user meant it
    cfg = config(tiny_config, data__a__test_labels=test, data__classes="[person,car,animal,tree]", **split["changes"])
    classes = build_dataset(cfg.data).a.classes
    assert classes == ["person", "car", "animal", "tree"]
    targets = read_test_targets(split["test_files"], cfg.data.a, cfg.data, "data.a", "class", list(classes))
    assert targets.tolist() == [0, 1, 2, 3]
    ds = build_dataset(cfg.data, split="test")
    assert [ds.a.labels.label(p) for p in split["test_files"]] == [0, 1, 2, 3]


def test_index_labels_that_name_their_classes_are_checked_against_the_class_order(tiny_config, split, tmp_path):
    test_names = names(split["test_root"])
    meant = ["person", "car", "animal", "tree"]
    sorted_order = ["animal", "car", "person", "tree"]
    # a class_name column that agrees with the sorted training names: read by index, correctly
    agrees = write_labels(tmp_path / "agrees.csv", [(n, sorted_order.index(c), c) for n, c in zip(test_names, meant)],
                          ("filename", "label", "class_name"))
    cfg = config(tiny_config, data__a__test_labels=agrees, **split["changes"])
    targets = read_test_targets(split["test_files"], cfg.data.a, cfg.data, "data.a", "class", sorted_order)
    assert [sorted_order[i] for i in targets.tolist()] == meant
    # one that does not: index 0 is 'person' in the file, 'animal' in the class order
    disagrees = write_labels(tmp_path / "disagrees.csv", [(n, i, c) for i, (n, c) in enumerate(zip(test_names, meant))],
                             ("filename", "label", "class_name"))
    cfg = config(tiny_config, data__a__test_labels=disagrees, **split["changes"])
    one_line_error(r"data\.a\.test_labels \('.*disagrees\.csv'\) line 2 names class 0 'person', but class 0 is 'animal' "
                   r"in the class order of data\.a\.labels \('.*train\.csv'\)", build_dataset, cfg.data, split="test")
    cfg = config(tiny_config, data__a__labels=disagrees, data__a__root=split["test_root"],
                 data__classes="[animal,car,person,tree]")
    one_line_error(r"data\.a\.labels \('.*disagrees\.csv'\) line 2 names class 0 'person', but class 0 is 'animal' "
                   r"in the class order of data\.classes", build_dataset, cfg.data)
    # indices that name their classes set the order; names in another file are read through it
    cfg = config(tiny_config, data__a__labels=disagrees, data__a__root=split["test_root"], data__b__labels=split["train"],
                 data__b__root=split["test_root"].parent / "rgb8", data__b__channels=3, data__b__bit_depth=8)
    ds = build_dataset(cfg.data)
    assert ds.a.classes == ds.b.classes == meant
    assert [ds.b.classes[ds.b.labels.label(p)] for p in ds.b.files] == ["person", "car", "animal", "tree", "person"]


def test_names_next_to_unnamed_indices_need_data_classes(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    indices = write_labels(tmp_path / "idx.csv", [(n, i % 2) for i, n in enumerate(files)])
    by_name = write_labels(tmp_path / "names.csv", [(n, ["cat", "dog"][i % 2]) for i, n in enumerate(files)])
    cfg = config(tiny_config, data__a__labels=indices, data__b__labels=by_name, data__b__root=rgb8_dir,
                 data__b__channels=3, data__b__bit_depth=8)
    one_line_error(r"data\.b\.labels \('.*names\.csv'\) gives class names, but the class order comes from data\.a\.labels "
                   r"\('.*idx\.csv'\), which gives class indices without names; set data\.classes", build_dataset, cfg.data)


def test_labels_csv_saved_by_excel_with_a_byte_order_mark(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    path = tmp_path / "excel.csv"
    path.write_text("filename,label\r\n" + "".join(f"{n},{['cat', 'dog'][i % 2]}\r\n" for i, n in enumerate(files)),
                    encoding="utf-8-sig")
    ds = build_dataset(config(tiny_config, data__a__labels=path).data)
    assert ds.a.classes == ["cat", "dog"]
    assert [ds.a.labels.label(p) for p in ds.a.files] == [0, 1, 0, 1, 0]


def test_two_rows_with_different_labels_for_one_file_are_refused(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    rows = [(n, "cat") for n in files]
    same = write_labels(tmp_path / "same.csv", rows + [(files[0], "cat")])
    assert len(build_dataset(config(tiny_config, data__a__labels=same).data).a) == 5
    clash = write_labels(tmp_path / "clash.csv", rows + [(files[0], "dog")])
    one_line_error(rf"data\.a\.labels \('.*clash\.csv'\): {files[0]} has two different labels, 'cat' on line 2 and "
                   r"'dog' on line 7; keep one row per file", build_dataset, config(tiny_config, data__a__labels=clash).data)


def test_a_stray_large_index_does_not_make_thousands_of_classes(tiny_config, rgb8_dir, tmp_path):
    files = names(rgb8_dir)
    stray = write_labels(tmp_path / "stray.csv", [(n, i % 2) for i, n in enumerate(files[:-1])] + [(files[-1], 100000)])
    one_line_error(r"data\.a\.labels \('.*stray\.csv'\): label 100000 on line 6 would make 100001 classes from 3 distinct "
                   r"labels; .*set data\.classes", build_dataset, config(tiny_config, data__a__labels=stray).data)
    # sparse but small index sets stay classes 0..max
    sparse = write_labels(tmp_path / "sparse.csv", [(n, [0, 3][i % 2]) for i, n in enumerate(files)])
    assert build_dataset(config(tiny_config, data__a__labels=sparse).data).a.classes == ["0", "1", "2", "3"]
    # with data.classes, an index outside them is a problem of that one file
    cfg = config(tiny_config, data__a__labels=stray, data__classes="[cat,dog,owl]")
    with pytest.raises(DataError, match=rf"{files[-1]}: label '100000' is not a known class \(3 classes of data\.classes"):
        build_dataset(cfg.data)
    with pytest.warns(UserWarning, match=files[-1]):
        cfg = config(tiny_config, data__a__labels=stray, data__classes="[cat,dog,owl]", data__on_bad_file="skip")
        ds = build_dataset(cfg.data)
    assert len(ds.a) == 4


def test_names_written_in_nfd_find_their_nfc_files_and_classes(tiny_config, tmp_path):
    root = tmp_path / "accents"
    nfc = [unicodedata.normalize("NFC", s) for s in ("café_0.png", "café_1.png", "Zoë.png")]
    rng = np.random.default_rng(0)
    for name in nfc:
        write_image(root / name, rng.integers(0, 255, (36, 36, 3)).astype(np.uint8))
    nfd = lambda s: unicodedata.normalize("NFD", s)  # noqa: E731
    labels = write_labels(tmp_path / "mac.csv", [(nfd(n), nfd(c)) for n, c in zip(nfc, ("crème", "brûlée", "crème"))])
    cfg = config(tiny_config, data__a__root=root, data__a__labels=labels,
                 data__classes=f"[{unicodedata.normalize('NFC', 'brûlée')},{unicodedata.normalize('NFC', 'crème')}]")
    ds = build_dataset(cfg.data)
    assert {p.name: ds.a.labels.label(p) for p in ds.a.files} == dict(zip(nfc, (1, 0, 1)))


def test_an_empty_class_folder_stays_a_class(tiny_config, tmp_path):
    root = tmp_path / "byclass"
    rng = np.random.default_rng(0)
    for cls in ("car", "person", "tree"):
        write_image(root / cls / "0.png", rng.integers(0, 255, (36, 36, 3)).astype(np.uint8))
    (root / "bike").mkdir()
    (root / ".thumbnails").mkdir()
    with pytest.warns(UserWarning, match=r"data\.a\.labels: the class folder 'bike' .* holds no images"):
        ds = build_dataset(config(tiny_config, data__a__root=root, data__a__labels="folders").data)
    assert ds.a.classes == ["bike", "car", "person", "tree"]
    assert {p.parent.name: ds.a.labels.label(p) for p in ds.a.files} == {"car": 1, "person": 2, "tree": 3}


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
