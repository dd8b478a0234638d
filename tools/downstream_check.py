"""Does the translation help a downstream model? Measured on the built-in demo data.

The same small model is trained three ways and tested on real thermal (B) test images:

  (a) visible_gray:  labelled visible (A) training images, as gray frames (no translation)
  (b) translated:    the same labelled A images passed through the exported A -> B translator
  (c) thermal:       labelled thermal (B) training images (the ceiling)

``--task class`` (the default) trains a small classifier on each image's main object class and
reports accuracy; ``--task mask`` trains a small segmenter (cyclecmda's ``small_segmenter``) on
the demo's label masks (background and the four classes) for ``--mask-epochs`` epochs and reports
the mean IoU over the test set; ``--task both`` runs both. The segmenter needs more epochs than the
classifier: after 20 its score on real thermal images still ranged from 0.40 to 0.87 between seeds
even when trained on real thermal images; by 60 it has levelled off (docs/benchmarks.md).

    python tools/downstream_check.py [--artifact checkpoints/quickstart/export/a2b] [--demo data/demo]
                                     [--task class|mask|both] [--seeds 0 1 2 ...] [--epochs 20]
                                     [--mask-epochs 60] [--arms a_visible_gray b_translated c_thermal]

Without an artifact, the quickstart translator is trained first (about ten minutes). Prints JSON with
each arm's accuracy (or mIoU) per seed, mean, standard deviation over seeds and standard error of the
mean. Arms (a) and (c) do not depend on the translator and give the same values on every run with the
same seeds: ``--arms b_translated`` scores another translator against them in a third of the time.
A classifier trained on one domain and tested on another varies with its seed, so compare arms by
their means over many seeds (ten by default; three for the segmenter), never by one or two. The classifier uses group
norm; the batch-norm one of earlier versions (``--norm batch``) collapsed to a single class on
some seeds, even when trained and tested on real thermal images. ``--classifier small`` trains
cyclecmda's own ``small_classifier`` task network instead (deeper; give it ``--epochs 80``): the
shallow default generalises poorly from translated to real images, and the two can rank arms
very differently (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from cyclecmda.augment.core import load_artifact
from cyclecmda.augment.albu import translate_batch
from cyclecmda.images import read_image, to_channels

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("a_visible_gray", "b_translated", "c_thermal")


def read_split(folder: Path) -> Tuple[List[Path], np.ndarray]:
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [folder / r["filename"] for r in rows], np.array([int(r["label"]) for r in rows])


def thermal_unit(paths: List[Path], lo: float, hi: float) -> np.ndarray:
    """(N, 1, H, W) float32 in [0, 1]: raw thermal counts scaled by the demo camera's range."""
    return np.stack([np.clip((read_image(p)[..., 0].astype(np.float32) - lo) / (hi - lo), 0, 1)[None] for p in paths])


def visible_gray(paths: List[Path]) -> np.ndarray:
    return np.stack([to_channels(read_image(p), 1)[..., 0].astype(np.float32)[None] / 255.0 for p in paths])


def translated(paths: List[Path], artifact: Path, lo: float, hi: float, batch: int = 32) -> np.ndarray:
    """A images through the translator, as raw thermal counts scaled like the real ones (by lo, hi)."""
    art = load_artifact(artifact)
    out_lo, out_hi = art.meta["output"]["value_range"]  # the translator's own output scaling
    out = []
    for i in range(0, len(paths), batch):
        images = np.stack([read_image(p).astype(np.float32) / 255.0 for p in paths[i : i + batch]])
        unit = translate_batch(art, images, [1.0] * len(images), "cpu", keep_input_channels=False)
        counts = unit * (out_hi - out_lo) + out_lo
        out.append(np.clip((counts - lo) / (hi - lo), 0, 1))
    return np.concatenate(out).transpose(0, 3, 1, 2).astype(np.float32)


def classifier(n_classes: int, norm: str = "group") -> nn.Module:
    """Three conv blocks and a linear head. ``norm="group"`` (the default): group norm, the same in
    training and evaluation; ``"batch"``: batch norm, the classifier of earlier versions of this
    tool, which collapses to one class on some seeds even on real thermal data."""
    def block(cin: int, cout: int) -> nn.Sequential:
        layer = nn.GroupNorm(8, cout) if norm == "group" else nn.BatchNorm2d(cout)
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), layer, nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, n_classes))


class Signed(nn.Module):
    """[0, 1] -> [-1, 1], the scale cyclecmda's task networks see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1


def small_classifier(in_channels: int, n_classes: int, width: int) -> nn.Module:
    """cyclecmda's own ``small_classifier`` task network (eight conv layers, group norm, global pooling)."""
    from cyclecmda.models.task import TaskNetwork

    return nn.Sequential(Signed(), TaskNetwork("small_classifier", "class", in_channels, n_classes, width))


def train_and_test(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, epochs: int,
                   norm: str = "group", arch: str = "tool", width: int = 16) -> float:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n_classes = int(max(y.max(), y_test.max())) + 1
    if arch == "small":
        model, lr = small_classifier(x.shape[1], n_classes, width), 1e-3
    else:
        model, lr = classifier(n_classes, norm), 2e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xs), generator=g).split(32):
            batch = xs[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = nn.functional.cross_entropy(model(batch), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((pred == y_test).mean())


def read_masks(demo: Path, split: str, paths: List[Path]) -> np.ndarray:
    """(N, H, W) int64 class per pixel of a split's images (the demo's masks/<split>/ PNGs)."""
    return np.stack([read_image(demo / "masks" / split / p.name)[..., 0].astype(np.int64) for p in paths])


def train_and_test_segmenter(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
                             epochs: int, n_classes: int, width: int) -> float:
    """Mean IoU over the test set of a small segmenter trained on (x, y) (random horizontal flips)."""
    from cyclecmda.models.task import SmallSegmenter
    from cyclecmda.semantic import score

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallSegmenter(1, n_classes, width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x) * 2 - 1, torch.from_numpy(y)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xs), generator=g).split(32):
            flip = (torch.rand(len(idx), generator=g) < 0.5).view(-1, 1, 1)
            batch = torch.where(flip.unsqueeze(1), xs[idx].flip(-1), xs[idx])
            target = torch.where(flip, ys[idx].flip(-1), ys[idx])
            loss = nn.functional.cross_entropy(model(batch), target, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(b) for b in (torch.from_numpy(x_test) * 2 - 1).split(64)])
    return score(logits, torch.from_numpy(y_test), "mask", n_classes)[0]


def summary(values: List[float], name: str) -> Dict[str, object]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {f"{name}_mean": round(statistics.mean(values), 4), f"{name}_sd": round(sd, 4),
            f"{name}_sem": round(sd / len(values) ** 0.5, 4), f"{name}_per_seed": [round(v, 4) for v in values]}


def ensure_inputs(demo: Path, artifact: Optional[Path]) -> None:
    if not (demo / "dataset.json").is_file():
        from cyclecmda.demo import generate_demo_data

        generate_demo_data(demo)
    if artifact is not None and not (artifact / "meta.json").is_file():
        from cyclecmda.config import load_config
        from cyclecmda.trainer import train

        print(f"no translator at {artifact}: training the quickstart one first", file=sys.stderr)
        train(load_config([ROOT / "configs" / "quickstart.yaml"], [f"data.demo_dir={demo}",
              f"data.a.root={demo}/trainA", f"data.b.root={demo}/trainB", f"data.a.test_root={demo}/testA",
              f"data.b.test_root={demo}/testB", f"data.a.labels={demo}/trainA/labels.csv",
              f"data.a.test_labels={demo}/testA/labels.csv", f"data.b.test_labels={demo}/testB/labels.csv",
              f"run.out_dir={artifact.parent.parent.parent}",
              f"run.name={artifact.parent.parent.name}", "train.export_on_finish=true"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("checkpoints/quickstart/export/a2b"))
    parser.add_argument("--demo", type=Path, default=Path("data/demo"))
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="training seeds of each arm's model (default: 0-9 for classifiers, 0-2 for segmenters, "
                             "whose scores vary less between seeds once trained for --mask-epochs)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="which arms to train (default all three; only (a) and (c) need no translator)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--task", choices=["class", "mask", "both"], default="class")
    parser.add_argument("--mask-epochs", type=int, default=60, help="epochs of the segmenter (--task mask|both)")
    parser.add_argument("--segmenter-width", type=int, default=8)
    parser.add_argument("--norm", choices=["group", "batch"], default="group",
                        help="the classifier's normalisation (batch: the erratic classifier of earlier versions)")
    parser.add_argument("--classifier", choices=["tool", "small"], default="tool",
                        help="tool: this tool's three-block CNN (lr 2e-3); small: cyclecmda's small_classifier task "
                             "network (eight conv layers, lr 1e-3; give it more --epochs, e.g. 80)")
    parser.add_argument("--classifier-width", type=int, default=16, help="width of --classifier small")
    args = parser.parse_args()
    ensure_inputs(args.demo, args.artifact if "b_translated" in args.arms else None)
    lo, hi = json.loads((args.demo / "dataset.json").read_text())["b_range"]
    paths_a, labels_a = read_split(args.demo / "trainA")
    paths_b, labels_b = read_split(args.demo / "trainB")
    paths_test, labels_test = read_split(args.demo / "testB")
    x_test = thermal_unit(paths_test, lo, hi)
    read = {"a_visible_gray": lambda: visible_gray(paths_a),
            "b_translated": lambda: translated(paths_a, args.artifact, lo, hi),
            "c_thermal": lambda: thermal_unit(paths_b, lo, hi)}
    inputs = {name: read[name]() for name in args.arms}
    class_seeds, mask_seeds = args.seeds or list(range(10)), args.seeds or [0, 1, 2]
    t0 = time.perf_counter()
    results: Dict[str, Dict[str, object]] = {}
    report: Dict[str, object] = {}
    if args.task in ("class", "both"):
        labels = {"a_visible_gray": labels_a, "b_translated": labels_a, "c_thermal": labels_b}
        for name, x in inputs.items():
            results[name] = summary([train_and_test(x, labels[name], x_test, labels_test, seed, args.epochs, args.norm,
                                                    args.classifier, args.classifier_width)
                                     for seed in class_seeds], "accuracy")
    if args.task in ("mask", "both"):
        if not (args.demo / "masks").is_dir():
            sys.exit(f"{args.demo} has no masks/ (written by an older cyclecmda); regenerate it with "
                     f"'cyclecmda demo-data {args.demo}'.")
        masks = {split: read_masks(args.demo, split, paths) for split, paths in
                 (("trainA", paths_a), ("trainB", paths_b), ("testB", paths_test))}
        n_classes = len(json.loads((args.demo / "dataset.json").read_text())["mask_classes"])
        train_masks = {"a_visible_gray": masks["trainA"], "b_translated": masks["trainA"], "c_thermal": masks["trainB"]}
        segmentation = {}
        for name, x in inputs.items():
            segmentation[name] = summary([train_and_test_segmenter(x, train_masks[name], x_test, masks["testB"], seed,
                                                                   args.mask_epochs, n_classes, args.segmenter_width)
                                          for seed in mask_seeds], "miou")
        report["segmentation"] = segmentation
        if {"b_translated", "c_thermal"} <= set(segmentation) and segmentation["c_thermal"]["miou_mean"]:
            ratio = segmentation["b_translated"]["miou_mean"] / segmentation["c_thermal"]["miou_mean"]
            report["segmentation_b_of_c"] = round(ratio, 4)
    print(json.dumps({
        "benchmark": "downstream_check",
        "artifact": str(args.artifact) if "b_translated" in args.arms else None,
        "test_set": f"{args.demo}/testB ({len(labels_test)} real thermal images, {int(labels_test.max()) + 1} classes)",
        "train_images": len(labels_a),
        **({"seeds": class_seeds, "epochs": args.epochs} if args.task != "mask" else {}),
        **({"mask_seeds": mask_seeds, "mask_epochs": args.mask_epochs} if args.task != "class" else {}),
        "seconds": round(time.perf_counter() - t0, 1),
        "task": args.task,
        **({"classifier_norm": args.norm,
            "classifier": args.classifier if args.classifier == "tool" else f"small_classifier width {args.classifier_width}"}
           if args.task != "mask" else {"segmenter": f"small_segmenter width {args.segmenter_width}"}),
        "results": results,
        **report,
    }, indent=2))


if __name__ == "__main__":
    main()
