"""Boxes downstream: the small detector, mAP through torchmetrics, and cyclecmda downstream --task boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
import torch

from cyclecmda.cli import main
from cyclecmda.data.demo import generate_demo_data
from cyclecmda.errors import ConfigError
from cyclecmda.evaluate.detection import Boxed, score_boxes, train_and_score_boxes
from cyclecmda.models.detector import Detector

N_TRAIN, N_TEST = 12, 8


def squares(n: int, seed: int, size: int = 32) -> Boxed:
    """Gray images with one bright square (class 0) or one dark square (class 1) each, and its box."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    boxes, labels = [], []
    for i in range(n):
        side = int(torch.randint(8, 14, (1,), generator=g))
        x, y = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
        cls = i % 2
        images[i, :, y : y + side, x : x + side] = 0.9 if cls == 0 else -0.9
        boxes.append(torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32))
        labels.append(torch.tensor([cls]))
    return Boxed(images, boxes, labels)


class Oracle(torch.nn.Module):
    """Detections given, not learned: scores the scorer."""

    def __init__(self, found: List[dict]) -> None:
        super().__init__()
        self.found = found

    def forward(self, x: torch.Tensor) -> List[dict]:
        out, self.found = self.found[: len(x)], self.found[len(x):]
        return out


def test_map_is_one_for_the_true_boxes_and_falls_with_the_overlap():
    test = squares(6, 0)
    perfect = [{"boxes": b, "scores": torch.ones(1), "labels": c} for b, c in zip(test.boxes, test.labels)]
    assert score_boxes(Oracle(perfect), test) == {"map_50": pytest.approx(1.0), "map": pytest.approx(1.0)}
    # every box moved sideways by two thirds of its side: IoU 0.2, missed at every threshold
    moved = []
    for d in perfect:
        shift = float(d["boxes"][0, 2] - d["boxes"][0, 0]) * 2 / 3
        moved.append({**d, "boxes": d["boxes"] + torch.tensor([shift, 0.0, shift, 0.0])})
    assert score_boxes(Oracle(moved), test)["map_50"] == pytest.approx(0.0)
    wrong_class = [{**d, "labels": 1 - d["labels"]} for d in perfect]
    assert score_boxes(Oracle(wrong_class), test)["map_50"] == pytest.approx(0.0)


def test_small_detector_losses_detections_and_learning():
    torch.manual_seed(0)
    net = Detector("small_detector", 1, 2, width=8, size=32)
    data = squares(4, 1)
    losses = net(data.images, [{"boxes": b, "labels": c} for b, c in zip(data.boxes, data.labels)])
    assert set(losses) == {"heatmap", "size", "offset"} and all(v.requires_grad for v in losses.values())
    # an image without objects trains too (only the heatmap's negatives)
    empty = net(data.images[:1], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert empty["size"] == 0 and empty["heatmap"] > 0
    net.eval()
    found = net(data.images)
    assert len(found) == 4
    for d in found:
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["scores"]) == len(d["labels"]) <= 100
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 32).all() and set(d["labels"].tolist()) <= {0, 1}

    train, test = squares(48, 2), squares(16, 3)
    before = score_boxes(Detector("small_detector", 1, 2, width=8, size=32), test)["map_50"]
    after = train_and_score_boxes(train, test, 2, seed=0, epochs=25, width=8, batch_size=16)
    assert after["map_50"] > 0.8 > before + 0.5
    assert 0 < after["map"] <= after["map_50"]


def test_flipped_boxes_follow_the_image():
    data = squares(2, 4)
    targets = data.targets(torch.tensor([0, 1]), torch.tensor([True, False]))
    x0, y0, x1, y1 = data.boxes[0][0].tolist()
    assert targets[0]["boxes"][0].tolist() == [32 - x1, y0, 32 - x0, y1]
    assert torch.equal(targets[1]["boxes"], data.boxes[1])


def test_torchvision_detector_by_name_trains_and_detects_from_zero_based_classes():
    torch.manual_seed(0)
    net = Detector("torchvision.fcos_resnet50_fpn", 1, 2, size=32)
    data = squares(2, 5)
    losses = net(data.images, [{"boxes": b, "labels": c} for b, c in zip(data.boxes, data.labels)])
    assert losses and all(torch.isfinite(v) for v in losses.values())
    net.eval()
    found = net(data.images)
    assert len(found) == 2 and all(set(d["labels"].tolist()) <= {0, 1} for d in found)
    with pytest.raises(ConfigError, match="torchvision detection model"):
        Detector("torchvision.resnet18", 1, 2)
    with pytest.raises(ConfigError, match="small_detector"):
        Detector("small_segmenter", 1, 2)


# --- cyclecmda downstream --task boxes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detection") / "demo"
    generate_demo_data(root, n_train=N_TRAIN, n_test=N_TEST, size=32)
    return root


def boxes_config(demo: Path, b_boxes: bool = True) -> List[str]:
    args = [f"data.a.root={demo}/trainA", f"data.a.boxes={demo}/boxes/trainA.json",
            f"data.b.root={demo}/trainB", f"data.b.test_root={demo}/testB",
            f"data.b.test_boxes={demo}/boxes/testB.json", "data.b.channels=1", "data.b.bit_depth=16",
            "data.b.scale.mode=fixed", "data.b.scale.min=20000", "data.b.scale.max=40000",
            "data.load_size=32", "data.crop_size=32"]
    return args + ([f"data.b.boxes={demo}/boxes/trainB.json"] if b_boxes else [])


def test_downstream_boxes_reports_both_maps_for_every_arm(demo, exported, capsys):
    artifact = str(exported / "a2b")
    assert main(["downstream", *boxes_config(demo), "--artifact", f"mine={artifact}", "--epochs", "1",
                 "--width", "4", "--seeds", "0", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the task follows from data.a.boxes; classes from the COCO categories
    assert report["task"] == "boxes" and report["metric"] == "map_50" and report["metrics"] == ["map_50", "map"]
    assert report["classes"] == ["person", "car", "tree", "animal"]
    assert report["test"] == {"root": f"{demo}/testB", "images": N_TEST, "labels": "data.b.test_boxes"}
    assert report["model"]["name"] == "small_detector" and report["model"]["args"]["width"] == 4
    assert [(n, a["kind"]) for n, a in report["arms"].items()] == [
        ("as_is", "as_is"), ("mine", "translated"), ("real_b", "real_b"), ("mine+real_b", "mixed")]
    assert report["arms"]["mine+real_b"]["train_images"] == 2 * N_TRAIN
    for arm in report["arms"].values():
        assert arm["values"] == arm["metrics"]["map_50"]["values"] and len(arm["values"]) == 2
        assert all(0 <= v <= 1 for m in arm["metrics"].values() for v in m["values"])
    assert "boxes mirrored" in report["training"]["augmentation"]

    from cyclecmda.evaluate.downstream import format_table

    table = format_table(report).splitlines()
    assert table[0].startswith("mAP@0.5 and mAP@0.5:0.95 on 8 labelled B test images")
    assert "mAP@0.5 mean ± s.e." in table[1] and "mAP@0.5:0.95 mean ± s.e." in table[1]


def test_downstream_boxes_refusals_name_what_is_missing(demo, exported, capsys):
    args = [a for a in boxes_config(demo) if not a.startswith("data.b.test_boxes")]
    assert main(["downstream", *args, "--task", "boxes", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.b.test_boxes" in err
    assert main(["downstream", *boxes_config(demo), "--model", "small_classifier", "--epochs", "1"]) == 2
    assert "not a detector" in capsys.readouterr().err
    assert main(["downstream", *boxes_config(demo, b_boxes=False), "--artifact", str(exported / "a2b"),
                 "--arms", "mixed", "--epochs", "1"]) == 2
    assert "data.b.boxes" in capsys.readouterr().err
