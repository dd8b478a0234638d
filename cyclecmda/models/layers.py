"""Layers chosen by name: normalization, x2 upsampling, weight initialization."""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from cyclecmda.errors import unknown

NormLayer = Callable[[int], nn.Module]

NORM_LAYERS: Tuple[str, ...] = ("instance", "batch", "sync_batch", "none")
UPSAMPLE_MODES: Tuple[str, ...] = ("transpose", "resize_conv")
INIT_SCHEMES: Tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")

_CONV_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
_NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
)


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` without affine or running statistics. On CPU it runs as group norm
    with one channel per group: the same normalization (equal to float rounding), whose CPU
    kernels are faster (``docs/benchmarks.md``), except in float16, whose CPU group-norm
    gradients overflow where instance norm's do not. Scripted,
    traced and ONNX exports keep the plain instance norm."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=False, track_running_stats=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        x = input if input.dim() == 4 else input.unsqueeze(0)
        if torch.jit.is_scripting():  # its own branch: TorchScript then never compiles the checks below
            out = F.instance_norm(x, eps=self.eps)
        elif (input.device.type == "cpu" and input.dtype != torch.float16
              and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())):
            # not fp16: the CPU group-norm kernels overflow in the double backward of wgangp's penalty
            out = F.group_norm(x, x.shape[1], eps=self.eps)
        else:
            out = F.instance_norm(x, eps=self.eps)
        return out if input.dim() == 4 else out.squeeze(0)


def _no_norm(num_features: int) -> nn.Module:
    return nn.Identity()


def get_norm_layer(name: str) -> NormLayer:
    """A constructor ``f(num_features) -> nn.Module`` for the named normalization."""
    if name == "instance":
        return InstanceNorm2d
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "sync_batch":  # the trainer swaps in nn.SyncBatchNorm when several CUDA processes train
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "none":
        return _no_norm
    raise unknown("norm layer", name, NORM_LAYERS)


def use_conv_bias(norm: str) -> bool:
    """Whether convs followed by this norm need a bias (batch norms bring their own shift)."""
    get_norm_layer(norm)  # validates the name
    return norm not in ("batch", "sync_batch")


def make_upsample(
    mode: str,
    in_channels: int,
    out_channels: int,
    *,
    bias: bool = True,
    kernel_size: int = 3,
    interpolation: str = "nearest",
) -> nn.Module:
    """A conv that doubles H and W.

    ``transpose``: ConvTranspose2d(kernel_size, stride 2), padded to give exactly 2x (kernel 3:
    padding 1, output_padding 1; kernel 4: padding 1). ``resize_conv``: ``interpolation``
    resize x2, reflection pad 1, 3x3 conv; free of checkerboard artifacts. ``kernel_size``
    only applies to ``transpose``.
    """
    if mode == "transpose":
        padding = (kernel_size - 1) // 2
        output_padding = 2 + 2 * padding - kernel_size
        return nn.ConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=2,
            padding=padding,
            output_padding=output_padding,
            bias=bias,
        )
    if mode == "resize_conv":
        align = False if interpolation in ("bilinear", "bicubic") else None
        return nn.Sequential(
            OrderedDict(
                resize=nn.Upsample(scale_factor=2, mode=interpolation, align_corners=align),
                pad=nn.ReflectionPad2d(1),
                conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, bias=bias),
            )
        )
    raise unknown("upsample mode", mode, UPSAMPLE_MODES)


def init_weights(module: nn.Module, init: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialize conv/linear weights by ``init``, affine norm weights ~ N(1, gain), biases 0.

    Matches the reference CycleGAN code: ``normal`` N(0, gain), ``xavier`` xavier_normal(gain),
    ``kaiming`` kaiming_normal(a=0, fan_in; gain unused), ``orthogonal`` orthogonal(gain).
    Returns ``module``.
    """
    if init not in INIT_SCHEMES:
        raise unknown("init scheme", init, INIT_SCHEMES)
    module.apply(functools.partial(_init_module, scheme=init, gain=gain))
    return module


def _init_module(m: nn.Module, scheme: str, gain: float) -> None:
    if isinstance(m, _CONV_LAYERS):
        if scheme == "normal":
            nn.init.normal_(m.weight, 0.0, gain)
        elif scheme == "xavier":
            nn.init.xavier_normal_(m.weight, gain=gain)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        else:
            nn.init.orthogonal_(m.weight, gain=gain)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, _NORM_LAYERS) and getattr(m, "weight", None) is not None:
        nn.init.normal_(m.weight, 1.0, gain)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
