"""Image-to-image generators (CycleGAN ResNet and U-Net), registered by name.

Every generator takes ``in_channels, out_channels, ngf, norm, dropout, upsample``, returns
images in [-1, 1], exposes ``size_multiple`` (input H and W must be multiples of it) and keeps
its constructor arguments in ``config`` so that ``create_generator(name, **net.config)``
rebuilds it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from cyclecmda.errors import ConfigError
from cyclecmda.models.layers import NormLayer, get_norm_layer, make_upsample, use_conv_bias
from cyclecmda.registry import Registry

GENERATORS = Registry("generator")


def register_generator(name: Optional[str] = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a generator constructor under ``name`` (default: its function name)."""
    return GENERATORS.register(name)


def create_generator(name: str, **kwargs: Any) -> nn.Module:
    """Build the generator registered as ``name``; unknown names raise ConfigError."""
    return GENERATORS.create(name, **kwargs)


def size_multiple(gen: nn.Module) -> int:
    """What a generator's input height and width must be multiples of."""
    return int(getattr(gen, "size_multiple"))


def list_generators() -> List[str]:
    return GENERATORS.names()


def _dropout(p: float) -> nn.Module:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"generator dropout must be in [0, 1), got {p}.")
    return nn.Dropout(p) if p > 0 else nn.Identity()


# --- blocks ----------------------------------------------------------------------------------


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    norm_layer: NormLayer,
    bias: bool,
) -> nn.Sequential:
    """Conv2d -> norm -> ReLU."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias),
            norm=norm_layer(out_channels),
            act=nn.ReLU(inplace=True),
        )
    )


class ResnetBlock(nn.Module):
    """Residual block: x + (pad, conv3x3, norm, ReLU, [dropout], pad, conv3x3, norm)(x)."""

    def __init__(self, channels: int, norm_layer: NormLayer, bias: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            OrderedDict(
                pad1=nn.ReflectionPad2d(1),
                conv1=nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
                norm1=norm_layer(channels),
                act1=nn.ReLU(inplace=True),
                drop=_dropout(dropout),
                pad2=nn.ReflectionPad2d(1),
                conv2=nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
                norm2=norm_layer(channels),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class UnetSkipBlock(nn.Module):
    """One U-Net level: down conv, the inner levels, up conv, concatenated with the input.

    Non-outermost levels first apply LeakyReLU(0.2) to their input, and the skip carries that
    activated tensor (the reference code gets the same result from an in-place LeakyReLU).
    The innermost level has no inner levels and no down norm; the outermost has no skip and
    ends in tanh. Dropout follows the up path where ``dropout`` > 0.
    """

    def __init__(
        self,
        outer_channels: int,
        inner_channels: int,
        *,
        in_channels: Optional[int] = None,
        submodule: Optional[nn.Module] = None,
        outermost: bool = False,
        norm_layer: NormLayer,
        bias: bool,
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        innermost = submodule is None
        self.outermost = outermost
        in_channels = outer_channels if in_channels is None else in_channels
        up_in = inner_channels if innermost else inner_channels * 2

        self.act = nn.Identity() if outermost else nn.LeakyReLU(0.2)
        down: Dict[str, nn.Module] = {
            "conv": nn.Conv2d(in_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=bias)
        }
        if not (outermost or innermost):
            down["norm"] = norm_layer(inner_channels)
        self.down = nn.Sequential(OrderedDict(down))
        self.inner = nn.Identity() if submodule is None else submodule

        up: Dict[str, nn.Module] = {"act": nn.ReLU(inplace=True)}
        if outermost:
            up["conv"] = make_upsample(upsample, up_in, outer_channels, bias=True, kernel_size=4)
            up["tanh"] = nn.Tanh()
        else:
            up["conv"] = make_upsample(upsample, up_in, outer_channels, bias=bias, kernel_size=4)
            up["norm"] = norm_layer(outer_channels)
            if dropout > 0:
                up["drop"] = _dropout(dropout)
        self.up = nn.Sequential(OrderedDict(up))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        y = self.up(self.inner(self.down(x)))
        return y if self.outermost else torch.cat([x, y], dim=1)


# --- models ----------------------------------------------------------------------------------


class ResnetGenerator(nn.Module):
    """7x7 conv, two stride-2 downsamplings, ``n_blocks`` residual blocks, two x2
    upsamplings, 7x7 conv, tanh (Johnson et al. as used by CycleGAN)."""

    n_downsampling = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
        n_blocks: int = 9,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ConfigError(f"ResnetGenerator n_blocks must be >= 0, got {n_blocks}.")
        self.config: Dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            ngf=ngf,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
            n_blocks=n_blocks,
        )
        self.size_multiple: int = 2**self.n_downsampling
        norm_layer = get_norm_layer(norm)
        bias = use_conv_bias(norm)

        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3),
            conv_norm_act(in_channels, ngf, 7, norm_layer=norm_layer, bias=bias),
        )
        self.down = nn.Sequential(
            *[
                conv_norm_act(ngf * 2**i, ngf * 2 ** (i + 1), 3, stride=2, padding=1, norm_layer=norm_layer, bias=bias)
                for i in range(self.n_downsampling)
            ]
        )
        width = ngf * 2**self.n_downsampling
        self.blocks = nn.Sequential(*[ResnetBlock(width, norm_layer, bias, dropout) for _ in range(n_blocks)])
        self.up = nn.Sequential(
            *[
                nn.Sequential(
                    OrderedDict(
                        conv=make_upsample(upsample, width // 2**i, width // 2 ** (i + 1), bias=bias),
                        norm=norm_layer(width // 2 ** (i + 1)),
                        act=nn.ReLU(inplace=True),
                    )
                )
                for i in range(self.n_downsampling)
            ]
        )
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, out_channels, kernel_size=7),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.blocks(self.down(self.stem(x)))))

    def feature_channels(self) -> List[int]:
        """Widths of the maps :meth:`forward_features` returns."""
        widths = [self.config["ngf"] * 2**i for i in range(self.n_downsampling + 1)]
        return widths + widths[-1:] if len(self.blocks) else widths

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The output and the encoder's maps: the stem, each downsampling and the first residual block."""
        h = self.stem(x)
        feats = [h]
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == 0:
                feats.append(h)
        return self.head(self.up(h)), feats


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 levels (pix2pix/CycleGAN layout); the ``num_downs - 5``
    middle levels of width ngf*8 carry the dropout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
        num_downs: int = 8,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ConfigError(f"UnetGenerator num_downs must be >= 5, got {num_downs}.")
        _dropout(dropout)  # validates the value even where no level uses it
        self.config: Dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            ngf=ngf,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
            num_downs=num_downs,
        )
        self.size_multiple: int = 2**num_downs
        common: Dict[str, Any] = dict(norm_layer=get_norm_layer(norm), bias=use_conv_bias(norm), upsample=upsample)

        block = UnetSkipBlock(ngf * 8, ngf * 8, **common)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, submodule=block, dropout=dropout, **common)
        block = UnetSkipBlock(ngf * 4, ngf * 8, submodule=block, **common)
        block = UnetSkipBlock(ngf * 2, ngf * 4, submodule=block, **common)
        block = UnetSkipBlock(ngf, ngf * 2, submodule=block, **common)
        self.model = UnetSkipBlock(
            out_channels, ngf, in_channels=in_channels, submodule=block, outermost=True, **common
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- registered variants ---------------------------------------------------------------------


def _resnet(n_blocks: int, kwargs: Dict[str, Any]) -> ResnetGenerator:
    return ResnetGenerator(**dict(dict(n_blocks=n_blocks), **kwargs))


def _unet(num_downs: int, kwargs: Dict[str, Any]) -> UnetGenerator:
    return UnetGenerator(**dict(dict(num_downs=num_downs), **kwargs))


@register_generator()
def resnet_9blocks(**kwargs: Any) -> ResnetGenerator:
    """ResNet generator with 9 residual blocks (CycleGAN default, 256 px)."""
    return _resnet(9, kwargs)


@register_generator()
def resnet_6blocks(**kwargs: Any) -> ResnetGenerator:
    """ResNet generator with 6 residual blocks (CycleGAN, 128 px)."""
    return _resnet(6, kwargs)


@register_generator()
def resnet_2blocks(**kwargs: Any) -> ResnetGenerator:
    """ResNet generator with 2 residual blocks, for tests."""
    return _resnet(2, kwargs)


@register_generator()
def unet_256(**kwargs: Any) -> UnetGenerator:
    """U-Net with 8 levels (input sides multiple of 256)."""
    return _unet(8, kwargs)


@register_generator()
def unet_128(**kwargs: Any) -> UnetGenerator:
    """U-Net with 7 levels (input sides multiple of 128)."""
    return _unet(7, kwargs)


@register_generator()
def unet_32(**kwargs: Any) -> UnetGenerator:
    """U-Net with 5 levels (input sides multiple of 32), for tests; too shallow for dropout."""
    return _unet(5, kwargs)
