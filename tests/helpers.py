"""Helpers shared by the test modules: random image folders, the tiny config as overrides, label
and mask files, a child training process, TensorBoard event files read back as TensorBoard would."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cyclecmda.data.images import read_image, write_image

CHILD = Path(__file__).with_name("_train_child.py")

# the tiny model and data settings every tiny run shares (the tiny_config fixture and child processes)
TINY = [
    "data.b.channels=1", "data.b.bit_depth=16", "data.load_size=36", "data.crop_size=32", "data.batch_size=2",
    "data.num_workers=0", "model.gen.arch=resnet_2blocks", "model.gen.ngf=8", "model.disc.ndf=8",
    "model.disc.n_layers=2", "loss.lambda_identity=0", "train.log_every=1",
]


def tiny_overrides(a_root: object, b_root: object, out_dir: object) -> List[str]:
    """The tiny config's key=value overrides over these folders."""
    return [f"data.a.root={a_root}", f"data.b.root={b_root}", *TINY, f"run.out_dir={out_dir}"]


def overrides_of(cfg, **changes) -> list:
    """key=value overrides that rebuild the tiny config in a child process (``a__b=v`` sets ``a.b=v``)."""
    base = tiny_overrides(cfg.data.a.root, cfg.data.b.root, cfg.run.out_dir) + ["train.image_every=100",
                                                                                "run.deterministic=true"]
    return base + [f"{k.replace('__', '.')}={v}" for k, v in changes.items()]


def run_child(args: list, **kwargs) -> subprocess.CompletedProcess:
    """``tests/_train_child.py ARGS`` in a fresh Python process."""
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent)}
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def make_images(folder: Path, n: int, channels: int, dtype: type, size: int = 40, ext: str = ".png", seed: int = 0) -> List[Path]:
    """Write n random images (HWC) of the given channels and dtype into folder."""
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    paths = []
    for i in range(n):
        img = rng.integers(0, hi, size=(size, size + 8, channels), endpoint=True).astype(dtype)
        paths.append(write_image(folder / f"img_{i:03d}{ext}", img))
    return paths


def write_labels(path: Path, rows, header=("filename", "label")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def names(folder: Path):
    return sorted(p.name for p in folder.glob("*.png"))


def mask_folder(images: Path, out: Path, fn) -> Path:
    """A mask per image: fn(image array) -> (H, W) uint8."""
    for path in images.glob("*.png"):
        write_image(out / path.name, fn(read_image(path)))
    return out


def load_events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(log_dir: Path) -> Dict[str, Dict[int, float]]:
    acc = load_events(log_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def image_tags(log_dir: Path) -> List[str]:
    return load_events(log_dir).Tags()["images"]


def random_fid_inception_state(seed: int = 0) -> dict:
    """A state dict of the FID Inception architecture (pytorch-fid's own classes) with random
    values, for tests that cannot download the published weights."""
    import torch
    from pytorch_fid import inception as pfi

    torch.manual_seed(seed)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block, args in (("Mixed_5b", pfi.FIDInceptionA, (192, 32)), ("Mixed_5c", pfi.FIDInceptionA, (256, 64)),
                              ("Mixed_5d", pfi.FIDInceptionA, (288, 64)), ("Mixed_6b", pfi.FIDInceptionC, (768, 128)),
                              ("Mixed_6c", pfi.FIDInceptionC, (768, 160)), ("Mixed_6d", pfi.FIDInceptionC, (768, 160)),
                              ("Mixed_6e", pfi.FIDInceptionC, (768, 192)), ("Mixed_7b", pfi.FIDInceptionE_1, (1280,)),
                              ("Mixed_7c", pfi.FIDInceptionE_2, (2048,))):
        setattr(net, name, block(*args))
    return net.state_dict()
