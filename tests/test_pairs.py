"""The domain pairs of cyclecmda.data.pairs: layout, determinism, labels and masks against the pictures,
the package's own data checks, the configs, the commands of docs/pairs.md, and bad arguments."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from cyclecmda.cli import build_parser as cli_parser
from cyclecmda.config import load_config, split_cli_args
from cyclecmda.data.dataset import build_dataset
from cyclecmda.data.demo import CLASS_NAMES, SPLITS, demo_scene, render_visible, scene_mask
from cyclecmda.data.pairs import (
    DIGIT_NAMES,
    N_HANDWRITTEN,
    PAIRS,
    MissingExtraError,
    _handwritten_split,
    generate_pair,
    handwritten_digits,
)
from cyclecmda.data.pairs.command import build_parser, main
from cyclecmda.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, SEED = 6, 5, 2
CHANNELS = {"sketch": (3, 1), "night": (3, 3), "digits": (3, 1)}  # (A, B)

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="the digits pair needs scikit-learn (the [pairs] extra)")
ALL = [pytest.param(name, marks=needs_sklearn) if name == "digits" else name for name in PAIRS]


class Pairs(dict):
    """Each pair generated once, on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        self[name] = Path(generate_pair(name, self.root / name, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)["root"])
        return self[name]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return Pairs(tmp_path_factory.mktemp("pairs"))


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _labels(folder: Path) -> List[int]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["filename", "label", "class_name"]
        rows = list(reader)
    assert [r["filename"] for r in rows] == [f"{i:05d}.png" for i in range(len(rows))]
    return [int(r["label"]) for r in rows]


def _all_bytes(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=pixels).astype(bool)


@pytest.mark.parametrize("name", ALL)
def test_layout_counts_formats_and_metadata(pairs: Dict[str, Path], name: str) -> None:
    root = pairs[name]
    meta = json.loads((root / "dataset.json").read_text())
    counts = {"trainA": N_TRAIN, "trainB": N_TRAIN, "testA": N_TEST, "testB": N_TEST}
    classes = DIGIT_NAMES if name == "digits" else CLASS_NAMES
    assert meta["counts"] == counts and meta["seed"] == SEED and meta["image_size"] == [32, 32]
    assert [c["name"] for c in meta["classes"]] == list(classes)
    assert [c["name"] for c in meta["mask_classes"]] == ["background", *classes]
    assert meta["paired"] == ([] if name == "digits" else ["testA", "testB"])
    assert (meta["a"]["channels"], meta["b"]["channels"]) == CHANNELS[name]
    assert meta["a"]["bit_depth"] == meta["b"]["bit_depth"] == 8
    for split in SPLITS:
        channels = CHANNELS[name][0 if split.endswith("A") else 1]
        names = sorted(p.name for p in (root / split).glob("*.png"))
        assert names == [f"{i:05d}.png" for i in range(counts[split])]
        assert sorted(p.name for p in (root / "masks" / split).glob("*.png")) == names
        labels = _labels(root / split)
        assert len(labels) == counts[split] and all(0 <= label < len(classes) for label in labels)
        for file in names:
            image, mask = _read(root / split / file), _read(root / "masks" / split / file)
            assert image.dtype == np.uint8 and image.shape == ((32, 32, 3) if channels == 3 else (32, 32))
            assert mask.dtype == np.uint8 and mask.shape == (32, 32) and mask.max() <= len(classes)


@pytest.mark.parametrize("name", ALL)
def test_same_arguments_same_bytes(pairs: Dict[str, Path], tmp_path: Path, name: str) -> None:
    again = generate_pair(name, tmp_path / "again", n_train=N_TRAIN, n_test=N_TEST, seed=SEED)
    assert _all_bytes(Path(again["root"])) == _all_bytes(pairs[name])
    generate_pair(name, tmp_path / "other", n_train=N_TRAIN, n_test=N_TEST, seed=SEED + 1)
    assert (tmp_path / "other" / "trainA" / "00000.png").read_bytes() != (pairs[name] / "trainA" / "00000.png").read_bytes()
    # a smaller generation into the same folder leaves no stale images behind
    generate_pair(name, tmp_path / "again", n_train=2, n_test=1, seed=SEED)
    assert sorted(p.name for p in (tmp_path / "again" / "trainB").glob("*.png")) == ["00000.png", "00001.png"]
    assert len(list((tmp_path / "again" / "masks" / "testB").glob("*.png"))) == 1


@pytest.mark.parametrize("name", ["sketch", "night"])
def test_scene_pairs_show_the_demo_scenes(pairs: Dict[str, Path], name: str) -> None:
    root = pairs[name]
    for split, stream in (("trainA", "trainA"), ("trainB", "trainB"), ("testA", "test"), ("testB", "test")):
        for i, label in enumerate(_labels(root / split)):
            scene = demo_scene(SEED, stream, i, 32)
            assert label == scene.label
            assert np.array_equal(_read(root / "masks" / split / f"{i:05d}.png"), scene_mask(scene))
            if split.endswith("A"):  # A is the demo's photo itself
                assert np.array_equal(_read(root / split / f"{i:05d}.png")[..., ::-1], render_visible(scene))
    # testA/testB: the same scenes under the same names, in both domains' masks
    for i in range(N_TEST):
        assert np.array_equal(_read(root / "masks/testA" / f"{i:05d}.png"), _read(root / "masks/testB" / f"{i:05d}.png"))
    # trainA and trainB show different scenes
    assert not np.array_equal(_read(root / "masks/trainA/00000.png"), _read(root / "masks/trainB/00000.png"))


def test_sketch_strokes_follow_the_masks_and_the_horizon(pairs: Dict[str, Path]) -> None:
    root = pairs["sketch"]
    for split, stream in (("trainB", "trainB"), ("testB", "test")):
        for path in sorted((root / split).glob("*.png")):
            drawing, mask = _read(path), _read(root / "masks" / split / path.name)
            scene = demo_scene(SEED, stream, int(path.stem), 32)
            paper = np.median(drawing)
            assert paper > 200  # light paper
            strokes = drawing < 0.75 * paper
            rows = np.arange(32)[:, None] + 0.5
            near_horizon = np.broadcast_to(np.abs(rows - scene.horizon) <= 2.5, strokes.shape)
            # every stroke is an object's outline or the horizon: no fills, nothing else
            assert not np.any(strokes & ~_dilate(mask > 0, 2) & ~near_horizon), path
            # and every object's outline is drawn
            objects = mask > 0
            rim = objects & ~cv2.erode(objects.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            assert (rim & _dilate(strokes, 1)).sum() >= 0.8 * rim.sum(), path
            # the horizon is drawn where no object hides it (a thin line may fall between two rows)
            row = int(scene.horizon)
            free = ~_dilate(objects, 2)[row]
            assert (drawing[row - 2:row + 3].min(axis=0) < 0.85 * paper)[free].mean() > 0.75, path


def test_night_photos_are_dark_with_a_night_sky(pairs: Dict[str, Path]) -> None:
    root, ratios = pairs["night"], []
    for i in range(N_TEST):
        day = _read(root / "testA" / f"{i:05d}.png").astype(np.float32)  # the same scene by day
        night = _read(root / "testB" / f"{i:05d}.png").astype(np.float32)
        ratios.append(night.mean() / day.mean())
        assert 10 < night.mean() < 0.9 * day.mean()  # dark, not black
        mask = _read(root / "masks/testB" / f"{i:05d}.png")
        sky = np.zeros(mask.shape, dtype=bool)
        sky[: int(demo_scene(SEED, "test", i, 32).horizon) - 1] = True
        sky &= mask == 0
        if sky.any():
            assert night[sky].mean() < min(90.0, 0.6 * day[sky].mean())
    assert np.mean(ratios) < 0.65


@needs_sklearn
def test_digits_masks_match_labels_and_ink(pairs: Dict[str, Path]) -> None:
    root = pairs["digits"]
    for split in SPLITS:
        for i, label in enumerate(_labels(root / split)):
            image = _read(root / split / f"{i:05d}.png").astype(np.float32)
            mask = _read(root / "masks" / split / f"{i:05d}.png")
            assert set(np.unique(mask)) == {0, label + 1}, (split, i)
            luma = image if image.ndim == 2 else image.mean(axis=2)
            assert luma[mask > 0].mean() < luma[mask == 0].mean() - 60, (split, i)  # dark ink on light paper
            if split.endswith("B"):
                assert np.all(luma[mask > 0] < 128) and np.all(mask[luma < 64] > 0)


@needs_sklearn
def test_handwritten_split_is_disjoint_balanced_and_test_set_fixed(tmp_path: Path) -> None:
    _, labels = handwritten_digits()
    order = _handwritten_split(labels, SEED)
    assert sorted(order.tolist()) == list(range(N_HANDWRITTEN))  # a permutation: trainB and testB never share
    assert np.bincount(labels[order[:100]], minlength=10).tolist() == [10] * 10
    assert np.bincount(labels[order[-700:]], minlength=10).min() >= 60
    small = generate_pair("digits", tmp_path / "small", n_train=3, n_test=4, seed=SEED)
    large = generate_pair("digits", tmp_path / "large", n_train=8, n_test=4, seed=SEED)
    assert _all_bytes(Path(small["root"]) / "testB") == _all_bytes(Path(large["root"]) / "testB")


def _pair_config(name: str, root: Path, *overrides: str):
    """configs/pairs/<name>.yaml pointed at ``root``."""
    text = (ROOT / "configs" / "pairs" / f"{name}.yaml").read_text().replace(f"data/pairs/{name}", str(root))
    path = root.parent / f"{name}.yaml"
    path.write_text(text)
    return load_config([path], ["data.scan=full", "data.num_workers=0", *overrides])


@pytest.mark.parametrize("name", ALL)
def test_pair_passes_the_data_checks_with_its_config(pairs: Dict[str, Path], name: str) -> None:
    cfg = _pair_config(name, pairs[name])
    assert not cfg.data.b.labels and not cfg.data.b.masks  # B's training labels are for the ceiling only
    assert cfg.loss.semantic.kind == "class" and cfg.data.load_size == cfg.data.crop_size == 32
    assert list(cfg.data.mask_classes) == ["background", *cfg.data.classes]
    train = build_dataset(cfg.data, split="train")
    assert (len(train.a), len(train.b)) == (N_TRAIN, N_TRAIN)
    item = train[0]
    assert "a_label" in item and "a_mask" in item and "b_label" not in item and "b_mask" not in item
    assert item["a"].shape[0] == cfg.data.a.channels and item["b"].shape[0] == cfg.data.b.channels
    test = build_dataset(cfg.data, split="test")
    assert (len(test.a), len(test.b)) == (N_TEST, N_TEST)
    item = test[1]
    assert {"a_label", "a_mask", "b_label", "b_mask"} <= set(item)
    assert item["a_mask"].shape == (32, 32) and int(item["b_mask"].max()) <= len(cfg.data.classes)
    load_config([pairs[name].parent / f"{name}.yaml"], ["loss.semantic.kind=none"])  # the label-free run
    load_config([pairs[name].parent / f"{name}.yaml"], ["loss.semantic.kind=mask"])


def _doc_commands() -> List[List[str]]:
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", (ROOT / "docs" / "pairs.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


@needs_sklearn
def test_doc_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    commands = _doc_commands()
    small = ["--n-train", "2", "--n-test", "2"]
    seen = set()
    monkeypatch.chdir(ROOT)  # the doc's paths are relative to the repository
    for words in commands:
        if words[:3] == ["python", "-m", "cyclecmda.data.pairs"]:
            args = build_parser().parse_args(words[3:])
            assert main([*words[3:], "--out", str(tmp_path / args.name), *small]) == 0
            seen.add("module")
        elif words[:2] == ["python", "tools/data/make_pairs.py"]:
            spec = importlib.util.spec_from_file_location("make_pairs", ROOT / "tools" / "data" / "make_pairs.py")
            make_pairs = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(make_pairs)
            make_pairs.main([*words[2:], "--out", str(tmp_path / "all"), *small])
            assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(PAIRS)
            seen.add("tool")
        elif words[0] == "cyclecmda":
            args = cli_parser().parse_args(words[1:])
            paths, overrides = split_cli_args(args.config)
            assert all((ROOT / p).is_file() for p in paths), words
            load_config(paths, overrides)
            seen.add(args.command)
    assert seen >= {"module", "tool", "config", "train"}


def test_module_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "sketch"
    run = subprocess.run([sys.executable, "-m", "cyclecmda.data.pairs", "sketch", "--out", str(out), "--n-train", "1",
                          "--n-test", "1", "--size", "16"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "sketch pair written" in run.stdout and _read(out / "trainB" / "00000.png").shape == (16, 16)
    bad = subprocess.run([sys.executable, "-m", "cyclecmda.data.pairs", "sketch", "--out", str(out), "--size", "8"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: size must be in [16, 256], got 8"


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "skecth"}, "unknown domain pair 'skecth'; choose one of: sketch, night, digits"),
    ({"n_train": 0}, "n_train must be in [1, 99999], got 0"),
    ({"n_test": True}, "n_test must be an integer, got True"),
    ({"size": 8}, "size must be in [16, 256], got 8"),
    ({"size": 32.0}, "size must be an integer, got 32.0"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"name": "digits", "n_train": 1500, "n_test": 400}, "n_train + n_test must be at most 1797"),
])
def test_bad_arguments_are_named(tmp_path: Path, kwargs: Dict, message: str) -> None:
    args = {"name": "sketch", "out_dir": tmp_path / "out", "n_train": 1, "n_test": 1, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        generate_pair(**args)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_missing_scikit_learn_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'cyclecmda[pairs]'")) as info:
        generate_pair("digits", tmp_path / "digits", n_train=1, n_test=1)
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)
    assert main(["digits", "--out", str(tmp_path / "d"), "--n-train", "1", "--n-test", "1"]) == 2
