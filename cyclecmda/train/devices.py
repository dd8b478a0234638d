"""Which device a run uses, in which precision it computes there, and how its processes are seeded."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from cyclecmda.errors import CycleCMDAError
from cyclecmda.train.distributed import DistContext

__all__ = ["native_bf16", "pick_device", "rank_seed", "resolve_precision", "seed_everything"]


def pick_device(name: str, ctx: DistContext = DistContext()) -> torch.device:
    """``auto``: CUDA when present, else CPU; otherwise the named device (checked to exist).

    In a multi-process run, ``auto`` and ``cuda`` mean the GPU of this process's local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ctx.enabled:
        name = f"cuda:{ctx.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CycleCMDAError(f"run.device is '{name}' but CUDA is not available here; use run.device=auto or cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CycleCMDAError(f"run.device is '{name}' but this machine has {torch.cuda.device_count()} CUDA device(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CycleCMDAError("run.device is 'mps' but MPS is not available here; use run.device=auto or cpu.")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (on a CPU without it, bf16 autocast emulates
    every convolution and runs several times slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` as run on ``device``: ``auto`` is bf16 where the device computes bf16
    natively, else fp32. An explicit bf16 on a device without it is kept, with a warning."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        print(f"warning: train.precision=bf16 on a CPU without native bf16 support "
              f"({torch.backends.cpu.get_cpu_capability()}) is emulated and runs several times slower than fp32; "
              "use train.precision=auto or fp32", file=sys.stderr, flush=True)
    return precision


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank other than 0 (its image pool and dropout draw their own numbers)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
