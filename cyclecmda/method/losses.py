"""Adversarial losses, the WGAN-GP gradient penalty, the patch contrastive (PatchNCE) loss, and the
label losses and scores of the semantic term and `cyclecmda downstream`.

Cycle-consistency and identity losses are plain L1: ``torch.nn.functional.l1_loss``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.data.targets import ignore_index
from cyclecmda.errors import ConfigError, unknown

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
            raise unknown("gan mode", mode, GAN_MODES)
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


class PatchProjector(nn.Module):
    """Samples feature-map positions and projects each layer's features onto the unit sphere.

    One two-layer MLP per feature layer (``channels`` lists their widths), as in contrastive
    unpaired translation (Park et al., 2020). The same positions are used for a query image and
    its key image, so that a position's positive is the same place in the other image.
    """

    def __init__(self, channels: Sequence[int], dim: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels)
        for layer in self.mlps.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 0.02)
                nn.init.zeros_(layer.bias)

    @staticmethod
    def sample_positions(feats: Sequence[torch.Tensor], n_patches: int) -> List[torch.Tensor]:
        """Per layer, up to ``n_patches`` distinct flat positions (the same for the whole batch)."""
        return [torch.randperm(f.shape[2] * f.shape[3], device=f.device)[:n_patches] for f in feats]

    def forward(self, feats: Sequence[torch.Tensor], positions: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Per layer, (N, P, dim) unit vectors of the features at ``positions``."""
        if len(feats) != len(self.mlps):
            raise ValueError(f"PatchProjector has {len(self.mlps)} layers, got {len(feats)} feature maps")
        out = []
        for mlp, f, pos in zip(self.mlps, feats, positions):
            picked = f.flatten(2)[:, :, pos].transpose(1, 2)  # (N, P, C)
            out.append(F.normalize(mlp(picked).float(), dim=-1))
        return out


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE over patches: each query patch must pick its own key among its image's patches.

    ``query`` and ``key`` are (N, P, D) unit vectors at the same P positions. The positive of
    query i is key i; the negatives are the image's other P - 1 keys. Keys carry no gradient.
    Returns the mean cross-entropy over all N * P patches (log P for uninformative features).
    """
    key = key.detach()
    logits = torch.bmm(query, key.transpose(1, 2)) / temperature  # (N, P, P); the diagonal holds the positives
    target = torch.arange(query.shape[1], device=query.device).expand(query.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


# --- label losses and scores (the semantic term, cyclecmda downstream) ---------------------------------


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore: int, balance: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the labelled entries (0, not NaN, when none is labelled); with
    ``balance``, the mean over the classes present of each class's mean."""
    valid = target != ignore
    labelled = valid.sum().clamp(min=1)
    weight = None
    if balance:  # class counts without boolean indexing: no host sync on a GPU
        counts = torch.zeros(logits.shape[1], device=logits.device).scatter_add_(
            0, torch.where(valid, target, 0).flatten(), valid.flatten().float())
        present = (counts > 0).sum().clamp(min=1)
        weight = labelled / (present * counts.clamp(min=1))
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore, reduction="sum")
    return total / labelled


def score(logits: torch.Tensor, target: torch.Tensor, kind: str, num_classes: int) -> float:
    """Accuracy (classes) or mean IoU over the classes present (masks) of predictions on the
    labelled entries (NaN where none is labelled)."""
    ignore = ignore_index(kind)
    pred, keep = logits.argmax(1), target != ignore
    if not bool(keep.any()):
        return float("nan")
    if kind == "class":
        return float((pred[keep] == target[keep]).float().mean())
    pred, target = pred[keep], target[keep]
    ious = []
    for c in range(num_classes):
        union = ((pred == c) | (target == c)).sum()
        if union:
            ious.append(float(((pred == c) & (target == c)).sum()) / float(union))
    return sum(ious) / len(ious)


# the metrics of detections: the first is the one tables lead with and gap shares use
BOX_METRICS = {"map_50": "mAP@0.5", "map": "mAP@0.5:0.95"}


def mean_average_precision() -> Any:
    """torchmetrics' COCO mAP on x_min, y_min, x_max, y_max boxes; a clear error where its backend is missing."""
    try:
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    except ModuleNotFoundError as exc:  # pycocotools is a dependency; a broken install lacks it
        raise ConfigError(f"scoring boxes needs pycocotools ({exc}); pip install pycocotools.") from None


def box_scores(found: Sequence[Dict[str, torch.Tensor]], boxes: Sequence[torch.Tensor],
               labels: Sequence[torch.Tensor]) -> Dict[str, float]:
    """mAP@0.5 (``map_50``) and mAP@0.5:0.95 (``map``) of detections (one dict of ``boxes``,
    ``scores``, ``labels`` per image) against the true ``boxes`` and ``labels`` of the same images."""
    metric = mean_average_precision()
    metric.update([{k: v.detach().cpu() if k == "labels" else v.detach().float().cpu() for k, v in d.items()} for d in found],
                  [{"boxes": b.float().cpu(), "labels": c.cpu()} for b, c in zip(boxes, labels)])
    values = metric.compute()
    return {name: float(values[name]) for name in BOX_METRICS}
