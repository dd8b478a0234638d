"""History of generated images that the discriminators train on (Shrivastava et al., 2017)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from cyclecmda.errors import ConfigError


class ImagePool:
    """Keeps up to ``pool_size`` past fakes and mixes them into the discriminator's batches.

    ``query`` behaves as in the reference CycleGAN code: while the pool fills, each image is
    stored and returned as is; once full, each image is, with probability 0.5, stored in place
    of a random old one and that old one returned instead. Randomness comes from ``generator``
    when given (its state is saved in ``state_dict`` and restored by ``load_state_dict``), else
    from torch's global CPU RNG, which the caller then checkpoints. ``pool_size`` 0 disables the
    pool: ``query`` returns its input object unchanged.
    """

    def __init__(self, pool_size: int, generator: Optional[torch.Generator] = None) -> None:
        if pool_size < 0:
            raise ConfigError(f"image pool size must be >= 0, got {pool_size}.")
        self.pool_size = pool_size
        self.generator = generator
        self.images: List[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch like ``images`` (B, ...) mixing new and stored images; the result is detached."""
        if self.pool_size == 0:
            return images
        images = images.detach()
        batch = images.shape[0]
        rng_device = self.generator.device if self.generator is not None else torch.device("cpu")
        swap = (torch.rand(batch, generator=self.generator, device=rng_device) < 0.5).tolist()
        slots = torch.randint(self.pool_size, (batch,), generator=self.generator, device=rng_device).tolist()
        if self.images and self.images[0].device != images.device:
            self.images = [im.to(images.device) for im in self.images]

        out: List[torch.Tensor] = []
        for i, image in enumerate(images.unbind(0)):
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif swap[i]:
                out.append(self.images[slots[i]].to(dtype=images.dtype))
                self.images[slots[i]] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> Dict[str, Any]:
        """Stored images as one (n, ...) tensor, their count, and the generator's state if any;
        loadable with ``torch.load(weights_only=True)``."""
        state: Dict[str, Any] = {
            "pool_size": self.pool_size,
            "size": len(self.images),
            "images": torch.stack(self.images) if self.images else torch.empty(0),
        }
        if self.generator is not None:
            state["rng_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (and the generator's state when both have one)."""
        size = int(state["size"])
        if size > self.pool_size:
            raise ConfigError(
                f"image pool state holds {size} images, more than this pool's size {self.pool_size}."
            )
        self.images = [im.clone() for im in state["images"][:size].unbind(0)] if size else []
        if self.generator is not None and "rng_state" in state:
            self.generator.set_state(state["rng_state"].cpu())
