"""Sample- and batch-level transforms over several modalities:

- :class:`ModalityDropout` blanks one modality per sample (never all) so a model learns to cope
  with a missing sensor, and records which one it blanked.
- :class:`CrossModalMixup` mixes two samples with one lambda shared by every modality and the
  labels, on single samples or on collated batches of tensors (any device).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from cyclecmda.augment.multimodal import Sample, WorkerRng

__all__ = ["CrossModalMixup", "ModalityDropout"]


# --------------------------------------------------------------------------------------------
# ModalityDropout
# --------------------------------------------------------------------------------------------


class ModalityDropout:
    """Blank at most one modality per sample, so a model learns to work with a missing sensor.

    Per sample, modality ``m`` is replaced by ``fill`` with probability ``p[m]`` and none with
    probability ``1 - sum(p)`` (so ``sum(p) <= 1``, and with two or more modalities one always
    survives). The sample gains ``key``: ``{modality: dropped (bool)}``, which the default collate
    turns into one bool tensor per modality.

    Works on one sample (NumPy arrays or tensors) via ``__call__``, and on a collated batch of
    tensors (any device; one independent draw per sample) via :meth:`batch`.
    """

    def __init__(self, p: Mapping[str, float], fill: Union[float, Mapping[str, float]] = 0.0, key: str = "dropped",
                 seed: Optional[int] = None) -> None:
        self.p = {k: float(v) for k, v in p.items()}
        if len(self.p) < 2:
            raise ValueError(f"ModalityDropout needs at least two modalities (one must survive), got {list(self.p)}.")
        bad = {k: v for k, v in self.p.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"ModalityDropout probabilities must be in [0, 1], got {bad}.")
        if sum(self.p.values()) > 1.0 + 1e-9:
            raise ValueError(f"ModalityDropout drops at most one modality per sample, so the probabilities must sum "
                             f"to <= 1; got {self.p} (sum {sum(self.p.values()):.3g}).")
        self.fill = fill
        self.key = key
        self.seed = seed
        self._rng = WorkerRng(seed)

    def _fill(self, name: str) -> float:
        return float(self.fill[name]) if isinstance(self.fill, Mapping) else float(self.fill)

    def _choose(self, u: np.ndarray) -> np.ndarray:
        """Index into the modalities (len(p) = none) for uniform draws ``u``."""
        edges = np.cumsum(list(self.p.values()))
        return np.searchsorted(edges, u, side="right")

    def __call__(self, sample: Sample) -> Sample:
        missing = [m for m in self.p if m not in sample]
        if missing:
            raise KeyError(f"ModalityDropout: the sample lacks {', '.join(missing)} (has {', '.join(sample)}).")
        choice = int(self._choose(self._rng.get().random(1))[0])
        names = list(self.p)
        out = dict(sample)
        if choice < len(names):
            name = names[choice]
            x = sample[name]
            out[name] = torch.full_like(x, self._fill(name)) if torch.is_tensor(x) else np.full_like(x, self._fill(name))
        out[self.key] = {n: i == choice for i, n in enumerate(names)}
        return out

    def batch(self, batch: Sample) -> Sample:
        """The same rule on a collated batch of tensors, one draw per sample along dim 0."""
        names = list(self.p)
        n = len(batch[names[0]])
        choice = torch.from_numpy(self._choose(self._rng.get().random(n)))
        out = dict(batch)
        dropped = {}
        for i, name in enumerate(names):
            x = batch[name]
            hit = (choice == i).to(x.device)
            out[name] = torch.where(hit.view(-1, *[1] * (x.dim() - 1)), torch.full_like(x, self._fill(name)), x)
            dropped[name] = hit
        out[self.key] = dropped
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"__class_fullname__": "cyclecmda.augment.ModalityDropout", "p": dict(self.p),
                "fill": dict(self.fill) if isinstance(self.fill, Mapping) else self.fill, "key": self.key,
                "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModalityDropout":
        return cls(p=data["p"], fill=data.get("fill", 0.0), key=data.get("key", "dropped"), seed=data.get("seed"))


# --------------------------------------------------------------------------------------------
# CrossModalMixup
# --------------------------------------------------------------------------------------------


class CrossModalMixup:
    """Mixup across aligned modalities: one ``lam ~ Beta(alpha, alpha)`` per pair of samples.

    Every modality of the pair is mixed as ``lam * x1 + (1 - lam) * x2`` with the same ``lam``,
    and so are the labels (class indices become one-hot over ``num_classes``; soft label vectors
    are mixed as they are). Masks follow ``mask_mode``:

    - ``"soft"``: mixed like images (a binary mask becomes a soft one in [0, 1]; class-index masks
      should be one-hot first, as averaging class indices means nothing);
    - ``"dominant"``: the mask of the sample with the larger weight (``lam >= 0.5``: the first).

    ``lam`` is stored under ``lambda_key`` (a float for a pair, a (B,) tensor for a batch).
    Integer images (uint8/uint16) are mixed in float and rounded back to their dtype.
    """

    def __init__(self, modalities: Sequence[str], alpha: float = 0.4, label_key: Optional[str] = "label",
                 num_classes: Optional[int] = None, masks: Sequence[str] = (), mask_mode: str = "soft",
                 lambda_key: str = "mixup_lambda", seed: Optional[int] = None) -> None:
        if alpha <= 0:
            raise ValueError(f"CrossModalMixup alpha must be > 0, got {alpha}.")
        if mask_mode not in ("soft", "dominant"):
            raise ValueError(f"CrossModalMixup mask_mode must be 'soft' or 'dominant', got {mask_mode!r}.")
        self.modalities = list(modalities)
        self.alpha = float(alpha)
        self.label_key = label_key
        self.num_classes = num_classes
        self.masks = list(masks)
        self.mask_mode = mask_mode
        self.lambda_key = lambda_key
        self.seed = seed
        self._rng = WorkerRng(seed)

    def _soft_label(self, label: Any) -> torch.Tensor:
        t = torch.as_tensor(label)
        if t.is_floating_point():
            return t
        if self.num_classes is None:
            raise ValueError("CrossModalMixup: integer labels need num_classes to become one-hot vectors.")
        return torch.nn.functional.one_hot(t.long(), self.num_classes).float()

    def pair(self, first: Sample, second: Sample) -> Sample:
        """Mix two single samples (arrays or tensors) with one lambda."""
        lam = float(self._rng.get().beta(self.alpha, self.alpha))
        out = dict(first)
        for name in self.modalities:
            out[name] = _mix(first[name], second[name], lam)
        for name in self.masks:
            out[name] = _mix(first[name], second[name], lam) if self.mask_mode == "soft" else \
                (first[name] if lam >= 0.5 else second[name])
        if self.label_key is not None:
            out[self.label_key] = lam * self._soft_label(first[self.label_key]) + \
                (1 - lam) * self._soft_label(second[self.label_key])
        out[self.lambda_key] = lam
        return out

    def __call__(self, batch: Sample) -> Sample:
        """Mix a collated batch with a shuffled copy of itself: sample i with sample ``index[i]``."""
        x0 = batch[self.modalities[0]]
        n, device = x0.shape[0], x0.device
        rng = self._rng.get()
        lam = torch.from_numpy(rng.beta(self.alpha, self.alpha, n).astype(np.float32)).to(device)
        index = torch.from_numpy(rng.permutation(n)).to(device)
        out = dict(batch)
        for name in self.modalities + (self.masks if self.mask_mode == "soft" else []):
            x = batch[name]
            out[name] = _mix(x, x[index], lam.view(-1, *[1] * (x.dim() - 1)))
        if self.mask_mode == "dominant":
            for name in self.masks:
                x = batch[name]
                out[name] = torch.where((lam >= 0.5).view(-1, *[1] * (x.dim() - 1)), x, x[index])
        if self.label_key is not None:
            y = self._soft_label(batch[self.label_key]).to(device)
            out[self.label_key] = lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[index]
        out[self.lambda_key] = lam
        out["mixup_index"] = index
        return out


def _mix(a: Any, b: Any, lam: Union[float, torch.Tensor]) -> Any:
    if torch.is_tensor(a):
        mixed = lam * a.float() + (1 - lam) * b.float()
        if a.is_floating_point():
            return mixed.to(a.dtype)
        return mixed.round().clamp(0, torch.iinfo(a.dtype).max).to(a.dtype)
    a, b = np.asarray(a), np.asarray(b)
    mixed = float(lam) * a.astype(np.float64) + (1 - float(lam)) * b.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        return np.rint(mixed).clip(0, np.iinfo(a.dtype).max).astype(a.dtype)
    return mixed.astype(a.dtype)
