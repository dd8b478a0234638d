"""Data pipeline throughput: decoded, scaled and augmented samples per second, as JSON.

    python tools/benchmarks/bench_data.py [CONFIG ...] [key=value ...] [--batches N] [--repeats R] [--workers 0,2]

Defaults to the quickstart config on the built-in demo data (generated if absent). Prints one
JSON object: per worker count, the median over repeats of images per second (A and B pairs)
through the DataLoader, after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from cyclecmda.config import load_config, split_cli_args
from cyclecmda.data.dataset import ResumableSampler, build_dataset, build_loader
from cyclecmda.data.demo import ensure_demo_data

ROOT = Path(__file__).resolve().parents[2]


def measure(dataset, cfg, workers: int, batches: int) -> float:
    cfg.num_workers = workers
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=0)
    loader = build_loader(dataset, cfg, sampler)
    it = iter(loader)
    next(it)  # warm-up: worker start-up is not throughput
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            sampler.set_epoch(sampler.epoch + 1)
            it = iter(loader)
            batch = next(it)
        n += batch["a"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="*", help="YAML files and key=value overrides (default: quickstart)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    args = parser.parse_args()
    paths, overrides = split_cli_args(args.config)
    cfg = load_config(paths or [ROOT / "configs" / "quickstart.yaml"], overrides)
    ensure_demo_data(cfg.data.demo_dir)
    dataset = build_dataset(cfg.data, seed=0)
    results = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        runs = [measure(dataset, cfg.data, workers, args.batches) for _ in range(args.repeats)]
        results[f"workers_{workers}"] = {"images_per_s_median": round(statistics.median(runs), 1),
                                         "runs": [round(r, 1) for r in runs]}
    print(json.dumps({
        "benchmark": "data_pipeline",
        "config": [str(p) for p in paths] or ["configs/quickstart.yaml"],
        "overrides": overrides,
        "crop_size": cfg.data.crop_size,
        "batch_size": cfg.data.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
