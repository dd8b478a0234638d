"""Loss tracking between logging steps: running sums on the device, and the first NaN/Inf."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch


def tag(name: str) -> str:
    """TensorBoard tag of a value returned by the model's steps."""
    if name.startswith("d_"):  # discriminator outputs, e.g. d_a_real -> disc/a_real
        return "disc/" + name[2:]
    return "loss/" + name


class LossTracker:
    """Sums each step's losses for the next log and remembers the first step whose losses were not
    finite, all on the device: between logging steps the host never waits for it."""

    def __init__(self, device: torch.device) -> None:
        self.names: List[str] = []
        self.count = 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_mask: Optional[torch.Tensor] = None
        self.sums = torch.zeros(0, device=device)

    def add(self, values: Dict[str, torch.Tensor], step: int) -> None:
        """Add the losses of training step ``step`` (1-based)."""
        vec = torch.stack([v.detach().float() for v in values.values()])
        if not self.names:
            self.names = list(values)
            self.bad_mask = torch.zeros_like(vec, dtype=torch.bool)
            self.sums = torch.zeros_like(vec)
        bad = ~torch.isfinite(vec)
        newly = bad.any() & (self.bad_step < 0)
        self.bad_step = torch.where(newly, step, self.bad_step)
        assert self.bad_mask is not None
        self.bad_mask = torch.where(newly, bad, self.bad_mask)
        self.sums += vec
        self.count += 1

    def first_bad_step(self) -> torch.Tensor:
        """The first step with a NaN/Inf loss, -1 for none (a tensor, to be reduced over ranks)."""
        return self.bad_step.clone()

    def bad_tags(self) -> List[str]:
        """The tags of that step's NaN/Inf losses (a host sync)."""
        return [] if self.bad_mask is None else [tag(n) for n, b in zip(self.names, self.bad_mask.tolist()) if b]

    def take_means(self) -> Tuple[torch.Tensor, List[str]]:
        """The mean of each loss since the last call (a tensor, to be reduced over ranks) and their
        tags; the sums start again."""
        means = self.sums / max(self.count, 1)
        self.sums.zero_()
        self.count = 0
        return means, [tag(n) for n in self.names]
