"""One detector trained on images with boxes and scored on others: what ``cyclecmda downstream
--task boxes`` runs for each arm and seed. Mean average precision comes from torchmetrics'
``MeanAveragePrecision`` (the COCO evaluation of pycocotools, ``method.losses.box_scores``), not
from code of our own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from cyclecmda.evaluate.task_model import BETAS, batches
from cyclecmda.method.losses import box_scores
from cyclecmda.models.detector import Detector

DetectorFactory = Callable[[int, int], nn.Module]


@dataclass
class Boxed:
    """Images ``(N, C, S, S)`` float32 in [-1, 1] and their objects: per image ``boxes`` (n, 4)
    float32 x_min, y_min, x_max, y_max in pixels and ``labels`` (n,) int64."""

    images: torch.Tensor
    boxes: List[torch.Tensor]
    labels: List[torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: "Boxed") -> "Boxed":
        return Boxed(torch.cat([self.images, other.images]), self.boxes + other.boxes, self.labels + other.labels)

    def targets(self, index: torch.Tensor, flip: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """The objects of ``index``'s images, mirrored where ``flip`` says (the images' width)."""
        width = self.images.shape[-1]
        out = []
        for i, mirrored in zip(index.tolist(), flip.tolist()):
            boxes = self.boxes[i]
            if mirrored:
                boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
            out.append({"boxes": boxes, "labels": self.labels[i]})
        return out


def build_detector(model: Union[str, DetectorFactory], in_channels: int, num_classes: int, width: int, size: int,
                   weights: str) -> nn.Module:
    if callable(model):
        return model(in_channels, num_classes)
    return Detector(model, in_channels, num_classes, width, size, weights)


@torch.no_grad()
def score_boxes(net: nn.Module, test: Boxed, device: str = "cpu", batch_size: int = 64) -> Dict[str, float]:
    """mAP@0.5 (``map_50``) and mAP@0.5:0.95 (``map``) of ``net``'s detections on ``test``."""
    was = net.training
    net.eval()
    found = [d for batch in test.images.split(batch_size) for d in net(batch.to(device))]
    net.train(was)
    return box_scores(found, test.boxes, test.labels)


def train_and_score_boxes(
    train: Boxed,
    test: Boxed,
    num_classes: int,
    seed: int,
    epochs: int,
    model: Union[str, DetectorFactory] = "small_detector",
    width: int = 16,
    weights: str = "",
    lr: float = 2e-3,
    batch_size: int = 32,
    device: str = "cpu",
    on_epoch: Optional[Callable[[int, Callable[[], Dict[str, float]]], None]] = None,
) -> Dict[str, float]:
    """Train a fresh detector on ``train`` (Adam, random horizontal flips of images and boxes) and
    return its mAP on ``test`` (:func:`score_boxes`). ``on_epoch(epoch, score_now)`` is called after
    every epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = build_detector(model, train.images.shape[1], num_classes, width, train.images.shape[-1], weights).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=BETAS)
    xs = train.images.to(device)
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in batches(len(xs), batch_size, generator):
            flip = torch.rand(len(idx), generator=generator) < 0.5
            images = torch.where(flip.to(device).view(-1, 1, 1, 1), xs[idx].flip(-1), xs[idx])
            targets = [{k: v.to(device) for k, v in t.items()} for t in train.targets(idx, flip)]
            loss = torch.stack(list(net(images, targets).values())).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch, lambda: score_boxes(net, test, device))
    return score_boxes(net, test, device)
