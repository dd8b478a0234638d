"""Multi-process training: torchrun's environment, the process group and cross-rank agreement.

``torchrun --nproc_per_node N -m cyclecmda train CONFIG`` starts N processes; each reads its
rank from the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), joins one process group
(NCCL on CUDA, gloo on CPU) and trains on its own shard of the data. Rank 0 alone writes logs,
checkpoints and exports. A single process without those variables runs with world size 1 and
never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from cyclecmda.errors import ConfigError, CycleCMDAError
from cyclecmda.method.cyclegan import CycleGAN

__all__ = ["DistContext", "Objective", "context_from_env", "convert_sync_batch_norm", "init_process_group", "wrap_ddp"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def agree_any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (a collective call)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over ranks (in place; a collective call)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise mean over ranks (in place; a collective call)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(self.world_size)
        return t


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise CycleCMDAError(f"environment variable {key}={raw!r} is not an integer (set by torchrun).") from None


def context_from_env(env: Optional[Mapping[str, str]] = None) -> DistContext:
    """The rank, world size and local rank torchrun exported (world size 1 without them)."""
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise CycleCMDAError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}.")
    return DistContext(rank, world_size, local_rank)


def init_process_group(ctx: DistContext, device: torch.device) -> bool:
    """Join the process group (NCCL for CUDA, gloo otherwise); True if this call created it."""
    if not ctx.enabled or dist.is_initialized():
        return False
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise CycleCMDAError(
                f"WORLD_SIZE={ctx.world_size} but {key} is not set: launch multi-process training with "
                "'torchrun --nproc_per_node N -m cyclecmda train CONFIG'."
            )
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: Dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, **kwargs)
    return True


class Objective(nn.Module):
    """One optimisation step's loss as a module over the networks that step trains.

    DistributedDataParallel synchronises the gradients of the parameters a module registers,
    and expects one forward per backward. The CycleGAN steps call each network several times
    (``gen_ab`` on real A and on fake A, ``disc_b`` on real and fake B), and the generator step
    uses the frozen discriminators. Wrapping the whole step makes it one forward, and
    registering only ``trained`` leaves the frozen networks out of the gradient sync.
    """

    def __init__(self, step: Callable[..., Tuple], trained: Dict[str, nn.Module]) -> None:
        super().__init__()
        self.trained = nn.ModuleDict(trained)
        self._step = step

    def forward(self, *args: torch.Tensor) -> Tuple:
        return self._step(*args)


def wrap_ddp(objective: Objective, ctx: DistContext, device: torch.device) -> nn.Module:
    """``objective`` under DistributedDataParallel (gradients averaged over the ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=ids)


def convert_sync_batch_norm(networks: Dict[str, nn.Module], ctx: DistContext, device: torch.device) -> None:
    """``model.norm=sync_batch``: batch statistics over all ranks (CUDA only; plain batch norm in one process)."""
    if not ctx.enabled:
        return
    if device.type != "cuda":
        raise ConfigError(
            "model.norm=sync_batch synchronises batch statistics across processes, which PyTorch supports on "
            "CUDA only; on CPU use model.norm=batch (per-process statistics) or model.norm=instance."
        )
    for net in networks.values():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # swaps the layers in place
        assert converted is net, "a network whose root is a batch norm layer cannot be converted in place"


def step_objectives(model: CycleGAN, ctx: DistContext,
                    device: torch.device) -> Tuple[nn.Module, nn.Module, Optional[nn.Module]]:
    """The generator, discriminator and (with labels) task steps, each as one module over the
    networks it trains: under DDP their gradients are averaged over the ranks, while the frozen
    discriminators of the generator step stay local."""
    m = model
    gen = Objective(m.generator_step, {"gen_ab": m.gen_ab, "gen_ba": m.gen_ba, **m.auxiliary()})
    disc = Objective(m.discriminator_step, {"disc_a": m.disc_a, "disc_b": m.disc_b})
    task = None if m.semantic is None else Objective(m.semantic.task_step, m.semantic.networks())
    if not ctx.enabled:
        return gen, disc, task
    return (wrap_ddp(gen, ctx, device), wrap_ddp(disc, ctx, device),
            None if task is None else wrap_ddp(task, ctx, device))
