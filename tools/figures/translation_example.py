"""Visible demo test images, their translations by one or more exported translators, and the real
thermal frames of the same scenes, side by side.

    python tools/figures/translation_example.py [--artifact checkpoints/quickstart/export/a2b ...] [--title T ...]
                                        [--demo data/demo] [--per-class 2] [--window real|translator]
                                        [--boxes] [--out docs/images/translations.png]

The demo test set is paired (every visible test image has its thermal counterpart rendered from
the same scene), so the picture shows what each translator makes of an object next to what the
thermal camera saw. Rows are the first ``--per-class`` test images of each class in
``testA/labels.csv`` order; nothing is picked by how it looks. Every thermal column (translations
and real frames) is drawn with the same raw-count window: by default (``real``) the 0.5th to 99.5th
percentile of the real thermal frames shown, which spans the scenes' temperatures rather than the
camera's whole range; ``translator`` takes the first translator's output range instead. With
``--boxes`` each visible image and its translations carry the visible image's boxes
(``boxes/testA.json``), and the real frame its own (``boxes/testB.json``), coloured by class. Prints
a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from sheets import framed_row, titles, to_rgb

from cyclecmda.augment import MultiModalCompose, Synthesis, load_artifact
from cyclecmda.data.images import read_image


def test_rows(demo: Path, per_class: int) -> List[Tuple[str, str]]:
    """(file name, class) of the first ``per_class`` visible test images of each class, class by class."""
    with open(demo / "testA" / "labels.csv", newline="") as f:
        entries = [(row["filename"], row["class_name"]) for row in csv.DictReader(f)]
    classes = list(dict.fromkeys(label for _, label in entries))
    return [entry for c in classes for entry in [e for e in entries if e[1] == c][:per_class]]


BOX_COLOURS = [(230, 40, 40), (40, 90, 230), (30, 170, 60), (240, 150, 0), (170, 60, 200), (0, 170, 190)]
SCALE = 3  # the picture's pixels per image pixel


def coco_boxes(path: Path) -> Dict[str, List[Tuple[List[float], str]]]:
    """File name -> [(x, y, width, height), class name] of a COCO boxes file."""
    coco = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out: Dict[str, List[Tuple[List[float], str]]] = {}
    for ann in coco["annotations"]:
        out.setdefault(files[ann["image_id"]], []).append((ann["bbox"], names[ann["category_id"]]))
    return out


def with_boxes(cell: np.ndarray, boxes: List[Tuple[List[float], str]], classes: List[str]) -> np.ndarray:
    """An RGB cell enlarged SCALE times with its boxes drawn on it."""
    big = np.ascontiguousarray(cv2.resize(cell, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST))
    for (x, y, w, h), name in boxes:
        colour = BOX_COLOURS[classes.index(name) % len(BOX_COLOURS)]
        cv2.rectangle(big, (round(x * SCALE), round(y * SCALE)), (round((x + w) * SCALE) - 1, round((y + h) * SCALE) - 1),
                      colour, 1)
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, nargs="+", default=[Path("checkpoints/quickstart/export/a2b")])
    parser.add_argument("--title", nargs="+", default=None,
                        help="a column title per artifact (default: the run folder's name)")
    parser.add_argument("--demo", type=Path, default=Path("data/demo"))
    parser.add_argument("--per-class", type=int, default=2, help="rows per class")
    parser.add_argument("--window", choices=["real", "translator"], default="real",
                        help="raw-count window of the thermal columns (see above)")
    parser.add_argument("--boxes", action="store_true", help="draw the test images' boxes (boxes/testA.json, testB.json)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/translations.png"))
    args = parser.parse_args()
    for artifact in args.artifact:
        if not (artifact / "meta.json").is_file():
            sys.exit(f"no exported translator at {artifact}: run 'cyclecmda train configs/quickstart.yaml' first "
                     "(it exports to checkpoints/quickstart/export), or pass --artifact.")
    if args.title is not None and len(args.title) != len(args.artifact):
        sys.exit(f"--title gives {len(args.title)} titles for {len(args.artifact)} artifacts; give one per artifact.")
    if not (args.demo / "testA" / "labels.csv").is_file():
        sys.exit(f"no demo data at {args.demo}: run 'cyclecmda demo-data {args.demo}' first, or pass --demo.")
    names = args.title or [a.resolve().parent.parent.name for a in args.artifact]
    translate = [MultiModalCompose({"visible": "image", "infrared": "image"},
                                   synthesize={"infrared": Synthesis("visible", str(a))}) for a in args.artifact]
    shown = [{"file": name, "class": label} for name, label in test_rows(args.demo, args.per_class)]
    scenes = []  # (visible, [translations], real thermal), raw values
    for row in shown:
        visible = read_image(args.demo / "testA" / row["file"])
        scenes.append((visible, [t(visible=visible)["infrared"] for t in translate],
                       read_image(args.demo / "testB" / row["file"])))
    if args.window == "real":
        window = [float(v) for v in np.percentile(np.stack([real for _, _, real in scenes]), [0.5, 99.5])]
    else:
        window = [float(v) for v in load_artifact(args.artifact[0]).meta["output"]["value_range"]]

    if args.boxes:
        boxes = {split: coco_boxes(args.demo / "boxes" / f"{split}.json") for split in ("testA", "testB")}
        classes = [c["name"] for c in json.loads((args.demo / "boxes" / "testA.json").read_text())["categories"]]
    rows = []
    for row, (visible, fakes, real) in zip(shown, scenes):
        cells = [visible] + [to_rgb(fake, *window) for fake in fakes] + [to_rgb(real, *window)]
        if args.boxes:  # the visible image's boxes on it and its translations, the thermal frame's own on it
            sides = ["testA"] * (len(cells) - 1) + ["testB"]
            cells = [with_boxes(c, boxes[side].get(row["file"], []), classes) for c, side in zip(cells, sides)]
        rows.append(framed_row(cells))
    columns: Sequence[Tuple[str, ...]] = (
        [("visible", "(test image)")] + [("translated", n) for n in names] + [("real thermal", "(same scene)")]
    )
    grid = np.concatenate(rows, 0)
    if not args.boxes:
        grid = cv2.resize(grid, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    picture = np.concatenate([titles(grid.shape[1], columns), grid], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(json.dumps({"picture": str(args.out), "artifacts": [str(a) for a in args.artifact], "boxes": args.boxes,
                      "thermal_window": window, "rows": shown}, indent=2))


if __name__ == "__main__":
    main()
