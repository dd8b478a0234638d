"""Adversarial losses and the WGAN-GP gradient penalty.

Cycle-consistency and identity losses are plain L1: ``torch.nn.functional.l1_loss``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from cyclecmda.errors import ConfigError, did_you_mean

GAN_MODES: Tuple[str, ...] = ("lsgan", "vanilla", "hinge", "wgangp")


class GANLoss:
    """Adversarial loss of one ``mode``, split into the generator's and the discriminator's side.

    ``pred`` is the raw discriminator output (logits for ``vanilla``); targets are built with
    ``ones_like``/``zeros_like`` so they follow pred's dtype and device without a host sync.

    ==========  ===========================  ========================  ========================
    mode        generator_loss(D(fake))      real_loss(D(real))        fake_loss(D(fake))
    ==========  ===========================  ========================  ========================
    lsgan       mean((D - 1)^2)              mean((D - 1)^2)           mean(D^2)
    vanilla     BCE(D, 1)                    BCE(D, 1)                 BCE(D, 0)
    hinge       -mean(D)                     mean(relu(1 - D))         mean(relu(1 + D))
    wgangp      -mean(D)                     -mean(D)                  mean(D)
    ==========  ===========================  ========================  ========================

    ``discriminator_loss`` is ``0.5 * (real_loss + fake_loss)`` for every mode, as the
    reference CycleGAN code does (it halves whatever its GAN loss gives, wgangp included). For
    ``wgangp`` the caller adds ``lambda_gp * gradient_penalty(...)`` on top, not halved.
    The reference ``criterionGAN(D(fake), True)`` is ``generator_loss(D(fake))``.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        if mode not in GAN_MODES:
            raise ConfigError(
                f"unknown gan mode '{mode}'; valid: {', '.join(GAN_MODES)}." + did_you_mean(mode, GAN_MODES)
            )
        self.mode = mode

    def __repr__(self) -> str:
        return f"GANLoss(mode={self.mode!r})"

    def generator_loss(self, pred_fake: torch.Tensor) -> torch.Tensor:
        """Loss of the generator whose fakes the discriminator scored ``pred_fake``."""
        if self.mode in ("hinge", "wgangp"):
            return -pred_fake.mean()
        return self.real_loss(pred_fake)

    def real_loss(self, pred_real: torch.Tensor) -> torch.Tensor:
        """Discriminator term for predictions on real images."""
        if self.mode == "lsgan":
            return F.mse_loss(pred_real, torch.ones_like(pred_real))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
        if self.mode == "hinge":
            return F.relu(1.0 - pred_real).mean()
        return -pred_real.mean()

    def fake_loss(self, pred_fake: torch.Tensor) -> torch.Tensor:
        """Discriminator term for predictions on generated images."""
        if self.mode == "lsgan":
            return F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
        if self.mode == "hinge":
            return F.relu(1.0 + pred_fake).mean()
        return pred_fake.mean()

    def discriminator_loss(self, pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
        """``0.5 * (real_loss(pred_real) + fake_loss(pred_fake))``."""
        return 0.5 * (self.real_loss(pred_real) + self.fake_loss(pred_fake))


def gradient_penalty(
    disc: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    constant: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``mean((||grad D(x)||_2 - constant)^2)`` at random interpolates x.

    Each sample gets its own alpha ~ U[0, 1) drawn from ``generator`` (which must live on
    real's device), or from torch's global RNG when None. ``real`` and ``fake`` are detached;
    the graph through ``disc`` is kept (create_graph=True) so the penalty trains it. The
    result is not weighted: multiply by lambda_gp yourself.
    """
    alpha_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(alpha_shape, generator=generator, device=real.device, dtype=real.dtype)
    interp = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    out = disc(interp)
    (grad,) = torch.autograd.grad(
        outputs=out,
        inputs=interp,
        grad_outputs=torch.ones_like(out),
        create_graph=True,
        retain_graph=True,
    )
    grad_norm = (grad.flatten(1) + 1e-16).norm(2, dim=1)
    return ((grad_norm - constant) ** 2).mean()
