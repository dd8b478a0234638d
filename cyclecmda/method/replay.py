"""A memory of recent labelled training items that the task networks draw their batches from.

The translator trains on small batches (4 on the demo); a classifier learning from 4 images a
step stays at chance (docs/experiments.md), one learning from 16 or 32 does not. So each step's
real images, detached translations and labels go into a ring buffer, and every few steps the task
networks take one step on a larger batch drawn from it at random. The draws come from the
memory's own numbers (a seed taken from torch's when it is made, and a count of draws, both in its
state), never from torch's global RNG: the translator's own random numbers are the same with or
without task networks beside it. Images are stored as 8 bits per channel, as a user's exported translations
are; the buffers live in the module's ``state_dict``, so an exact resume holds with them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

__all__ = ["ReplayMemory"]


def _to_bytes(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


class ReplayMemory(nn.Module):
    """Up to ``capacity`` items, each a tuple of tensors shaped like ``images`` (values in [-1, 1])
    and ``targets`` (labels or masks; values fit int16); the newest replace the oldest."""

    def __init__(self, capacity: int, images: Dict[str, Tuple[int, ...]], targets: Dict[str, Tuple[int, ...]]) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"a replay memory needs a capacity >= 1, got {capacity}")
        self.capacity = capacity
        self.image_names, self.target_names = list(images), list(targets)
        self.filled: torch.Tensor
        self.position: torch.Tensor
        self.seed: torch.Tensor
        self.draws: torch.Tensor
        for name, shape in images.items():
            self.register_buffer(f"image_{name}", torch.zeros((capacity, *shape), dtype=torch.uint8))
        for name, shape in targets.items():
            self.register_buffer(f"target_{name}", torch.zeros((capacity, *shape), dtype=torch.int16))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("seed", torch.tensor(torch.initial_seed() % (1 << 62), dtype=torch.long))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._filled = self._position = 0  # host copies: no device sync per step
        self._seed, self._draws = int(self.seed), 0

    def __len__(self) -> int:
        return self._filled

    @torch.no_grad()
    def add(self, **items: torch.Tensor) -> None:
        """Store a batch: one tensor per image and target name, all with the same first dimension."""
        count = next(iter(items.values())).shape[0]
        slots = [(self._position + i) % self.capacity for i in range(count)][-self.capacity :]
        index = torch.tensor(slots, device=self.filled.device)
        for name in self.image_names:
            getattr(self, f"image_{name}")[index] = _to_bytes(items[name][-len(slots) :])
        for name in self.target_names:
            getattr(self, f"target_{name}")[index] = items[name][-len(slots) :].to(torch.int16)
        self._position = (self._position + count) % self.capacity
        self._filled = min(self.capacity, self._filled + count)
        self.position.fill_(self._position)
        self.filled.fill_(self._filled)

    def sample(self, count: int) -> Dict[str, torch.Tensor]:
        """``count`` stored items drawn uniformly with replacement: images as float in [-1, 1],
        targets as int64."""
        if not self._filled:
            raise RuntimeError("the replay memory is empty: add a batch before sampling")
        numbers = torch.Generator().manual_seed((self._seed + self._draws * 0x9E3779B97F4A7C15) % (1 << 63))
        index = torch.randint(self._filled, (count,), generator=numbers).to(self.filled.device)
        self._draws += 1
        self.draws.fill_(self._draws)
        out = {name: _from_bytes(getattr(self, f"image_{name}")[index]) for name in self.image_names}
        out.update({name: getattr(self, f"target_{name}")[index].long() for name in self.target_names})
        return out

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._filled, self._position = int(self.filled), int(self.position)
        self._seed, self._draws = int(self.seed), int(self.draws)

    def extra_repr(self) -> str:
        names: List[str] = self.image_names + self.target_names
        return f"capacity={self.capacity}, items=({', '.join(names)})"
