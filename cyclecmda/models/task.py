"""Task networks (image classifiers and segmenters) that judge what a translation shows.

Every task network takes images in [-1, 1] with ``in_channels`` channels and returns logits:
``(B, num_classes)`` for ``kind="class"``, ``(B, num_classes, H, W)`` for ``kind="mask"``. Our
own small networks are registered by name; any torchvision classification or segmentation
model is available as ``torchvision.<name>`` (built with ``weights=None``; a local weights file
may be given, and the layers whose shapes fit are loaded from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.errors import ConfigError
from cyclecmda.registry import Registry

TASK_NETWORKS = Registry("task network")
TASK_KINDS = ("class", "mask")
DEFAULT_TASK_NETWORK = {"class": "small_classifier", "mask": "small_segmenter"}  # what "auto" builds
TORCHVISION_PREFIX = "torchvision."
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["TASK_NETWORKS", "TaskNetwork", "build_task_network", "load_fitting", "list_task_networks", "register_task_network",
           "task_network_spec"]


def register_task_network(name: Optional[str] = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``f(in_channels, num_classes, width) -> nn.Module`` under ``name``."""
    return TASK_NETWORKS.register(name)


def list_task_networks() -> List[str]:
    return TASK_NETWORKS.names() + [f"{TORCHVISION_PREFIX}<model name>"]


# --- blocks --------------------------------------------------------------------------------------


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv, group norm (batch-size independent, the same in every process), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(True))


# --- our own small networks ----------------------------------------------------------------------


class SmallClassifier(nn.Module):
    """Four conv blocks (width, 2x, 4x, 4x channels), each halving the size, then global pooling."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        layers: List[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [conv_block(cin, w), conv_block(w, w), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class SmallSegmenter(nn.Module):
    """A three-level U-Net: logits at the input's size (any size; padded to a multiple of 4)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = nn.Sequential(conv_block(in_channels, w1), conv_block(w1, w1))
        self.enc2 = nn.Sequential(conv_block(w1, w2), conv_block(w2, w2))
        self.mid = nn.Sequential(conv_block(w2, w3), conv_block(w3, w3))
        self.dec2 = nn.Sequential(conv_block(w3 + w2, w2), conv_block(w2, w2))
        self.dec1 = nn.Sequential(conv_block(w2 + w1, w1), conv_block(w1, w1))
        self.head = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, [0, (-w) % 4, 0, (-h) % 4], mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2.0, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.head(d1)[:, :, :h, :w]


@register_task_network("small_classifier")
def small_classifier(in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    return SmallClassifier(in_channels, num_classes, width)


@register_task_network("small_segmenter")
def small_segmenter(in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    return SmallSegmenter(in_channels, num_classes, width)


# --- torchvision ------------------------------------------------------------------------------------


class _TorchvisionTask(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor
    """A torchvision model on our images: [-1, 1] -> ImageNet-normalised RGB; the dict output of
    segmentation models reduced to its ``out`` logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = self.net(((x + 1) / 2 - self.mean) / self.std)
        return out["out"] if isinstance(out, dict) else out


def _torchvision_network(model: str, kind: str, num_classes: int, weights: str) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models()
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    if model not in available:
        raise ConfigError(
            f"model.task.arch: '{TORCHVISION_PREFIX}{model}' is not a torchvision model; e.g. "
            f"{TORCHVISION_PREFIX}resnet18, {TORCHVISION_PREFIX}lraspp_mobilenet_v3_large."
        )
    if (kind == "mask") != (model in segmentation):
        wanted = "a segmentation model" if kind == "mask" else "a classification model"
        raise ConfigError(f"model.task.arch: loss.semantic.kind={kind} needs {wanted}; '{model}' is not one.")
    extra: Dict[str, Any] = {"weights_backbone": None} if model in segmentation else {}
    if model in segmentation and model.startswith(("fcn_", "deeplabv3_")):
        extra["aux_loss"] = False
    net = torchvision.models.get_model(model, weights=None, num_classes=num_classes, **extra)
    if weights:
        load_fitting(net, Path(weights))
    return _TorchvisionTask(net)


def load_fitting(net: nn.Module, path: Path, key: str = "model.task.weights") -> int:
    """Load the tensors of a local weights file whose names and shapes fit ``net``, at whichever
    level of its ``.net`` wrappers the names match best (a new head stays new); return how many.
    ``key`` names the setting or option in messages."""
    if not path.is_file():
        raise ConfigError(f"{key}: '{path}' does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or unsafe file fails in many types
        raise ConfigError(f"{key}: '{path}' is not a loadable weights file ({str(exc).splitlines()[0]}).") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    levels: List[nn.Module] = [net]
    while isinstance(getattr(levels[-1], "net", None), nn.Module):
        levels.append(getattr(levels[-1], "net"))
    best: nn.Module = net
    fitting: Dict[str, torch.Tensor] = {}
    for level in levels:
        own = level.state_dict()
        fit = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
        if len(fit) > len(fitting):
            best, fitting = level, fit
    if not fitting:
        raise ConfigError(f"{key}: no tensor in '{path}' fits the network (another network's weights?).")
    best.load_state_dict(fitting, strict=False)
    return len(fitting)


# --- what the rest of the package builds --------------------------------------------------------------


def task_network_spec(name: str, kind: str, in_channels: int, num_classes: int, width: int,
                      downsample: int = 1) -> Dict[str, Any]:
    """What rebuilds a task network (``build_task_network``); checkpoints and exports store it."""
    args: Dict[str, Any] = {"kind": kind, "in_channels": in_channels, "num_classes": num_classes, "width": width}
    if downsample != 1:  # (absent at 1: the spec of networks stored before the option existed)
        args["downsample"] = downsample
    return {"name": name, "args": args}


class TaskNetwork(nn.Module):
    """A registered or torchvision network with what it was built for: its spec rebuilds it."""

    def __init__(self, name: str, kind: str, in_channels: int, num_classes: int, width: int = 32,
                 weights: str = "", downsample: int = 1) -> None:
        super().__init__()
        if kind not in TASK_KINDS:
            raise ConfigError(f"task kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}.")
        if num_classes < 2:
            raise ConfigError(f"a task network needs at least 2 classes, got {num_classes}.")
        if downsample < 1:
            raise ConfigError(f"model.task.downsample must be >= 1, got {downsample!r}.")
        self.kind, self.in_channels, self.num_classes, self.downsample = kind, in_channels, num_classes, downsample
        if name.startswith(TORCHVISION_PREFIX):
            self.net = _torchvision_network(name[len(TORCHVISION_PREFIX):], kind, num_classes, weights)
        else:
            self.net = TASK_NETWORKS.create(name, in_channels=in_channels, num_classes=num_classes, width=width)
        self.spec = task_network_spec(name, kind, in_channels, num_classes, width, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``(B, in_channels, H, W)`` images in [-1, 1] (a network reads its own domain's
        images). With ``downsample`` k > 1 the network reads the images average-pooled by k (a k-th
        of the size: about 1/k^2 of the work); mask logits are scaled back to (H, W)."""
        if self.downsample == 1:
            return self.net(x)
        h, w = x.shape[-2:]
        out = self.net(F.avg_pool2d(x, self.downsample))
        if self.kind == "mask":
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out


def build_task_network(spec: Dict[str, Any]) -> TaskNetwork:
    """A task network from its stored spec (weights come from the checkpoint, not a file)."""
    return TaskNetwork(spec["name"], **spec["args"])
