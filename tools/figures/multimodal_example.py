"""A (visible, synthesized infrared, mask, box) training batch from visible-only demo data.

    python tools/figures/multimodal_example.py [--artifact checkpoints/quickstart/export/a2b] [--demo data/demo]
                                       [--out docs/images/multimodal_example.png] [--n 4] [--workers 2]

The demo's visible training images come with their main object's mask and box (recomputed from
the scene parameters). Each sample goes through one MultiModalCompose: the thermal view is
synthesized by the exported visible -> thermal translator, then a random crop, flip and rotation
move visible, thermal, mask and box together, colour jitter touches the visible image only and
sensor noise the thermal one, and ModalityDropout blanks one sensor now and then. A DataLoader
with worker processes collates the batch and CrossModalMixup mixes it. The picture shows, per
sample: visible, synthesized thermal and mask before augmentation, then the three after it,
with the box drawn. Prints a JSON summary of the batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import albumentations as A
import cv2
import numpy as np
import torch
from sheets import framed_row, titles, to_rgb
from torch.utils.data import DataLoader, Dataset

from cyclecmda.augment import CrossModalMixup, ModalityDropout, MultiModalCompose, Synthesis, load_artifact
from cyclecmda.data.demo import CLASS_NAMES, demo_scene, object_masks
from cyclecmda.data.images import read_image

MODALITIES = {"visible": "image", "infrared": "image", "segmentation": "mask"}
COLUMNS = (("visible", "(labelled input)"), ("thermal", "(synthesized)"), ("mask", ""),
           ("visible", "augmented + box"), ("thermal", "augmented + box"), ("mask", "augmented + box"))


def labelled_visible(demo: Path, index: int) -> Dict[str, Any]:
    """A visible demo image with its main object's mask, box and class (from the scene parameters)."""
    info = json.loads((demo / "dataset.json").read_text())
    scene = demo_scene(int(info["seed"]), "trainA", index, int(info["image_size"][0]))
    mask = (object_masks(scene) == len(scene.objects) - 1).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    return {
        "visible": read_image(demo / "trainA" / f"{index:05d}.png"),
        "segmentation": mask,
        "bboxes": [[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]],
        "labels": [scene.label],
    }


def pipeline(artifact: Path, size: int, seed: int) -> MultiModalCompose:
    crop = size * 7 // 8
    return MultiModalCompose(
        MODALITIES,
        geometric=[A.RandomCrop(crop, crop), A.HorizontalFlip(), A.Rotate(limit=15, border_mode=cv2.BORDER_REFLECT_101)],
        photometric={"visible": [A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8)],
                     "infrared": [A.GaussNoise(std_range=(0.002, 0.006), p=1.0)]},
        synthesize={"infrared": Synthesis(source="visible", artifact=str(artifact))},
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3),
        after=[ModalityDropout({"visible": 0.15, "infrared": 0.15}, seed=seed)],
        seed=seed,
    )


class LabelledPairs(Dataset):
    """Visible-only demo samples turned into aligned (visible, infrared, mask) training samples."""

    def __init__(self, demo: Path, count: int, aug: MultiModalCompose) -> None:
        self.demo, self.count, self.aug = demo, count, aug

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Dict[str, Any]:
        out = self.aug(**labelled_visible(self.demo, i))
        box = out["bboxes"][0] if len(out["bboxes"]) else [0.0, 0.0, 0.0, 0.0]  # may leave the crop
        return {
            "visible": torch.from_numpy(np.ascontiguousarray(out["visible"])).permute(2, 0, 1).float() / 255,
            "infrared": torch.from_numpy(out["infrared"].astype(np.float32)).reshape(1, *out["infrared"].shape[:2]),
            "segmentation": torch.from_numpy(np.ascontiguousarray(out["segmentation"])).float(),
            "box": torch.tensor(box, dtype=torch.float32),
            "label": int(out["labels"][0]) if len(out["labels"]) else -1,
            "dropped": out["dropped"],
        }


def picture(before: List[Dict[str, Any]], after: Dict[str, torch.Tensor], ir_range: List[float], scale: int) -> np.ndarray:
    size = before[0]["visible"].shape[0]
    rows = []
    for i, b in enumerate(before):
        crop = after["visible"].shape[-1]
        pad = (size - crop) // 2
        cells = [b["visible"], to_rgb(b["infrared"], *ir_range), to_rgb(b["segmentation"], 0, 1)]
        a_vis = (after["visible"][i].permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        a_ir = to_rgb(after["infrared"][i, 0].numpy(), *ir_range)
        a_mask = to_rgb(after["segmentation"][i].numpy(), 0, 1)
        x0, y0, x1, y1 = after["box"][i].round().int().tolist()
        for cell in (np.ascontiguousarray(a_vis), np.ascontiguousarray(a_ir), np.ascontiguousarray(a_mask)):
            if x1 > x0:
                cv2.rectangle(cell, (x0, y0), (x1 - 1, y1 - 1), (255, 64, 64), 1)
            cells.append(cv2.copyMakeBorder(cell, pad, size - crop - pad, pad, size - crop - pad,
                                            cv2.BORDER_CONSTANT, value=(255, 255, 255)))
        rows.append(framed_row([np.ascontiguousarray(c) for c in cells]))
    grid = cv2.resize(np.concatenate(rows, 0), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return np.concatenate([titles(grid.shape[1], COLUMNS), grid], 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("checkpoints/quickstart/export/a2b"))
    parser.add_argument("--demo", type=Path, default=Path("data/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/images/multimodal_example.png"))
    parser.add_argument("--n", type=int, default=4, help="samples in the batch and the picture")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.artifact / "meta.json").is_file():
        sys.exit(f"no exported translator at {args.artifact}: run 'cyclecmda train configs/quickstart.yaml' first "
                 "(it exports to checkpoints/quickstart/export), or pass --artifact.")
    if not (args.demo / "dataset.json").is_file():
        sys.exit(f"no demo data at {args.demo}: run 'cyclecmda demo-data {args.demo}' first, or pass --demo.")
    meta = load_artifact(args.artifact).meta
    ir_range = meta["output"]["value_range"]
    size = int(json.loads((args.demo / "dataset.json").read_text())["image_size"][0])

    plain = MultiModalCompose(MODALITIES, synthesize={"infrared": Synthesis("visible", str(args.artifact))})
    before = []
    for i in range(args.n):
        sample = labelled_visible(args.demo, i)
        before.append(plain(visible=sample["visible"], segmentation=sample["segmentation"]))
    loader = DataLoader(LabelledPairs(args.demo, args.n, pipeline(args.artifact, size, args.seed)),
                        batch_size=args.n, num_workers=args.workers)
    batch = next(iter(loader))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture(before, batch, ir_range, scale=3), cv2.COLOR_RGB2BGR))

    kept = batch["infrared"][~batch["dropped"]["infrared"]]
    mixed = CrossModalMixup(["visible", "infrared"], alpha=0.4, num_classes=len(CLASS_NAMES),
                            masks=["segmentation"], seed=args.seed)(batch)
    print(json.dumps({
        "picture": str(args.out),
        "batch": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                  for k, v in batch.items() if torch.is_tensor(v)},
        "infrared_raw_range": [float(kept.min()), float(kept.max())] if len(kept) else None,  # not dropped
        "translator_output_range": ir_range,
        "dropped": {k: v.tolist() for k, v in batch["dropped"].items()},
        "labels": [CLASS_NAMES[i] if i >= 0 else None for i in batch["label"].tolist()],
        "mixup_lambda": [round(x, 3) for x in mixed["mixup_lambda"].tolist()],
    }, indent=2))


if __name__ == "__main__":
    main()
