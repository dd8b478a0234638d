"""Object detectors: the downstream model of boxes (``cyclecmda downstream --task boxes``).

Every detector reads ``(B, in_channels, H, W)`` images in [-1, 1]. Called with targets (one dict
per image: ``"boxes"`` (N, 4) float x_min, y_min, x_max, y_max in pixels, ``"labels"`` (N,) int64
class indices from 0) it returns a dict of losses; called without, one dict per image of
``"boxes"``, ``"scores"`` and ``"labels"``. That is torchvision's detection interface, except that
class indices start at 0 (torchvision's 0 is the background: its wrapper here shifts them). Our own
small detector is registered by name; any torchvision detection model is available as
``torchvision.<name>`` (built with ``weights=None``; a local weights file may be given, and the
layers whose shapes fit are loaded from it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.errors import ConfigError
from cyclecmda.models.task import TORCHVISION_PREFIX, conv_block, load_fitting
from cyclecmda.registry import Registry

DETECTORS = Registry("detector")
DEFAULT_DETECTOR = "small_detector"
Target = Dict[str, torch.Tensor]

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "Detector", "SmallDetector", "check_detector", "register_detector"]


def register_detector(name: Optional[str] = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``f(in_channels, num_classes, width, size) -> nn.Module`` under ``name``."""
    return DETECTORS.register(name)


# --- our own small detector ------------------------------------------------------------------------


class SmallDetector(nn.Module):
    """A centre-point detector (Zhou et al., "Objects as Points", 2019) on a small encoder-decoder:
    for each class a heatmap of object centres, and at each position the size of the box centred
    there and the centre's offset within its cell, at half the input's resolution (objects a few
    pixels wide keep a cell of their own)."""

    STRIDE = 2
    GAUSSIAN = 0.54  # the centre heatmap's spread, as a share of the box (TTFNet, Liu et al., 2019)

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, max_detections: int = 100) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.num_classes, self.max_detections, self.stride = num_classes, max_detections, self.STRIDE
        self.enc1 = conv_block(in_channels, w1)
        self.enc2 = nn.Sequential(conv_block(w1, w2), conv_block(w2, w2))
        self.enc3 = nn.Sequential(conv_block(w2, w3), conv_block(w3, w3))
        self.enc4 = nn.Sequential(conv_block(w3, w3), conv_block(w3, w3))
        self.dec3 = conv_block(w3 + w3, w3)
        self.dec2 = conv_block(w3 + w2, w2)
        # per class a centre heatmap; then log width, log height, centre offset x, y
        last = nn.Conv2d(w2, num_classes + 4, 1)
        start = torch.zeros(num_classes + 4)
        start[:num_classes] = -math.log((1 - 0.1) / 0.1)  # start sure of no object
        last.bias = nn.Parameter(start)
        self.head = nn.Sequential(conv_block(w2, w2), last)

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, [0, (-w) % 8, 0, (-h) % 8], mode="replicate")
        e2 = self.enc2(F.max_pool2d(self.enc1(x), 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([F.interpolate(e4, scale_factor=2.0, mode="nearest"), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0, mode="nearest"), e2], 1))
        return self.head(d2)

    @torch.jit.unused  # exports run FixedDetections
    def forward(self, x: torch.Tensor, targets: Optional[List[Target]] = None) -> Any:
        maps = self._maps(x)
        if targets is not None:
            return self.losses(maps, targets)
        return self.detections(maps, x.shape[-2:])

    def _targets(self, targets: List[Target], shape: torch.Size, device: torch.device) -> Dict[str, torch.Tensor]:
        """The centre heatmaps (B, K, h, w), and at each box's centre cell its size and offset."""
        n, _, h, w = shape
        heat = torch.zeros(n, self.num_classes, h, w, device=device)
        gy = torch.arange(h, device=device, dtype=torch.float32)[:, None]
        gx = torch.arange(w, device=device, dtype=torch.float32)[None, :]
        cells: List[torch.Tensor] = []
        box: List[torch.Tensor] = []
        for i, target in enumerate(targets):
            boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
            labels = target["labels"].to(device)
            if not len(boxes):
                continue
            size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-2)
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / self.stride
            cell = centre.floor().long()
            cell[:, 0].clamp_(0, w - 1)
            cell[:, 1].clamp_(0, h - 1)
            sigma = (self.GAUSSIAN * size / self.stride / 6).clamp(min=0.5)
            for (cx, cy), (sx, sy), cls in zip(cell.tolist(), sigma.tolist(), labels.tolist()):
                g = torch.exp(-((gx - cx) ** 2 / (2 * sx * sx) + (gy - cy) ** 2 / (2 * sy * sy)))
                heat[i, cls] = torch.maximum(heat[i, cls], g)
            index = torch.full_like(labels, i)
            cells.append(torch.stack([index, labels, cell[:, 1], cell[:, 0]], 1))
            box.append(torch.cat([size.log(), centre - cell], 1))
        return {"heat": heat, "cells": torch.cat(cells) if cells else torch.zeros(0, 4, dtype=torch.long, device=device),
                "box": torch.cat(box) if box else torch.zeros(0, 4, device=device)}

    def losses(self, maps: torch.Tensor, targets: List[Target]) -> Dict[str, torch.Tensor]:
        """Focal loss of the centre heatmaps (penalty-reduced near each centre), L1 of the log size
        and of the centre's offset at each box's centre cell."""
        maps = maps.float()
        logits, box = maps[:, : self.num_classes], maps[:, self.num_classes:]
        goal = self._targets(targets, logits.shape, maps.device)
        b, c, y, x = goal["cells"].unbind(1)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        positive[b, c, y, x] = True
        p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
        pos = -(1 - p).pow(2) * p.log() * positive
        neg = -p.pow(2) * (1 - p).log() * (1 - goal["heat"]).pow(4) * ~positive
        count = max(len(b), 1)
        found = box[b, :, y, x]
        offset = found[:, 2:].sigmoid()
        return {"heatmap": (pos.sum() + neg.sum()) / count,
                "size": F.l1_loss(found[:, :2], goal["box"][:, :2], reduction="sum") / count,
                "offset": F.l1_loss(offset, goal["box"][:, 2:], reduction="sum") / count}

    def decode(self, maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, D, 6): the ``max_detections`` strongest local peaks of the heatmaps (fewer where the
        maps hold fewer positions) as x_min, y_min, x_max, y_max (clipped to the image), score, class."""
        maps = maps.float()
        heat = maps[:, : self.num_classes].sigmoid()
        box = maps[:, self.num_classes:]
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
        k, h, w = heat.shape[1], heat.shape[2], heat.shape[3]
        scores, index = peaks.flatten(1).topk(min(self.max_detections, k * h * w), dim=1)
        # (no remainder by the map's size: the ONNX exporter cannot take one of a symbolic size)
        labels = torch.div(index, h * w, rounding_mode="floor")
        cell = index - labels * (h * w)
        row = torch.div(cell, w, rounding_mode="floor")
        cy, cx = row.float(), (cell - row * w).float()
        at = box.flatten(2).gather(2, cell.unsqueeze(1).expand(-1, 4, -1))  # (B, 4, D)
        half_w, half_h = at[:, 0].exp() / 2, at[:, 1].exp() / 2
        centre_x = (cx + at[:, 2].sigmoid()) * self.stride
        centre_y = (cy + at[:, 3].sigmoid()) * self.stride
        return torch.stack([(centre_x - half_w).clamp(0, width), (centre_y - half_h).clamp(0, height),
                            (centre_x + half_w).clamp(0, width), (centre_y + half_h).clamp(0, height),
                            scores, labels.float()], 2)

    @torch.no_grad()
    def detections(self, maps: torch.Tensor, size: torch.Size) -> List[Target]:
        """:meth:`decode` as one dict per image, detections scored above 0.01 only."""
        found = self.decode(maps, int(size[0]), int(size[1]))
        out = []
        for image in found:
            keep = image[:, 4] > 0.01
            out.append({"boxes": image[keep, :4], "scores": image[keep, 4], "labels": image[keep, 5].long()})
        return out


@register_detector("small_detector")
def small_detector(in_channels: int, num_classes: int, width: int = 16, size: int = 64) -> nn.Module:
    return SmallDetector(in_channels, num_classes, width)


class FixedDetections(nn.Module):
    """What an exported detector runs: ``(B, C, H, W)`` images in [-1, 1] -> ``(B, D, 6)``, each row
    x_min, y_min, x_max, y_max in pixels, score, class index (a fixed D, the strongest first: a
    program with one output shape, for torch.export, ONNX and TorchScript alike)."""

    def __init__(self, net: SmallDetector) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.decode(self.net._maps(x), x.shape[2], x.shape[3])


# --- torchvision ------------------------------------------------------------------------------------

# detection models that need more than boxes to train (instance masks, keypoints)
_NOT_BOXES = ("maskrcnn", "keypointrcnn")


def torchvision_detectors() -> List[str]:
    import torchvision

    return [m for m in torchvision.models.list_models(module=torchvision.models.detection) if not m.startswith(_NOT_BOXES)]


class _TorchvisionDetector(nn.Module):
    """A torchvision detection model on our images: [-1, 1] -> [0, 1] RGB (it normalises them
    itself), class indices shifted past its background class 0."""

    def __init__(self, model: str, num_classes: int, size: int, weights: str) -> None:
        super().__init__()
        import torchvision

        # resize to the images' own size (the default resizes every image to 800 px)
        extra: Dict[str, Any] = {} if model.startswith("ssd") else {"min_size": size, "max_size": size}
        self.net = torchvision.models.get_model(model, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                                **extra)
        if weights:
            load_fitting(self.net, Path(weights), "--weights")

    def forward(self, x: torch.Tensor, targets: Optional[List[Target]] = None) -> Any:
        images = list(((x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x) + 1) / 2)
        if targets is not None:
            shifted = [{"boxes": t["boxes"].float().reshape(-1, 4), "labels": t["labels"] + 1} for t in targets]
            was = self.net.training
            self.net.train()  # torchvision detectors give losses in training mode only
            losses = self.net(images, shifted)
            self.net.train(was)
            return losses
        was = self.net.training
        self.net.eval()
        found = self.net(images)
        self.net.train(was)
        return [{**d, "labels": d["labels"] - 1} for d in found]


# --- what the rest of the package builds --------------------------------------------------------------


def check_detector(name: str, key: str = "--model") -> None:
    """Refuse a name that is neither a registered detector nor a torchvision detection model."""
    if name.startswith(TORCHVISION_PREFIX):
        if name[len(TORCHVISION_PREFIX):] not in torchvision_detectors():
            raise ConfigError(f"{key} '{name}' is not a torchvision detection model that trains on boxes; e.g. "
                              f"{TORCHVISION_PREFIX}fcos_resnet50_fpn, {TORCHVISION_PREFIX}fasterrcnn_mobilenet_v3_large_fpn.")
    elif name not in DETECTORS:
        valid = [*DETECTORS.names(), f"{TORCHVISION_PREFIX}<detection model name>"]
        raise ConfigError(f"{key} '{name}' is not a detector; valid: {', '.join(valid)}.")


class Detector(nn.Module):
    """A registered or torchvision detector with what it was built for: its spec rebuilds it."""

    def __init__(self, name: str, in_channels: int, num_classes: int, width: int = 16, size: int = 64,
                 weights: str = "") -> None:
        super().__init__()
        check_detector(name)
        if num_classes < 1:
            raise ConfigError(f"a detector needs at least one class, got {num_classes}.")
        if name.startswith(TORCHVISION_PREFIX):
            self.net: nn.Module = _TorchvisionDetector(name[len(TORCHVISION_PREFIX):], num_classes, size, weights)
        else:
            self.net = DETECTORS.create(name, in_channels=in_channels, num_classes=num_classes, width=width, size=size)
            if weights:
                load_fitting(self.net, Path(weights), "--weights")
        args = {"in_channels": in_channels, "num_classes": num_classes, "width": width, "size": size}
        self.spec: Dict[str, Any] = {"name": name, "args": args}

    def forward(self, x: torch.Tensor, targets: Optional[List[Target]] = None) -> Any:
        return self.net(x, targets)
