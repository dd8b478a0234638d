"""Does the translation help a downstream model? ``cyclecmda downstream`` on the built-in demo data.

The same small model is trained three ways and tested on real thermal (B) test images:

  (a) a_visible_gray:  labelled visible (A) training images, as gray frames (no translation)
  (b) b_translated:    the same labelled A images passed through the exported A -> B translator
  (c) c_thermal:       labelled thermal (B) training images (the ceiling)

This is :func:`cyclecmda.evaluate.downstream.measure` with the demo folder's layout filled in (its labels,
masks and thermal camera range), and its JSON keeps this tool's arm names. For your own data,
use ``cyclecmda downstream CONFIG --artifact DIR`` directly.

``--task class`` (the default) trains a classifier on each image's main object class and reports
accuracy; ``--task mask`` trains cyclecmda's ``small_segmenter`` on the demo's label masks for
``--mask-epochs`` epochs and reports mean IoU; ``--task both`` runs both. The classifier is, by
default, this tool's shallow three-block CNN (group norm, lr 2e-3, 20 epochs), which the figures in
README.md and docs/experiments.md were measured with; ``--classifier small`` trains cyclecmda's own
``small_classifier`` (lr 1e-3; give it ``--epochs 80``), the default of ``cyclecmda downstream``.
The two can rank arms very differently (docs/experiments.md).

    python tools/measure/downstream_check.py [--artifact checkpoints/quickstart/export/a2b] [--demo data/demo]
                                     [--task class|mask|both] [--seeds 0 1 2 ...] [--epochs 20]
                                     [--mask-epochs 60] [--arms a_visible_gray b_translated c_thermal]

Without an artifact, the quickstart translator is trained first (about ten minutes). Prints JSON with
each arm's accuracy (or mIoU) per seed, mean, standard deviation over seeds and standard error of the
mean. Arms (a) and (c) do not depend on the translator and give the same values on every run with the
same seeds: ``--arms b_translated`` scores another translator against them in a third of the time.
A shallow classifier trained on one domain and tested on another varies with its seed, so compare arms
by their means over many seeds (ten by default; three for the segmenter), never by one or two.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from cyclecmda.config import Config, load_config
from cyclecmda.evaluate.downstream import measure

ROOT = Path(__file__).resolve().parents[2]
ARMS = {"a_visible_gray": "as_is", "b_translated": "translated", "c_thermal": "real_b"}
ARM_NAMES = {"as_is": "a_visible_gray", "b_translated": "b_translated", "real_b": "c_thermal"}


def shallow_classifier(norm: str = "group") -> Callable[[int, int], nn.Module]:
    """This tool's classifier: three conv blocks and a linear head, reading [0, 1] images.
    ``norm="batch"``: a batch-norm classifier, which collapses to one class on some seeds even on
    real thermal data (docs/experiments.md)."""

    def block(cin: int, cout: int) -> nn.Sequential:
        layer = nn.GroupNorm(8, cout) if norm == "group" else nn.BatchNorm2d(cout)
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), layer, nn.ReLU(), nn.MaxPool2d(2))

    def build(in_channels: int, num_classes: int) -> nn.Module:
        return nn.Sequential(Unsigned(), block(in_channels, 16), block(16, 32), block(32, 64),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    build.__name__ = f"shallow_classifier_{norm}_norm"
    return build


class Unsigned(nn.Module):
    """[-1, 1] -> [0, 1], the scale the shallow classifier was measured on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2


def demo_config(demo: Path, task: str) -> Config:
    """The demo folder as a config: labelled visible A, labelled thermal B (training and test)."""
    info = json.loads((demo / "dataset.json").read_text())
    lo, hi = info["b_range"]
    size = info["image_size"][0] if "image_size" in info else 64
    overrides = [f"data.a.root={demo}/trainA", f"data.b.root={demo}/trainB", f"data.b.test_root={demo}/testB",
                 "data.a.channels=3", "data.a.bit_depth=8", "data.b.channels=1", "data.b.bit_depth=16",
                 "data.b.scale.mode=fixed", f"data.b.scale.min={lo}", f"data.b.scale.max={hi}",
                 f"data.load_size={size}", f"data.crop_size={size}"]
    if task == "class":
        overrides += [f"data.a.labels={demo}/trainA/labels.csv", f"data.b.labels={demo}/trainB/labels.csv",
                      f"data.b.test_labels={demo}/testB/labels.csv"]
    else:
        names = ",".join(c["name"] for c in sorted(info["mask_classes"], key=lambda c: c["value"]))
        overrides += [f"data.a.masks={demo}/masks/trainA", f"data.b.masks={demo}/masks/trainB",
                      f"data.b.test_masks={demo}/masks/testB", f"data.mask_classes={names}"]
    return load_config([], overrides)


def summary(arm: Dict[str, Any], name: str) -> Dict[str, object]:
    sd = arm["std"] or 0.0
    return {f"{name}_mean": round(arm["mean"], 4), f"{name}_sd": round(sd, 4),
            f"{name}_sem": round(sd / arm["n"] ** 0.5, 4), f"{name}_per_seed": [round(v, 4) for v in arm["values"]]}


def run(demo: Path, task: str, arms: List[str], artifact: Path, seeds: List[int], epochs: int,
        model: Any, width: int, lr: Optional[float]) -> Dict[str, Any]:
    """One task's arms through cyclecmda.evaluate.downstream.measure, keyed by this tool's arm names."""
    translators = {"b_translated": artifact} if "b_translated" in arms else {}
    report = measure(demo_config(demo, task), translators, task=task, arms=[ARMS[a] for a in arms], model=model,
                     width=width, epochs=epochs, seeds=seeds, lr=lr, progress=True)
    metric = "accuracy" if task == "class" else "miou"
    return {"report": report,
            "arms": {ARM_NAMES[name]: summary(arm, metric) for name, arm in report["arms"].items()}}


def ensure_inputs(demo: Path, artifact: Optional[Path]) -> None:
    if not (demo / "dataset.json").is_file():
        from cyclecmda.data.demo import generate_demo_data

        generate_demo_data(demo)
    if artifact is not None and not (artifact / "meta.json").is_file():
        from cyclecmda.train.trainer import train

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
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="which arms to train (default all three; only (a) and (c) need no translator)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--task", choices=["class", "mask", "both"], default="class")
    parser.add_argument("--mask-epochs", type=int, default=60, help="epochs of the segmenter (--task mask|both)")
    parser.add_argument("--segmenter-width", type=int, default=8)
    parser.add_argument("--norm", choices=["group", "batch"], default="group",
                        help="the shallow classifier's normalisation (batch: erratic, see docs/experiments.md)")
    parser.add_argument("--classifier", choices=["tool", "small"], default="tool",
                        help="tool: this tool's three-block CNN (lr 2e-3); small: cyclecmda's small_classifier task "
                             "network (eight conv layers, lr 1e-3; give it more --epochs, e.g. 80)")
    parser.add_argument("--classifier-width", type=int, default=16, help="width of --classifier small")
    args = parser.parse_args()
    ensure_inputs(args.demo, args.artifact if "b_translated" in args.arms else None)
    if args.task != "class" and not (args.demo / "masks").is_dir():
        sys.exit(f"{args.demo} has no masks/ (written by an older cyclecmda); regenerate it with "
                 f"'cyclecmda demo-data {args.demo}'.")
    arms = [a for a in ARMS if a in args.arms]
    class_seeds, mask_seeds = args.seeds or list(range(10)), args.seeds or [0, 1, 2]
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"results": {}}
    test_images = None
    if args.task in ("class", "both"):
        model = shallow_classifier(args.norm) if args.classifier == "tool" else "small_classifier"
        lr = 2e-3 if args.classifier == "tool" else 1e-3
        done = run(args.demo, "class", arms, args.artifact, class_seeds, args.epochs, model, args.classifier_width, lr)
        out["results"], test_images = done["arms"], done["report"]
    if args.task in ("mask", "both"):
        done = run(args.demo, "mask", arms, args.artifact, mask_seeds, args.mask_epochs, "small_segmenter",
                   args.segmenter_width, 2e-3)
        test_images = test_images or done["report"]
        out["segmentation"] = seg = done["arms"]
        if {"b_translated", "c_thermal"} <= set(seg) and seg["c_thermal"]["miou_mean"]:
            out["segmentation_b_of_c"] = round(seg["b_translated"]["miou_mean"] / seg["c_thermal"]["miou_mean"], 4)
    report = test_images
    print(json.dumps({
        "benchmark": "downstream_check",
        "artifact": str(args.artifact) if "b_translated" in args.arms else None,
        "test_set": f"{args.demo}/testB ({report['test']['images']} real thermal images, "
                    f"{len(json.loads((args.demo / 'dataset.json').read_text())['classes'])} classes)",
        "train_images": next(iter(report["arms"].values()))["train_images"],
        **({"seeds": class_seeds, "epochs": args.epochs} if args.task != "mask" else {}),
        **({"mask_seeds": mask_seeds, "mask_epochs": args.mask_epochs} if args.task != "class" else {}),
        "seconds": round(time.perf_counter() - t0, 1),
        "task": args.task,
        **({"classifier_norm": args.norm,
            "classifier": args.classifier if args.classifier == "tool" else f"small_classifier width {args.classifier_width}"}
           if args.task != "mask" else {"segmenter": f"small_segmenter width {args.segmenter_width}"}),
        "downstream": {k: v for k, v in report.items() if k not in ("arms", "gap_share")},
        **out,
    }, indent=2))


if __name__ == "__main__":
    main()
