"""Boxes as data: COCO, YOLO and Pascal VOC files read into one class order, moved with their
images by the albumentations pipeline, carried by batches, and refused or skipped when wrong."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from cyclecmda.config import load_config
from cyclecmda.data.dataset import ResumableSampler, build_dataset, build_loader
from cyclecmda.data.demo import generate_demo_data
from cyclecmda.errors import DataError

# image name -> boxes (x_min, y_min, x_max, y_max in pixels) with class names; images are 40 x 30
BOXES: Dict[str, List[Tuple[Tuple[float, float, float, float], str]]] = {
    "a.png": [((2, 3, 12, 13), "cat"), ((20, 5, 38, 25), "dog")],
    "b.png": [((0, 0, 40, 30), "owl")],
    "c.png": [],
}
CLASSES = ["cat", "dog", "owl"]
W, H = 40, 30


def images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in BOXES:
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / name)
    return folder


def write_coco(path: Path, boxes=BOXES, width: int = W) -> Path:
    entries, annotations = [], []
    for i, (name, objects) in enumerate(boxes.items(), 1):
        entries.append({"id": i, "file_name": name, "width": width, "height": H})
        for (x0, y0, x1, y1), cls in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "category_id": 10 + CLASSES.index(cls), "iscrowd": 0})
    categories = [{"id": 10 + i, "name": n} for i, n in enumerate(CLASSES)]
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return path


def write_yolo(folder: Path, boxes=BOXES, names: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, objects in boxes.items():
        lines = [f"{CLASSES.index(c)} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}"
                 for (x0, y0, x1, y1), c in objects]
        (folder / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    if names:
        (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


def write_voc(folder: Path, boxes=BOXES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, objects in boxes.items():
        body = "".join(f"<object><name>{c}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                       f"<ymax>{y1}</ymax></bndbox></object>" for (x0, y0, x1, y1), c in objects)
        (folder / name).with_suffix(".xml").write_text(f"<annotation><filename>{name}</filename>{body}</annotation>")
    return folder


def dataset(tmp_path: Path, boxes: str, *extra: str, crop: int = 32, load: int = 32):
    root = images(tmp_path / "imgs")
    cfg = load_config([], [f"data.a.root={root}", f"data.b.root={root}", f"data.a.boxes={boxes}",
                           f"data.load_size={load}", f"data.crop_size={crop}", "data.flip=false", *extra])
    return build_dataset(cfg.data), cfg


def as_pixels(ds, name: str) -> List[Tuple[List[float], int]]:
    path = next(p for p in ds.a.files if p.name == name)
    got = ds.a.boxes[path]
    return [(b.tolist(), int(c)) for b, c in zip(got.boxes, got.labels)]


@pytest.mark.parametrize("layout", ["coco", "yolo", "voc"])
def test_each_layout_gives_the_same_boxes_in_the_same_class_order(tmp_path, layout):
    source = {"coco": lambda: write_coco(tmp_path / "boxes.json"), "yolo": lambda: write_yolo(tmp_path / "yolo"),
              "voc": lambda: write_voc(tmp_path / "voc")}[layout]()
    ds, _ = dataset(tmp_path, str(source))
    assert list(ds.a.classes) == CLASSES  # COCO's categories by id, classes.txt, VOC's names sorted
    for name, objects in BOXES.items():
        got = as_pixels(ds, name)
        assert [c for _, c in got] == [CLASSES.index(c) for _, c in objects], (layout, name)
        assert np.allclose([b for b, _ in got], [b for b, _ in objects], atol=1e-4) if objects else not got


def test_boxes_move_with_their_image_and_boxes_cropped_away_are_dropped(tmp_path):
    source = write_coco(tmp_path / "boxes.json")
    transforms = ('data.a.transforms=[{name: Crop, params: {x_min: 16, y_min: 0, x_max: 40, y_max: 24}}, '
                  '{name: HorizontalFlip, params: {p: 1.0}}]')
    ds, _ = dataset(tmp_path, str(source), transforms, crop=24)
    index = next(i for i, p in enumerate(ds.a.files) if p.name == "a.png")
    item = ds[(0, index)]
    # the cat (x 2..12) is cropped away; the dog (20..38, 5..25) moves to x 4..22, is clipped at y 24, then mirrored
    assert item["a_box_labels"].tolist() == [1]
    assert np.allclose(item["a_boxes"].numpy(), [[24 - 22, 5, 24 - 4, 24]], atol=1e-4)
    assert item["a"].shape == (3, 24, 24)


def test_a_batch_carries_a_different_number_of_boxes_per_image_through_workers(tmp_path):
    source = write_coco(tmp_path / "boxes.json")
    ds, cfg = dataset(tmp_path, str(source), "data.batch_size=3", "data.num_workers=2", crop=40, load=40)
    loader = build_loader(ds, cfg.data, ResumableSampler(len(ds), shuffle=False), drop_last=False)
    batch = next(iter(loader))
    assert batch["a"].shape == (3, 3, 40, 40)
    counts = {Path(p).name: len(b) for p, b in zip(batch["a_path"], batch["a_boxes"])}
    assert counts == {"a.png": 2, "b.png": 1, "c.png": 0}
    assert all(len(b) == len(c) for b, c in zip(batch["a_boxes"], batch["a_box_labels"]))
    assert "b_boxes" not in batch  # B has none configured


def test_data_classes_sets_the_order_and_names_outside_it_are_refused(tmp_path):
    source = write_voc(tmp_path / "voc")
    ds, _ = dataset(tmp_path, str(source), "data.classes=[owl,dog,cat,fox]")
    assert as_pixels(ds, "a.png") == [([2.0, 3.0, 12.0, 13.0], 2), ([20.0, 5.0, 38.0, 25.0], 1)]
    with pytest.raises(DataError, match=r"a\.xml: object 1: class 'cat' is not a known class.*data\.classes"):
        dataset(tmp_path, str(source), "data.classes=[owl,dog]")


@pytest.mark.parametrize("broken, message", [
    ({"a.png": [((30, 3, 45, 13), "cat")]}, r"reaches outside the 40x30 image"),
    ({"a.png": [((5, 3, 5, 13), "cat")]}, r"has no area"),
])
def test_a_bad_box_names_its_file_and_stops_or_is_skipped(tmp_path, broken, message):
    boxes = {**BOXES, **broken}
    source = write_voc(tmp_path / "voc", boxes)
    with pytest.raises(DataError, match=rf"(?s)a\.xml: object 1: the box .*{message}.*data\.on_bad_file=skip"):
        dataset(tmp_path, str(source))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, _ = dataset(tmp_path, str(source), "data.on_bad_file=skip")
    assert sorted(p.name for p in ds.a.files) == ["b.png", "c.png"]
    assert any("a.xml" in str(w.message) for w in caught)


def test_coco_problems_name_the_annotation_and_the_image(tmp_path):
    source = write_coco(tmp_path / "boxes.json", {k: v for k, v in BOXES.items() if k != "c.png"})
    with pytest.raises(DataError, match=r"c\.png: is not among the images of data\.a\.boxes"):
        dataset(tmp_path, str(source))
    data = json.loads(source.read_text())
    data["images"].append({"id": 99, "file_name": "c.png", "width": W, "height": H})
    data["annotations"].append({"id": 50, "image_id": 99, "bbox": [1, 1, 4, 4], "category_id": 7})
    source.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation 3 \(id 50\) of c\.png: category_id 7 is not in 'categories'"):
        dataset(tmp_path, str(source))
    wrong_size = write_coco(tmp_path / "sized.json", width=64)
    with pytest.raises(DataError, match=r"is 64x30 there, but .*a\.png' is 40x30"):
        dataset(tmp_path, str(wrong_size))


def test_a_malformed_yolo_line_is_named_by_file_and_line(tmp_path):
    folder = write_yolo(tmp_path / "yolo")
    (folder / "b.txt").write_text("2 0.5 0.5 1 1\n\n2 0.5 0.5\n")
    with pytest.raises(DataError, match=r"b\.txt:3: expected 'class cx cy w h'"):
        dataset(tmp_path, str(folder))


def test_the_layout_comes_from_the_path_or_is_refused_with_the_setting_to_use(tmp_path):
    folder = write_yolo(tmp_path / "mixed")
    write_voc(folder)
    with pytest.raises(DataError, match=r"holds both \.txt and \.xml files.*data\.a\.boxes_format"):
        dataset(tmp_path, str(folder))
    ds, _ = dataset(tmp_path, str(folder), "data.a.boxes_format=voc")
    assert len(ds.a.boxes) == 3
    with pytest.raises(DataError, match=r"does not exist"):
        dataset(tmp_path, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"no \.txt file in .* is named like an image"):
        dataset(tmp_path, str(write_yolo(tmp_path / "other", {"zzz.png": []})))
    from cyclecmda.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.a\.boxes_format.*coco, yolo, voc"):
        dataset(tmp_path, str(folder), "data.a.boxes_format=yaml")


def test_the_demo_writes_the_box_of_every_object_it_draws(tmp_path):
    generate_demo_data(tmp_path, n_train=6, n_test=3, size=64)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["boxes"] == {s: f"boxes/{s}.json" for s in ("trainA", "trainB", "testA", "testB")}
    cfg = load_config([], [f"data.a.root={tmp_path / 'trainA'}", f"data.b.root={tmp_path / 'trainB'}",
                           "data.b.channels=1", "data.b.bit_depth=16", "data.load_size=64", "data.crop_size=64",
                           f"data.a.boxes={tmp_path / 'boxes/trainA.json'}", f"data.b.boxes={tmp_path / 'boxes/trainB.json'}"])
    ds = build_dataset(cfg.data)
    assert list(ds.a.classes) == ["person", "car", "tree", "animal"] and ds.b.classes == ds.a.classes
    masks = sorted((tmp_path / "masks" / "trainA").glob("*.png"))
    total = 0
    for path, mask_file in zip(sorted(ds.a.files), masks):
        mask = np.asarray(Image.open(mask_file))
        got = ds.a.boxes[path]
        total += len(got)
        for (x0, y0, x1, y1), cls in zip(got.boxes.astype(int), got.labels):
            # the box is the extent of an object of that class: its class shows on each of the box's four edges
            inside = mask[y0:y1, x0:x1] == cls + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert total >= len(masks)  # every frame shows at least its main object


@pytest.mark.parametrize("name", ["sketch", "digits"])
def test_the_domain_pairs_write_boxes_a_dataset_reads_in_their_class_order(tmp_path, name):
    from cyclecmda.data.pairs import generate_pair

    generate_pair(name, tmp_path, n_train=12, n_test=4)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert "boxes/trainB.json" in meta["ceiling_only"]  # B's boxes measure a ceiling; a translator never sees them
    b = meta["b"]
    cfg = load_config([], [f"data.a.root={tmp_path / 'trainA'}", f"data.b.root={tmp_path / 'trainB'}",
                           f"data.b.channels={b['channels']}", "data.load_size=32", "data.crop_size=32",
                           f"data.a.boxes={tmp_path / 'boxes/trainA.json'}", f"data.b.boxes={tmp_path / 'boxes/trainB.json'}"])
    ds = build_dataset(cfg.data)
    assert list(ds.a.classes) == [c["name"] for c in meta["classes"]]
    labels = {row.split(",")[0]: int(row.split(",")[1]) for row in (tmp_path / "trainA/labels.csv").read_text().split()[1:]}
    for path in ds.a.files:
        got = ds.a.boxes[path]
        assert labels[path.name] in got.labels.tolist()  # the image's class has a box
        if name == "digits":
            mask = np.asarray(Image.open(tmp_path / "masks/trainA" / path.name))
            rows, cols = np.nonzero(mask)
            assert got.boxes.tolist() == [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]  # the ink's extent


def test_box_mask_marks_classes_inside_background_outside_and_no_target_where_unsure():
    import torch

    from cyclecmda.data.boxes import box_mask

    mask = box_mask(torch.tensor([[2.0, 2.0, 8.0, 8.0], [6.0, 6.0, 12.0, 10.0]]), torch.tensor([0, 1]), (12, 14))
    assert mask[4, 4] == 1 and mask[8, 9] == 2  # 1 + the class inside each box
    assert mask[0, 0] == 0 and mask[11, 13] == 0 and mask[3, 12] == 0  # background outside every box
    assert mask[2, 4] == 255 and mask[1, 4] == 255  # the band on either side of an edge carries no target
    assert mask[6, 6] == 255  # where the two boxes overlap
    assert set(mask.unique().tolist()) == {0, 1, 2, 255}


def test_training_with_boxes_learns_from_coarse_masks_and_scores_on_test_boxes(tmp_path):
    from helpers import TINY, scalars

    from cyclecmda.train.trainer import train

    demo = tmp_path / "demo"
    generate_demo_data(demo, n_train=8, n_test=4, size=32)
    cfg = load_config([], [f"data.a.root={demo / 'trainA'}", f"data.b.root={demo / 'trainB'}", *TINY,
                           f"data.a.boxes={demo / 'boxes/trainA.json'}", f"data.a.test_root={demo / 'testA'}",
                           f"data.b.test_root={demo / 'testB'}", f"data.b.test_boxes={demo / 'boxes/testB.json'}",
                           f"data.a.test_boxes={demo / 'boxes/testA.json'}", "loss.semantic.kind=boxes",
                           "loss.semantic.task_every=1", "loss.semantic.task_batch=4", "loss.semantic.memory=8",
                           "loss.semantic.pseudo_labels=[shape]", "model.task.width=8", "train.max_steps=3",
                           "train.eval_every=3", "train.best_metric=eval/downstream_b", "train.export_on_finish=true",
                           f"run.out_dir={tmp_path / 'runs'}", "run.name=boxes", "train.image_every=100"])
    result = train(cfg)
    logged = scalars(result.run_dir / "tb")
    assert np.isfinite(logged["loss/downstream"][3]) and np.isfinite(logged["loss/judge"][1])
    assert 0 <= logged["eval/downstream_b"][3] <= 1  # the detector's mAP@0.5 on B's test boxes
    assert 0 <= logged["eval/judge_real_b"][3] <= 1  # the judge's mean IoU on their coarse masks
    # the downstream model is a detector of the boxes' classes, exported with its decoding
    folder = result.run_dir / "export" / "downstream"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["task"]["kind"] == "boxes" and meta["task"]["classes"] == ["person", "car", "tree", "animal"]
    assert meta["network"]["name"] == "small_detector" and meta["output"]["detections"] == 100

    import subprocess
    import sys

    import torch

    from cyclecmda.export.write import export_checkpoint

    # the ONNX and TorchScript programs beside model.pt2
    others = export_checkpoint(result.checkpoint, tmp_path / "others", directions=(), formats=("onnx", "torchscript"),
                               task=True)
    assert (tmp_path / "others" / "downstream" / "model.onnx").is_file()
    script = tmp_path / "detect.py"
    script.write_text(DETECT)
    images = torch.rand(2, 1, 32, 48) * 2 - 1
    torch.save(images, tmp_path / "images.pt")
    proc = subprocess.run([sys.executable, "-I", str(script), str(folder), str(tmp_path / "others" / "downstream"),
                           str(tmp_path / "images.pt"), str(tmp_path / "found.pt")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = torch.load(tmp_path / "found.pt", weights_only=True)
    assert others and found.shape == (2, 100, 6)
    assert (found[..., :4] >= 0).all() and (found[..., [0, 2]] <= 48).all() and (found[..., [1, 3]] <= 32).all()
    assert (found[..., 4] >= 0).all() and (found[..., 4] <= 1).all() and set(found[..., 5].unique().tolist()) <= {0, 1, 2, 3}
    assert (found[:, :-1, 4] >= found[:, 1:, 4]).all()  # strongest first

    from cyclecmda.models.detector import Detector

    eager = Detector(meta["network"]["name"], **meta["network"]["args"])
    eager.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    eager.eval()
    with torch.no_grad():
        expected = eager(images)
    for got, want in zip(found, expected):
        keep = got[:, 4] > 0.01
        torch.testing.assert_close(got[keep, :4], want["boxes"], atol=1e-4, rtol=0)
        assert torch.equal(got[keep, 5].long(), want["labels"])


DETECT = r"""
import json, sys
import onnxruntime as ort
import torch
folder, others, images, out = sys.argv[1:]
meta = json.load(open(f"{folder}/meta.json"))
x = torch.load(images, weights_only=True)
net = torch.export.load(f"{folder}/{meta['files']['pt2']}").module()
with torch.no_grad():
    found = net(x)
    scripted = torch.jit.load(f"{others}/model.ts")(x)
onnx = ort.InferenceSession(f"{others}/model.onnx", providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
keep = found[..., 4] > 0.01  # the detections (equal scores of empty positions may come in any order)
for other in (scripted, torch.from_numpy(onnx)):
    assert other.shape == found.shape and torch.allclose(other[keep], found[keep], atol=1e-4)
assert "cyclecmda" not in sys.modules, "the artifact must load without the package"
torch.save(found, out)
"""


def test_boxes_refuse_the_translations_view():
    from cyclecmda.config.schema import SemanticConfig, TaskConfig
    from cyclecmda.errors import ConfigError
    from cyclecmda.method.semantic import SemanticLoss

    cfg = SemanticConfig(kind="boxes", pseudo_labels=["shape", "translations"])
    with pytest.raises(ConfigError, match="loss.semantic.pseudo_labels.*detector"):
        SemanticLoss(cfg, TaskConfig(width=4), 3, 1, ["background", "person", "car"], size=32)
