"""Training step speed, peak memory and FLOPs of a config, option by option. Prints JSON.

    python tools/benchmarks/bench_train.py CONFIG [key=value ...] [--options fp32,bf16,...] [--steps 10] [--warmup 3]
                                [--timeout SECONDS]

Each option set runs in a fresh process (so peak memory is its own) on synthetic images of the
config's crop size, channels and bit depth: the networks, losses, optimizers and image pools are
the real ones, the data loader is left out (``tools/benchmarks/bench_data.py`` measures it). A step is one
generator and one discriminator update (``Trainer.train_step``); the figure is the median over
the timed steps after warm-up. FLOPs are counted once in fp32 eager mode with
``torch.utils.flop_counter`` (forward and backward of both updates; the same model FLOPs for
every option) and divided by each option's step time.

Options (each on top of CONFIG and the overrides):
  fp32            train.precision=fp32 (the reference)
  bf16            train.precision=bf16
  fp16            train.precision=fp16 (with a grad scaler)
  channels_last   fp32 with train.channels_last=true
  compile         fp32 with train.compile=true
  foreach_adam    fp32 with optim.implementation=foreach
  loop_adam       fp32 with optim.implementation=for_loop
  bf16_cl         bf16 + channels_last
  bf16_cl_compile bf16 + channels_last + compile
  bf16_semantic   bf16 + loss.semantic.kind=class (random labels of 4 classes for A)
  bf16_semantic_mask  bf16 + loss.semantic.kind=mask (random label masks of 5 classes for A)

The FLOPs are those of the first option set measured; a semantic option set adds its task
networks' work, so list it first to count them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

OPTIONS: Dict[str, List[str]] = {
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
    "fp16": ["train.precision=fp16"],
    "channels_last": ["train.precision=fp32", "train.channels_last=true"],
    "compile": ["train.precision=fp32", "train.compile=true"],
    "foreach_adam": ["train.precision=fp32", "optim.implementation=foreach"],
    "loop_adam": ["train.precision=fp32", "optim.implementation=for_loop"],
    "bf16_cl": ["train.precision=bf16", "train.channels_last=true"],
    "bf16_cl_compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
    "bf16_semantic": ["train.precision=bf16", "loss.semantic.kind=class", "data.a.labels={root}/a_labels.csv"],
    "bf16_semantic_mask": ["train.precision=bf16", "loss.semantic.kind=mask", "data.a.masks={root}/a_masks",
                           "data.mask_classes=[background,c1,c2,c3,c4]"],
}


def synthetic_overrides(config: List[str], overrides: List[str], root: Path) -> List[str]:
    """Write a few random images per domain (the config's channels, bit depth and crop size) under root."""
    import cv2

    from cyclecmda.config import load_config

    cfg = load_config(config, overrides)
    rng = np.random.default_rng(0)
    size = cfg.data.crop_size
    out = []
    for key, dom in (("a", cfg.data.a), ("b", cfg.data.b)):
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        dtype, top = (np.uint16, 65535) if dom.bit_depth == 16 else (np.uint8, 255)
        for i in range(max(8, cfg.data.batch_size)):
            shape = (size, size) if dom.channels == 1 else (size, size, 3)
            cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, top + 1, shape).astype(dtype))
            if key == "a":  # labels and masks for the semantic option sets
                (root / "a_masks").mkdir(exist_ok=True)
                cv2.imwrite(str(root / "a_masks" / f"{i:03d}.png"), rng.integers(0, 5, (size, size)).astype(np.uint8))
        if key == "a":
            rows = [f"{i:03d}.png,{i % 4}" for i in range(max(8, cfg.data.batch_size))]
            (root / "a_labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
        out += [f"data.{key}.root={folder}", f"data.{key}.test_root=''", f"data.{key}.scale.mode=full",
                f"data.{key}.test_labels=''", f"data.{key}.test_masks=''"]
        # a config that trains with labels (loss.semantic) gets the synthetic ones of A, and none for B
        labels = f"{root / 'a_labels.csv'}" if key == "a" and dom.labels else "''"
        masks = f"{root / 'a_masks'}" if key == "a" and dom.masks else "''"
        out += [f"data.{key}.labels={labels}", f"data.{key}.masks={masks}"]
    return out + [
        f"data.load_size={size}", "data.num_workers=0", "data.demo_dir=''", "data.scan=none",
        f"run.out_dir={root / 'runs'}", "train.eval_every=null", "train.export_on_finish=false", "train.resume=null",
    ]


def measure(config: List[str], overrides: List[str], steps: int, warmup: int, count_flops: bool) -> Dict[str, Any]:
    """One option set, in this process: median step time, peak memory, FLOPs per step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cyclecmda.config import load_config
    from cyclecmda.train.trainer import Trainer

    trainer = Trainer(load_config(config, overrides))
    device = trainer.device
    batch = next(iter(trainer.loader))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    flops = None
    if count_flops:
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.train_step(batch)
        flops = counter.get_total_flops()
    for _ in range(warmup):
        trainer.train_step(batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        sync()
        times.append(time.perf_counter() - t0)
        trainer.progress.step += 1  # work done every few steps (the task networks') follows the step
    median = statistics.median(times)
    result: Dict[str, Any] = {
        "seconds_per_step": round(median, 4),
        # the figure to compare when some steps do more work than others (loss.semantic.task_every)
        "seconds_per_step_mean": round(statistics.fmean(times), 4),
        "seconds_per_step_min": round(min(times), 4),
        "images_per_s": round(trainer.cfg.data.batch_size / median, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "device": str(device),
        "flops_per_step": flops,
    }
    if device.type == "cuda":
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config YAML (e.g. configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.crop_size=128 data.batch_size=1)")
    parser.add_argument("--options", default="fp32,bf16,channels_last,foreach_adam,bf16_cl",
                        help=f"comma-separated option sets: {', '.join(OPTIONS)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile needs a few)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per option set (compile included); one that runs over is reported as an error")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one measurement in a fresh process
        job = json.loads(args.child)
        print(json.dumps(measure([args.config], job["overrides"], args.steps, args.warmup, job["count_flops"])))
        return

    names = [n for n in args.options.split(",") if n]
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        parser.error(f"unknown option set(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    results: Dict[str, Any] = {}
    flops = None
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        base = synthetic_overrides([args.config], args.overrides, Path(tmp))
        for i, name in enumerate(names):
            overrides = args.overrides + base + [o.format(root=tmp) for o in OPTIONS[name]] + [f"run.name=bench{i}"]
            job = {"overrides": overrides, "count_flops": flops is None and "train.compile=true" not in OPTIONS[name]}
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, args.config, "--child", json.dumps(job), "--steps", str(args.steps),
                     "--warmup", str(args.warmup)], capture_output=True, text=True, env=env, timeout=args.timeout,
                )
            except subprocess.TimeoutExpired:
                results[name] = {"error": f"did not finish within --timeout {args.timeout:g} s"}
                continue
            if proc.returncode != 0:
                results[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            step_flops = res.pop("flops_per_step")
            if flops is None and step_flops is not None:
                flops = step_flops
            results[name] = res
    for res in results.values():
        if flops and "seconds_per_step" in res:
            res["achieved_gflops_per_s"] = round(flops / res["seconds_per_step"] / 1e9, 1)
    import torch

    print(json.dumps({
        "benchmark": "bench_train",
        "config": args.config,
        "overrides": args.overrides,
        "steps": args.steps,
        "warmup": args.warmup,
        "model_flops_per_step": flops,
        "model_gflop_per_step": round(flops / 1e9, 3) if flops else None,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
