"""The command line of ``python -m cyclecmda.data.pairs NAME ...``: write a domain pair."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from cyclecmda.data.pairs import PAIRS, generate_pair
from cyclecmda.errors import CycleCMDAError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cyclecmda.data.pairs", description="Generate a domain pair "
                                     "(demo layout: trainA/ trainB/ testA/ testB/, masks/, dataset.json).")
    parser.add_argument("name", choices=PAIRS, help="sketch: photos <-> line drawings; night: day <-> night photos; "
                        "digits: printed <-> handwritten digits (needs the [pairs] extra)")
    parser.add_argument("--out", help="output folder (default data/pairs/NAME)")
    parser.add_argument("--n-train", type=int, help="images in trainA and in trainB (default: the pair's)")
    parser.add_argument("--n-test", type=int, help="images in testA and in testB (default: the pair's)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cyclecmda.data.pairs NAME [--out DIR] [--n-train N] [--n-test N] [--size PX] [--seed S]``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    out = args.out or str(Path("data") / "pairs" / args.name)
    try:
        summary = generate_pair(args.name, out, n_train=args.n_train, n_test=args.n_test, size=args.size,
                                seed=args.seed)
    except CycleCMDAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {n}" for split, n in summary["counts"].items())
    print(f"{args.name} pair written to {out} ({counts}; {summary['image_size']} px, seed {summary['seed']})")
    return 0
