"""The views of unlabelled real B images that pseudo-label them (``loss.semantic.pseudo_labels``),
the outline view's input, and how far views agree."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

# the network behind each view of real B (``source`` reads the image's translation to A); a second
# ``shape`` view is a second, independently initialised outline network
VIEW_NETWORKS = {"shape": "outline", "translations": "downstream", "source": "task_a"}


def view_networks(views: List[str]) -> List[str]:
    """The task network behind each view: ``outline``, ``outline_2`` for a repeated ``shape``."""
    names = []
    for i, view in enumerate(views):
        repeat = views[:i].count(view)
        names.append(VIEW_NETWORKS[view] + (f"_{repeat + 1}" if repeat else ""))
    return names



def _standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


def shape_view(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): the edges of images of any domain and channel count, each standardised: the
    Sobel gradient magnitude of the image's channel mean after scaling it to zero mean and unit
    deviation. What it keeps (outlines) does not depend on colours, temperatures or their polarity."""
    gray = _standardise(images.float().mean(dim=1, keepdim=True))
    kernel = torch.stack([_SOBEL, _SOBEL.t()]).unsqueeze(1).to(gray.device)
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernel)
    return _standardise(grad.square().sum(dim=1, keepdim=True).add(1e-6).sqrt())


def overlap(guesses: torch.Tensor, num_classes: int, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(2, K): for each class, how many entries every view gives it, and how many any view gives
    it. ``guesses`` (V, ...) holds each view's predicted classes of the same entries; ``weight``
    (the entries' shape) counts some entries only."""
    hits = F.one_hot(guesses.flatten(1), num_classes).bool()  # (V, M, K)
    counted = torch.ones(hits.shape[1], device=guesses.device) if weight is None else weight.flatten().float()
    return torch.stack([(hits.all(0).float() * counted[:, None]).sum(0), (hits.any(0).float() * counted[:, None]).sum(0)])


def agreement_of(counts: torch.Tensor) -> torch.Tensor:
    """The mean, over the classes some view gives, of ``overlap``'s intersection over union (1 where
    no view gives any class, or for a single view). No host sync."""
    inter, union = counts
    present = union > 0
    ratio = torch.where(present, inter / union.clamp(min=1e-9), torch.zeros_like(union))
    return torch.where(present.any(), ratio.sum() / present.sum().clamp(min=1), torch.ones_like(ratio.sum()))


def agreement(guesses: torch.Tensor, num_classes: int, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How much views agree on a set of entries: ``agreement_of(overlap(...))``."""
    return agreement_of(overlap(guesses, num_classes, weight))


def reading(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int) -> torch.Tensor:
    """(2 + 2K,) counts behind Cohen's kappa of predictions against targets, over the labelled
    entries: how many match, how many there are, then the targets' and the predictions' class counts."""
    valid = (target != ignore).flatten().float()
    pred, target = pred.flatten(), torch.where(target != ignore, target, 0).flatten()
    marginals = [torch.zeros(num_classes, device=pred.device).scatter_add_(0, x, valid) for x in (target, pred)]
    return torch.cat([torch.stack([((pred == target).float() * valid).sum(), valid.sum()]), *marginals])


def kappa_of(counts: torch.Tensor) -> torch.Tensor:
    """Cohen's kappa from ``reading``'s counts: 0 for chance agreement (given how often each class
    is labelled and predicted), 1 for complete agreement; NaN with no entry. No host sync."""
    total = counts[1]
    observed = counts[0] / total
    labels, preds = counts[2:].view(2, -1) / total
    expected = (labels * preds).sum()
    return (observed - expected) / (1 - expected).clamp(min=1e-6)
