"""Translation quality of a checkpoint on held-out images: cycle error and, for paired test
sets (matched by file name), the error of each translation against its true counterpart."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from cyclecmda.checkpoint import load_checkpoint
from cyclecmda.config import DataConfig, config_from_dict
from cyclecmda.cyclegan import build_network
from cyclecmda.data import DomainFiles, ValueRange, build_pipeline, list_images
from cyclecmda.errors import DataError


@dataclass
class Translator:
    """The two generators of a checkpoint, with the data settings they were trained with."""

    gen_ab: nn.Module
    gen_ba: nn.Module
    data: DataConfig
    value_ranges: Dict[str, ValueRange]

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu") -> "Translator":
        ckpt = load_checkpoint(path)
        nets = {}
        for name in ("gen_ab", "gen_ba"):
            net = build_network(ckpt["networks"][name])
            net.load_state_dict(ckpt["state"][name])
            nets[name] = net.to(device).eval()
        cfg = config_from_dict(ckpt["config"])
        ranges = {k: ValueRange(*v) for k, v in ckpt["value_ranges"].items()}
        return cls(nets["gen_ab"], nets["gen_ba"], cfg.data, ranges)


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] images."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def _load_folder(side: str, root: str, tr: Translator) -> Tuple[List[Path], torch.Tensor]:
    """All images of a folder as one (N, C, S, S) tensor in [-1, 1], resized to crop_size."""
    dom = getattr(tr.data, side)
    files = DomainFiles(f"data.{side}", dom, list_images(root, tr.data.extensions, f"--{side}"))
    files.value_range = tr.value_ranges[side]
    pipeline = build_pipeline(dom, tr.data, train=False)
    tensors = []
    for i in range(len(files)):
        img, _ = files.load(i)
        out = pipeline(image=img)["image"]
        out = out[:, :, None] if out.ndim == 2 else out
        tensors.append(torch.from_numpy(out.transpose(2, 0, 1).copy()) * 2 - 1)
    return files.files, torch.stack(tensors)


@torch.no_grad()
def _run(gen: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    device = next(gen.parameters()).device
    return torch.cat([gen(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def _errors(pred: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
    """L1 and PSNR on the [0, 1] scale of the target domain's value range."""
    diff = (pred - target) / 2
    mse = float(diff.pow(2).mean())
    return {"l1": float(diff.abs().mean()), "psnr": psnr(mse)}


def evaluate(checkpoint: Path, a_dir: str, b_dir: str, paired: bool = False, device: str = "cpu") -> Dict[str, float]:
    """Cycle errors of both directions, and paired errors a2b / b2a when ``paired``."""
    tr = Translator.from_checkpoint(checkpoint, device)
    files_a, real_a = _load_folder("a", a_dir, tr)
    files_b, real_b = _load_folder("b", b_dir, tr)
    fake_b, fake_a = _run(tr.gen_ab, real_a), _run(tr.gen_ba, real_b)
    metrics: Dict[str, float] = {}
    for key, value in _errors(_run(tr.gen_ba, fake_b), real_a).items():
        metrics[f"cycle_{key}_a"] = value
    for key, value in _errors(_run(tr.gen_ab, fake_a), real_b).items():
        metrics[f"cycle_{key}_b"] = value
    if paired:
        names_a = [p.name for p in files_a]
        names_b = [p.name for p in files_b]
        if names_a != names_b:
            missing = sorted(set(names_a) ^ set(names_b))
            raise DataError(
                f"--paired needs the same file names in both folders; {len(missing)} differ, e.g. '{missing[0]}'."
            )
        for key, value in _errors(fake_b, real_b).items():
            metrics[f"paired_{key}_a2b"] = value
        for key, value in _errors(fake_a, real_a).items():
            metrics[f"paired_{key}_b2a"] = value
        # reference: predicting the mean target image for every input (a translator must beat it)
        metrics["mean_image_l1_a2b"] = _errors(real_b.mean(0, keepdim=True).expand_as(real_b), real_b)["l1"]
        metrics["mean_image_l1_b2a"] = _errors(real_a.mean(0, keepdim=True).expand_as(real_a), real_a)["l1"]
    metrics["n_a"], metrics["n_b"] = float(len(files_a)), float(len(files_b))
    return metrics


def format_table(metrics: Dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items())


def write_json(metrics: Dict[str, float], path: Optional[Path]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")
