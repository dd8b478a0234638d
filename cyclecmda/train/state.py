"""What a training checkpoint holds, and putting a run back from one: networks, optimizers, scaler,
image pools, progress, value ranges, RNG states and the latest logged values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from cyclecmda import __version__
from cyclecmda.config import Config, to_dict
from cyclecmda.data.domain import ValueRange
from cyclecmda.errors import ConfigError
from cyclecmda.method.cyclegan import CycleGAN
from cyclecmda.train.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, rng_state
from cyclecmda.train.optim import restore_optimizer


def resume_path(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    """The checkpoint ``train.resume`` names: None for a fresh run (or ``auto`` without latest.pt).
    A fresh run never starts in a run folder that holds one."""
    latest = run_dir / "latest.pt"
    if not resume:
        if latest.is_file():
            raise ConfigError(f"{run_dir} already holds a run (latest.pt); set train.resume=auto to continue it, "
                              "or choose another run.name or run.out_dir for a new one.")
        return None
    if resume == "auto":
        return latest if latest.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"train.resume: checkpoint '{resume}' does not exist "
                              "(use train.resume=auto to continue a run if it has one).")
    return path


def checkpoint_state(cfg: Config, model: CycleGAN, optimizers: Mapping[str, torch.optim.Optimizer],
                     scaler: torch.amp.GradScaler, progress: Dict[str, Any],
                     value_ranges: Mapping[str, ValueRange], metrics: Mapping[str, float]) -> Dict[str, Any]:
    """A self-describing checkpoint: the config and network specs rebuild the networks from it alone."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": to_dict(cfg),
        "networks": model.specs,
        "state": {name: net.state_dict() for name, net in model.networks().items()},
        "auxiliary": {name: module.state_dict() for name, module in model.auxiliary().items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "semantic": None if model.semantic is None else model.semantic.checkpoint_state(),
        "scaler": scaler.state_dict(),
        "pools": {k: p.state_dict() for k, p in model.pools.items()},
        "progress": progress,
        "value_ranges": {side: [r.lo, r.hi] for side, r in value_ranges.items()},
        "rng": rng_state(),
        "metrics": dict(metrics),
    }


def restore_training(ckpt: Dict[str, Any], source: str, model: CycleGAN,
                     optimizers: Mapping[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler) -> None:
    """Networks, optimizer moments (the configured learning rate and betas are kept), the loss
    scaler and the image pools, from a loaded checkpoint."""
    model.load_checkpoint(ckpt, source)
    for name, opt in optimizers.items():
        restore_optimizer(opt, ckpt["optimizers"][name])
    if ckpt["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    for k, pool in model.pools.items():
        pool.load_state_dict(ckpt["pools"][k])
