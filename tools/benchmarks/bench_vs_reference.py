"""cyclecmda's training step against the plainly written reference step, in interleaved pairs. Prints JSON.

    python tools/benchmarks/bench_vs_reference.py [--size 128] [--batch 1] [--pairs 5] [--options fp32,bf16]
                                       [--steps 10] [--warmup 3]

This machine's speed drifts over minutes (shared cores, clocks), so one run of each side is no
comparison. Each pair runs ``tools/benchmarks/bench_train.py`` (the published settings of
``configs/default.yaml`` at the given size and batch, one process per option) and then
``tools/benchmarks/bench_reference.py`` at the same size and batch. Each ratio is cyclecmda's seconds per
step over the reference's, taken within the same pair. The summary gives, per option, the median
ratio and its range over the pairs, and the peak memory of both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

TOOLS = Path(__file__).resolve().parent


def run_json(cmd: List[str]) -> Dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=TOOLS.parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--options", default="fp32", help="bench_train.py option sets (e.g. fp32,bf16)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (median taken)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    common = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    pairs = []
    for _ in range(args.pairs):
        ours = run_json([sys.executable, str(TOOLS / "bench_train.py"), "configs/default.yaml",
                         f"data.crop_size={args.size}", f"data.batch_size={args.batch}", "--options", args.options, *common])
        ref = run_json([sys.executable, str(TOOLS / "bench_reference.py"), "--size", str(args.size),
                        "--batch", str(args.batch), *common])
        pair: Dict[str, Any] = {"reference": {k: ref[k] for k in ("seconds_per_step", "peak_rss_gib")}}
        for name, res in ours["results"].items():
            if "error" in res:
                raise SystemExit(f"bench_train.py option {name}: {res['error']}")
            pair[name] = {"seconds_per_step": res["seconds_per_step"], "peak_rss_gib": res["peak_rss_gib"],
                          "ratio": round(res["seconds_per_step"] / ref["seconds_per_step"], 3)}
        pairs.append(pair)
        print(json.dumps(pair), file=sys.stderr)  # progress

    summary: Dict[str, Any] = {}
    for name in args.options.split(","):
        ratios = [p[name]["ratio"] for p in pairs]
        summary[name] = {
            "median_ratio": round(statistics.median(ratios), 3),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "max_peak_rss_gib": max(p[name]["peak_rss_gib"] for p in pairs),
        }
    summary["reference"] = {
        "median_seconds_per_step": round(statistics.median(p["reference"]["seconds_per_step"] for p in pairs), 4),
        "max_peak_rss_gib": max(p["reference"]["peak_rss_gib"] for p in pairs),
    }
    print(json.dumps({"benchmark": "bench_vs_reference", "size": args.size, "batch": args.batch,
                      "steps": args.steps, "warmup": args.warmup, "pairs": pairs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
