"""Loss tracking between logging steps (running sums on the device, the first NaN/Inf) and the
checks that stop a run whose losses or weights stopped being finite."""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import torch
from torch import nn

from cyclecmda.errors import CycleCMDAError
from cyclecmda.train.distributed import DistContext
from cyclecmda.train.run_folder import RunCheckpoints

HINT = "Try a lower optim.lr, train.precision=fp32, or another loss.gan_mode."


class TrainingDiverged(CycleCMDAError):
    """A loss became NaN or Inf."""


def tag(name: str) -> str:
    """TensorBoard tag of a value returned by the model's steps."""
    if name.startswith("d_"):  # discriminator outputs, e.g. d_a_real -> disc/a_real
        return "disc/" + name[2:]
    return "loss/" + name


class LossTracker:
    """Sums each step's losses for the next log and remembers the first step whose losses were not
    finite, all on the device: between logging steps the host never waits for it. A step may give
    some of the losses only (the task networks' come on their own steps); each is averaged over the
    steps that gave it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: List[str] = []
        self.counts: List[int] = []
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_mask = torch.zeros(0, dtype=torch.bool, device=device)
        self.sums = torch.zeros(0, device=device)
        self._index: Dict[Tuple[str, ...], Tuple[List[int], torch.Tensor]] = {}

    def _positions(self, keys: Tuple[str, ...]) -> Tuple[List[int], torch.Tensor]:
        """Where a step's losses go in the sums (new names are added), on the host and the device."""
        if keys not in self._index:
            new = [k for k in keys if k not in self.names]
            if new:
                self.names += new
                self.counts += [0] * len(new)
                self.sums = torch.cat([self.sums, self.sums.new_zeros(len(new))])
                self.bad_mask = torch.cat([self.bad_mask, self.bad_mask.new_zeros(len(new))])
            at = [self.names.index(k) for k in keys]
            self._index[keys] = (at, torch.tensor(at, device=self.device))
        return self._index[keys]

    def add(self, values: Dict[str, torch.Tensor], step: int) -> None:
        """Add the losses of training step ``step`` (1-based)."""
        at, where = self._positions(tuple(values))
        vec = torch.stack([v.detach().float() for v in values.values()])
        bad = ~torch.isfinite(vec)
        newly = bad.any() & (self.bad_step < 0)
        self.bad_step = torch.where(newly, step, self.bad_step)
        self.bad_mask = torch.where(newly, torch.zeros_like(self.bad_mask).index_copy(0, where, bad), self.bad_mask)
        self.sums.index_add_(0, where, vec)
        for i in at:
            self.counts[i] += 1

    def first_bad_step(self) -> torch.Tensor:
        """The first step with a NaN/Inf loss, -1 for none (a tensor, to be reduced over ranks)."""
        return self.bad_step.clone()

    def bad_tags(self) -> List[str]:
        """The tags of that step's NaN/Inf losses (a host sync)."""
        return [tag(n) for n, b in zip(self.names, self.bad_mask.tolist()) if b]

    def take_means(self) -> Tuple[torch.Tensor, List[str]]:
        """The mean of each loss since the last call over the steps that gave it (a tensor, to be
        reduced over ranks) and their tags; the sums start again. Every rank gives the same losses
        at the same steps, so every rank returns the same tags."""
        given = [i for i, c in enumerate(self.counts) if c]
        counts = torch.tensor([self.counts[i] for i in given], dtype=self.sums.dtype, device=self.device)
        means = self.sums[given] / counts
        self.sums.zero_()
        self.counts = [0] * len(self.names)
        return means, [tag(self.names[i]) for i in given]


def check_losses(tracker: LossTracker, dist: DistContext, checkpoints: RunCheckpoints) -> None:
    """Raise TrainingDiverged naming the first step and loss that were NaN/Inf (a host sync; every
    rank calls it at the same steps, and all of them raise together)."""
    bad_step = int(dist.max_(tracker.first_bad_step()).item())
    if bad_step < 0:
        return
    names = tracker.bad_tags() or ["a loss on another rank"]
    # the losses of step N come from the weights after step N - 1
    raise TrainingDiverged(f"{', '.join(names)} became NaN/Inf at step {bad_step}; "
                           + diverged(bad_step - 1, dist, checkpoints))


def check_state(modules: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer], step: int,
                dist: DistContext, checkpoints: RunCheckpoints) -> None:
    """Raise TrainingDiverged if a parameter, buffer or optimizer moment is NaN/Inf (a host sync)."""
    tensors = [t for module in modules for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    tensors += [t for opt in optimizers for state in opt.state.values()
                for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim()]
    bad = torch.stack([torch.isfinite(t).all() for t in tensors]).logical_not().any().to(torch.int32)
    if dist.max_(bad.reshape(1)).item():
        raise TrainingDiverged(f"the weights became NaN/Inf by step {step}; " + diverged(step, dist, checkpoints))


def diverged(bad_weights: int, dist: DistContext, checkpoints: RunCheckpoints) -> str:
    """The rest of a divergence message: which checkpoint is the last good one. The weights after
    step ``bad_weights`` gave NaN/Inf; latest.pt is pointed back before them if it holds them."""
    if not dist.is_main:
        return "training stopped. " + HINT
    return f"training stopped and {checkpoints.rewind(bad_weights)}. {HINT}"
