"""Build the three domain pairs (sketch, night, digits) into data/pairs/<name>.

    python tools/data/make_pairs.py [--out data/pairs] [--seed 0] [--only sketch night] [--n-train N --n-test N]
                               [--sheets docs/images]

Each pair is written by cyclecmda.data.pairs.generate_pair, with its own counts and size unless given
(docs/pairs.md); the digits pair needs scikit-learn (pip install 'cyclecmda[pairs]'). ``--sheets``
also draws a contact sheet per pair, pairs_<name>.png: a few test images of A, of B and their masks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cyclecmda.data.images import read_image, to_channels
from cyclecmda.data.pairs import PAIRS, generate_pair

ROOT = Path(__file__).resolve().parents[2]
COLUMNS, ZOOM, LABEL_WIDTH = 6, 3, 124
# background, then the classes (the scene pairs use the first four, digits all ten)
PALETTE = np.array([(40, 40, 40), (230, 80, 70), (70, 160, 230), (90, 200, 90), (240, 190, 60), (180, 100, 220),
                    (60, 210, 200), (250, 140, 200), (150, 150, 150), (200, 230, 120), (255, 255, 255)], np.uint8)


def contact_sheet(root: Path, name: str, out: Path) -> Path:
    """A few test images of A, of B and their label masks, rows labelled, enlarged 3x."""
    files = [f"{i:05d}.png" for i in range(COLUMNS)]
    meta = json.loads((root / "dataset.json").read_text())
    a, b = (f"{side} {meta[side.lower()]['modality'].split()[-1]}" for side in "AB")
    rows = [(a, "testA"), ("A masks", "masks/testA"), (b, "testB"), ("B masks", "masks/testB")]
    if meta["paired"]:  # the same scenes: one mask row serves both
        rows = [(a, "testA"), (b, "testB"), ("masks", "masks/testB")]
    strips: List[np.ndarray] = []
    for _, folder in rows:
        cells = []
        for file in files:
            image = read_image(root / folder / file)
            cell = PALETTE[image[..., 0]] if folder.startswith("masks") else to_channels(image, 3)
            cells.append(np.kron(cell, np.ones((ZOOM, ZOOM, 1), np.uint8)))
        strips.append(np.hstack(cells))
    body = np.vstack(strips)
    sheet = Image.new("RGB", (LABEL_WIDTH + body.shape[1], body.shape[0]), "white")
    sheet.paste(Image.fromarray(body), (LABEL_WIDTH, 0))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=15)
    cell = body.shape[0] // len(rows)
    for r, (label, _) in enumerate(rows):
        draw.text((8, r * cell + cell // 2), label, fill="black", font=font, anchor="lm")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pairs_{name}.png"
    sheet.save(path, optimize=True)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Build the sketch, night and digits domain pairs.")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "pairs", help="parent folder (default data/pairs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=PAIRS, default=list(PAIRS), help="build only these pairs")
    parser.add_argument("--n-train", type=int, help="images in trainA and trainB (default: each pair's)")
    parser.add_argument("--n-test", type=int, help="images in testA and testB (default: each pair's)")
    parser.add_argument("--sheets", type=Path, help="also write a contact sheet per pair into this folder")
    args = parser.parse_args(argv)
    summary = {}
    for name in args.only:
        result = generate_pair(name, args.out / name, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
        summary[name] = {"root": result["root"], "counts": result["counts"], "image_size": result["image_size"]}
        if args.sheets:
            summary[name]["sheet"] = str(contact_sheet(Path(result["root"]), name, args.sheets))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
