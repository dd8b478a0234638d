"""Does the translation help a downstream model? Measured on the built-in demo data.

The same small classifier is trained three ways and tested on real thermal (B) test images:

  (a) visible_gray:  labelled visible (A) training images, as gray frames (no translation)
  (b) translated:    the same labelled A images passed through the exported A -> B translator
  (c) thermal:       labelled thermal (B) training images (the ceiling)

    python tools/downstream_check.py [--artifact checkpoints/quickstart/export/a2b] [--demo data/demo]
                                     [--seeds 0 1 2 3 4 5 6 7 8 9] [--epochs 20]

Without an artifact, the quickstart translator is trained first (about six minutes). Prints JSON with
each arm's accuracy per seed, mean, standard deviation over seeds and standard error of the mean.
A classifier trained on one domain and tested on another is erratic: the same training images
give accuracies from about 0.2 to 0.6 depending on the seed, so compare arms by their means over
many seeds (the default ten), never by one or two.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from cyclecmda.augment.core import load_artifact
from cyclecmda.augment.albu import translate_batch
from cyclecmda.images import read_image, to_channels

ROOT = Path(__file__).resolve().parents[1]


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


def classifier(n_classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, n_classes))


def train_and_test(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = classifier(int(max(y.max(), y_test.max())) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
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


def ensure_inputs(demo: Path, artifact: Path) -> None:
    if not (demo / "dataset.json").is_file():
        from cyclecmda.demo import generate_demo_data

        generate_demo_data(demo)
    if not (artifact / "meta.json").is_file():
        from cyclecmda.config import load_config
        from cyclecmda.trainer import train

        print(f"no translator at {artifact}: training the quickstart one first", file=sys.stderr)
        train(load_config([ROOT / "configs" / "quickstart.yaml"], [f"data.demo_dir={demo}",
              f"data.a.root={demo}/trainA", f"data.b.root={demo}/trainB", f"data.a.test_root={demo}/testA",
              f"data.b.test_root={demo}/testB", f"run.out_dir={artifact.parent.parent.parent}",
              f"run.name={artifact.parent.parent.name}", "train.export_on_finish=true"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("checkpoints/quickstart/export/a2b"))
    parser.add_argument("--demo", type=Path, default=Path("data/demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    ensure_inputs(args.demo, args.artifact)
    lo, hi = json.loads((args.demo / "dataset.json").read_text())["b_range"]
    paths_a, labels_a = read_split(args.demo / "trainA")
    paths_b, labels_b = read_split(args.demo / "trainB")
    paths_test, labels_test = read_split(args.demo / "testB")
    x_test = thermal_unit(paths_test, lo, hi)
    arms: Dict[str, Tuple[np.ndarray, np.ndarray]] = {
        "a_visible_gray": (visible_gray(paths_a), labels_a),
        "b_translated": (translated(paths_a, args.artifact, lo, hi), labels_a),
        "c_thermal": (thermal_unit(paths_b, lo, hi), labels_b),
    }
    t0 = time.perf_counter()
    results = {}
    for name, (x, y) in arms.items():
        accs = [train_and_test(x, y, x_test, labels_test, seed, args.epochs) for seed in args.seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        results[name] = {
            "accuracy_mean": round(statistics.mean(accs), 4),
            "accuracy_sd": round(sd, 4),
            "accuracy_sem": round(sd / len(accs) ** 0.5, 4),
            "accuracy_per_seed": [round(a, 4) for a in accs],
        }
    print(json.dumps({
        "benchmark": "downstream_check",
        "artifact": str(args.artifact),
        "test_set": f"{args.demo}/testB ({len(labels_test)} real thermal images, {int(labels_test.max()) + 1} classes)",
        "train_images": len(labels_a),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
