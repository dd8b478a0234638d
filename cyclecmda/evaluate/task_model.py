"""One downstream model trained on a labelled set and scored on another: what ``cyclecmda
downstream`` runs for each arm and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.data.targets import ignore_index
from cyclecmda.errors import ConfigError
from cyclecmda.method.losses import score
from cyclecmda.models.task import (
    TASK_NETWORKS,
    TORCHVISION_PREFIX,
    TaskNetwork,
    load_fitting,
)

ModelFactory = Callable[[int, int], nn.Module]
BETAS = (0.9, 0.999)


@dataclass
class Labelled:
    """Images ``(N, C, S, S)`` float32 in [-1, 1] and their targets: ``(N,)`` class indices, or
    ``(N, S, S)`` mask classes (255 where ignored), int64."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: "Labelled") -> "Labelled":
        return Labelled(torch.cat([self.images, other.images]), torch.cat([self.targets, other.targets]))


def check_model(name: str, task: str) -> None:
    """Refuse a model name that is neither registered nor a torchvision model of the task's kind."""
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        model = name[len(TORCHVISION_PREFIX):]
        segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
        if model not in torchvision.models.list_models():
            raise ConfigError(f"--model '{name}' is not a torchvision model; e.g. {TORCHVISION_PREFIX}resnet18, "
                              f"{TORCHVISION_PREFIX}lraspp_mobilenet_v3_large.")
        if (task == "mask") != (model in segmentation):
            wanted = "a segmentation model" if task == "mask" else "a classification model"
            raise ConfigError(f"--model '{name}': --task {task} needs {wanted}, and '{model}' is not one.")
    elif name not in TASK_NETWORKS:
        valid = [*TASK_NETWORKS.names(), f"{TORCHVISION_PREFIX}<model name>"]
        raise ConfigError(f"--model '{name}' is not a task network; valid: {', '.join(valid)}.")


def build_model(model: Union[str, ModelFactory], task: str, in_channels: int, num_classes: int, width: int,
           weights: str) -> nn.Module:
    if callable(model):
        net = model(in_channels, num_classes)
    else:
        net = TaskNetwork(model, task, in_channels, num_classes, width)
    if weights:
        load_fitting(net, Path(weights), "--weights")
    return net


def batches(n: int, batch_size: int, generator: torch.Generator) -> List[torch.Tensor]:
    """A shuffled epoch in batches; a last batch of one joins the one before (batch norm cannot
    train on a single image)."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def train_and_score(
    train: Labelled,
    test: Labelled,
    task: str,
    num_classes: int,
    seed: int,
    epochs: int,
    model: Union[str, ModelFactory] = "small_classifier",
    width: int = 16,
    weights: str = "",
    lr: float = 1e-3,
    batch_size: int = 32,
    device: str = "cpu",
    on_epoch: Optional[Callable[[int, Callable[[], float]], None]] = None,
) -> float:
    """Train a fresh model on ``train`` (Adam, random horizontal flips) and return its test score:
    accuracy (``task="class"``) or mean IoU over the classes present (``"mask"``).

    ``on_epoch(epoch, score_now)`` is called after every epoch (``score_now()`` scores the model
    as it is then)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = build_model(model, task, train.images.shape[1], num_classes, width, weights).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=BETAS)
    ignore = ignore_index(task)
    xs, ys = train.images.to(device), train.targets.to(device)

    def score_now() -> float:
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(b.to(device)).float().cpu() for b in test.images.split(64)])
        net.train()
        return score(logits, test.targets, task, num_classes)

    for epoch in range(1, epochs + 1):
        net.train()
        for idx in batches(len(xs), batch_size, generator):
            flip = (torch.rand(len(idx), generator=generator) < 0.5).to(device)
            batch = torch.where(flip.view(-1, 1, 1, 1), xs[idx].flip(-1), xs[idx])
            target = ys[idx]
            if task == "mask":
                target = torch.where(flip.view(-1, 1, 1), target.flip(-1), target)
            loss = F.cross_entropy(net(batch), target, ignore_index=ignore)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch, score_now)
    return score_now()
