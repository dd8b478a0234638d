"""Discriminators (PatchGAN and per-pixel), registered by name.

Every discriminator takes ``in_channels, ndf, n_layers, norm``, returns one logit map of shape
(B, 1, h, w) and keeps its constructor arguments in ``config`` so that
``create_discriminator(name, **net.config)`` rebuilds it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

from cyclecmda.errors import ConfigError
from cyclecmda.models.layers import get_norm_layer, use_conv_bias
from cyclecmda.registry import Registry

DISCRIMINATORS = Registry("discriminator")


def register_discriminator(
    name: Optional[str] = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a discriminator constructor under ``name`` (default: its function name)."""
    return DISCRIMINATORS.register(name)


def create_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Build the discriminator registered as ``name``; unknown names raise ConfigError."""
    return DISCRIMINATORS.create(name, **kwargs)


def list_discriminators() -> List[str]:
    return DISCRIMINATORS.names()


# --- models ----------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs (width doubling up to ndf*8), one stride-1 4x4
    conv, then a 1-channel 4x4 conv; LeakyReLU(0.2). Receptive field 70x70 for n_layers=3."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"PatchGAN n_layers must be >= 1, got {n_layers}.")
        self.config: Dict[str, Any] = dict(in_channels=in_channels, ndf=ndf, n_layers=n_layers, norm=norm)
        norm_layer = get_norm_layer(norm)
        bias = use_conv_bias(norm)
        kw, padw = 4, 1

        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=stride, padding=padw, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: classifies each pixel independently."""

    def __init__(self, in_channels: int, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        self.config: Dict[str, Any] = dict(in_channels=in_channels, ndf=ndf, norm=norm)
        norm_layer = get_norm_layer(norm)
        bias = use_conv_bias(norm)
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- registered variants ---------------------------------------------------------------------


@register_discriminator()
def patchgan(in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> NLayerDiscriminator:
    """70x70 PatchGAN for n_layers=3 (CycleGAN default)."""
    return NLayerDiscriminator(in_channels, ndf=ndf, n_layers=n_layers, norm=norm)


@register_discriminator()
def pixel(
    in_channels: int, ndf: int = 64, n_layers: Optional[int] = None, norm: str = "instance"
) -> PixelDiscriminator:
    """1x1 PixelGAN; ``n_layers`` is accepted and ignored so one call signature builds any discriminator."""
    return PixelDiscriminator(in_channels, ndf=ndf, norm=norm)
