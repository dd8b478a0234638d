"""Where a run stands, where it ends, and the learning rate that follows from it.

Progress is counted in samples: a step of ``P`` processes at batch size ``B`` trains on ``B * P``
samples of the epoch's shuffled order, and the position in that order is what carries over
when a run resumes with another batch size or number of processes. Epochs, the end of the run
and the learning-rate schedule are derived from it, so that a resumed run ends where the
configured number of epochs ends and decays its learning rate over the configured epochs,
whatever the batch size and process count of the runs before.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, Mapping

import torch

from cyclecmda.config import OptimConfig, TrainConfig
from cyclecmda.errors import DataError

__all__ = ["LRSchedule", "Progress", "RunPlan"]


@dataclass
class Progress:
    """How far training has come; stored in checkpoints under ``progress``."""

    step: int = 0  # optimizer steps, over the whole history of the run
    samples: int = 0  # training samples seen, summed over processes
    epoch: int = 0  # completed epochs
    position: int = 0  # samples of the current epoch's order already trained on (all processes)

    def state_dict(self) -> Dict[str, int]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, stored: Mapping[str, Any], batch_size: int) -> "Progress":
        """The progress of a checkpoint; ``batch_size`` is the stored run's, for checkpoints that
        counted the position in the epoch in batches (format version 1)."""
        if "position" in stored:
            return cls(int(stored["step"]), int(stored["samples"]), int(stored["epoch"]), int(stored["position"]))
        per_step = batch_size * int(stored.get("world_size", 1))
        return cls(int(stored["step"]), int(stored["step"]) * per_step, int(stored["epoch"]),
                   int(stored["batch_in_epoch"]) * per_step)


class RunPlan:
    """The epochs of this run's processes: batches per epoch, where each process starts, the end.

    Each epoch shuffles the dataset into one order; process ``r`` of ``P`` reads positions
    ``r, r + P, r + 2P, ...`` (the order padded to a multiple of ``P``), so after ``k`` steps
    the processes together have read exactly the first ``k * B * P`` positions. A process drops
    its last incomplete batch, which ends the epoch.
    """

    def __init__(self, dataset_len: int, batch_size: int, world_size: int, train: TrainConfig) -> None:
        self.batch_size = batch_size
        self.world_size = world_size
        self.per_rank = -(-dataset_len // world_size)
        self.steps_per_epoch = self.per_rank // batch_size
        self.epochs = train.n_epochs + train.n_epochs_decay  # 0: only max_steps ends the run
        self.max_steps = train.max_steps
        if self.steps_per_epoch == 0:
            raise DataError(
                f"data.batch_size ({batch_size}) is larger than the {self.per_rank} images each of "
                f"{world_size} process(es) gets from the dataset ({dataset_len} images); lower data.batch_size."
            )

    def rank_start(self, progress: Progress) -> int:
        """Where in its share of the epoch each process starts (resumed runs start mid-epoch)."""
        return progress.position // self.world_size

    def _epoch_end(self, start: int) -> int:
        """The share position at which an epoch begun (or resumed) at ``start`` ends."""
        return start + (self.per_rank - start) // self.batch_size * self.batch_size

    def align(self, progress: Progress) -> None:
        """Move to the next epoch if no full batch is left in this one (the batch size or the
        dataset changed since the run was saved)."""
        if progress.position and self._epoch_end(self.rank_start(progress)) == self.rank_start(progress):
            warnings.warn(
                f"resuming {progress.position} samples into an epoch whose share per process now holds "
                f"{self.per_rank} samples, too few for another batch of {self.batch_size} (data.batch_size "
                "or the dataset changed): continuing with the next epoch", stacklevel=2
            )
            progress.epoch, progress.position = progress.epoch + 1, 0

    def advance(self, progress: Progress) -> None:
        """Count one step of every process."""
        progress.step += 1
        progress.samples += self.batch_size * self.world_size
        progress.position += self.batch_size * self.world_size
        if self.rank_start(progress) + self.batch_size > self.per_rank:
            progress.epoch, progress.position = progress.epoch + 1, 0

    def epochs_done(self, progress: Progress) -> float:
        """Epochs trained so far, with the fraction of the current one."""
        start = self.rank_start(progress)
        end = self._epoch_end(start)
        return progress.epoch + (start / end if end else 0.0)

    def steps_left_in_epoch(self, progress: Progress) -> int:
        start = self.rank_start(progress)
        return (self._epoch_end(start) - start) // self.batch_size

    def total_steps(self, progress: Progress) -> int:
        """The step at which the run ends: the configured epochs are done, or ``max_steps``."""
        ends = [self.max_steps] if self.max_steps else []
        if self.epochs:
            if progress.epoch >= self.epochs:
                ends.append(progress.step)
            else:
                left = self.steps_left_in_epoch(progress) + (self.epochs - progress.epoch - 1) * self.steps_per_epoch
                ends.append(progress.step + left)
        return max(progress.step, min(ends))

    def planned_epochs(self, progress: Progress) -> float:
        """Epochs trained when the run ends, as planned from where it stands (the cosine's length)."""
        end = float(self.epochs) if self.epochs else math.inf
        if self.max_steps:
            left = max(0, self.max_steps - progress.step)
            end = min(end, self.epochs_done(progress) + left / max(self.steps_per_epoch, 1))
        return end

    def finished(self, progress: Progress) -> bool:
        return (bool(self.max_steps) and progress.step >= (self.max_steps or 0)) or (
            bool(self.epochs) and progress.epoch >= self.epochs
        )


class LRSchedule:
    """The learning rate as a function of epochs trained (``optim.lr_policy``).

    ``linear``: constant for ``n_epochs``, then linear to 0 over ``n_epochs_decay``; ``cosine``:
    from ``optim.lr`` to 0 over the planned run; ``step``: x0.1 every ``lr_step_epochs``;
    ``constant``. ``planned_epochs`` is where the run ends (the cosine's length).
    """

    def __init__(self, optim: OptimConfig, train: TrainConfig, planned_epochs: float) -> None:
        self.lr = optim.lr
        self.policy = optim.lr_policy
        self.n_epochs = train.n_epochs
        self.n_epochs_decay = train.n_epochs_decay
        self.step_epochs = optim.lr_step_epochs
        self.planned_epochs = planned_epochs

    def factor(self, epochs: float) -> float:
        if self.policy == "linear":
            if epochs < self.n_epochs or self.n_epochs_decay == 0:
                return 1.0
            return max(0.0, 1.0 - (epochs - self.n_epochs) / self.n_epochs_decay)
        if self.policy == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epochs / max(self.planned_epochs, 1e-12), 1.0)))
        if self.policy == "step":
            return 0.1 ** int(epochs // max(self.step_epochs, 1))
        return 1.0

    def apply(self, optimizers: Iterable[torch.optim.Optimizer], epochs: float) -> float:
        """Set every parameter group's learning rate for the next step; return it."""
        lr = self.lr * self.factor(epochs)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr
