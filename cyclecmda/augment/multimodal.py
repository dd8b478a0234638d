"""Augmentations for samples that hold several aligned modalities (visible, infrared, masks, boxes).

- :class:`MultiModalCompose` declares the modalities of a sample once and applies geometric
  transforms with the same parameters to all of them, photometric transforms to the modality
  they are declared for, and synthesizes a missing modality with an exported translator.
- :class:`ModalityDropout` blanks one modality per sample (never all) so a model learns to cope
  with a missing sensor, and records which one it blanked.
- :class:`CrossModalMixup` mixes two samples with one lambda shared by every modality and the
  labels, on single samples or on collated batches of tensors (any device).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import albumentations as A
import numpy as np
import torch

from cyclecmda.augment.albu import translate_batch
from cyclecmda.export.artifact import check_runtime, load_artifact, to_unit, unit_mapping

__all__ = ["CrossModalMixup", "ModalityDropout", "MultiModalCompose", "Synthesis"]

Sample = Dict[str, Any]
KINDS = ("image", "mask")
_RESERVED = ("image", "images", "mask", "masks", "bboxes", "keypoints", "volume", "volumes")


def _worker_id() -> int:
    """This process's DataLoader worker id, -1 in the main process."""
    info = torch.utils.data.get_worker_info()
    return info.id if info is not None else -1


class _WorkerRng:
    """A NumPy generator seeded by (seed, DataLoader worker id), created on first use in each process.

    With a seed, draws are reproducible and differ between workers; without one, fresh entropy.
    """

    def __init__(self, seed: Optional[int]) -> None:
        self.seed = seed
        self._rng: Optional[np.random.Generator] = None
        self._worker: Optional[int] = None

    def get(self) -> np.random.Generator:
        worker = _worker_id()
        if self._rng is None or worker != self._worker:
            self._worker = worker
            self._rng = np.random.default_rng(None if self.seed is None else [self.seed, worker + 1])
        return self._rng

    def __getstate__(self) -> Dict[str, Any]:  # a worker starts its own stream
        return {"seed": self.seed, "_rng": None, "_worker": None}


# --------------------------------------------------------------------------------------------
# MultiModalCompose
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Synthesis:
    """How to create a missing modality: ``target = translate(sample[source])``.

    ``dtype``: ``native`` gives the translator's output domain as it was trained (16-bit
    translators give uint16 raw values in their output range, 8-bit ones uint8); or ``uint8``,
    ``uint16`` (full range) or ``float32`` in [0, 1]. ``always``: translate even when the sample
    already holds the target (otherwise a real target is kept).
    """

    source: str
    artifact: str
    dtype: str = "native"
    strength: float = 1.0
    device: str = "cpu"
    always: bool = False
    runtime: str = "torch"  # or "onnxruntime": model.onnx in ONNX Runtime, on the CPU

    def __post_init__(self) -> None:
        if self.dtype not in ("native", "uint8", "uint16", "float32"):
            raise ValueError(f"Synthesis.dtype must be native, uint8, uint16 or float32, got {self.dtype!r}.")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"Synthesis.strength must be in [0, 1], got {self.strength}.")
        check_runtime(self.runtime, self.device)
        load_artifact(self.artifact, runtime=self.runtime)  # a wrong path fails here, not in a worker

    def run(self, image: np.ndarray) -> np.ndarray:
        artifact = load_artifact(self.artifact, runtime=self.runtime)
        image = np.asarray(image)
        if self.dtype == "native":  # the target domain's units (as SynthesizeModality gives by default)
            return translate_batch(artifact, image[None], [self.strength], self.device, False, units="target")[0]
        unit_in = _to_float(image, artifact.meta["input"])
        unit = translate_batch(artifact, unit_in[None], [self.strength], self.device, keep_input_channels=False)[0]
        if self.dtype == "float32":
            return unit.astype(np.float32)
        hi = float(np.iinfo(self.dtype).max)
        return np.rint(unit * hi).clip(0, hi).astype(self.dtype)


def _to_float(image: np.ndarray, side: Mapping[str, Any]) -> np.ndarray:
    """An image as float32 in [0, 1] by the translator's input scaling (as the translation transforms do)."""
    lo, hi = unit_mapping(image.dtype, dict(side))
    return to_unit(torch.from_numpy(np.ascontiguousarray(image)), lo, hi).numpy()


def _leaves(transform: Any) -> List[Any]:
    if isinstance(transform, A.BaseCompose):
        return [leaf for t in transform.transforms for leaf in _leaves(t)]
    return [transform]


def _check_kind(transforms: Sequence[Any], kind: type, where: str, advice: str) -> None:
    for t in transforms:
        for leaf in _leaves(t):
            if not isinstance(leaf, kind):
                raise TypeError(f"MultiModalCompose: {type(leaf).__name__} in {where} is not a {kind.__name__}; {advice}")


class MultiModalCompose:
    """One call augments every modality of a sample with consistent parameters.

    Args:
        modalities: name -> ``"image"`` or ``"mask"``, e.g. ``{"visible": "image", "infrared":
            "image", "mask": "mask"}``. The first image modality leads (its size is the sample's).
        geometric: albumentations spatial transforms (``A.DualTransform``: crops, flips,
            rotations, ...), applied with the same parameters to every modality, boxes and keypoints.
        photometric: modality name -> pixel-level transforms (``A.ImageOnlyTransform``) applied to
            that modality only. 16-bit images go through them as float32 in [0, 1] (value / 65535)
            and come back as uint16.
        synthesize: target modality -> :class:`Synthesis` (or its fields as a dict): a missing
            modality is translated from another one before any other transform, so the geometric
            transforms then apply to both.
        bbox_params, keypoint_params: as for ``A.Compose``.
        after: callables ``sample -> sample`` run last (e.g. :class:`ModalityDropout`).
        seed: makes the random parameters reproducible (different per DataLoader worker).

    Call with the modalities (and ``bboxes``, label fields, ``keypoints``) as keyword arguments;
    returns a dict with the same keys.
    """

    def __init__(
        self,
        modalities: Mapping[str, str],
        geometric: Sequence[Any] = (),
        photometric: Optional[Mapping[str, Sequence[Any]]] = None,
        synthesize: Optional[Mapping[str, Union[Synthesis, Mapping[str, Any]]]] = None,
        bbox_params: Optional[A.BboxParams] = None,
        keypoint_params: Optional[A.KeypointParams] = None,
        after: Sequence[Callable[[Sample], Sample]] = (),
        seed: Optional[int] = None,
    ) -> None:
        self.modalities = dict(modalities)
        for name, kind in self.modalities.items():
            if kind not in KINDS:
                raise ValueError(f"modality '{name}' has kind {kind!r}; valid kinds: {', '.join(KINDS)}.")
            if name in _RESERVED:
                raise ValueError(f"modality name '{name}' is reserved by albumentations ({', '.join(_RESERVED)}); "
                                 "name it after the sensor, e.g. 'visible', 'infrared', 'segmentation'.")
        images = [n for n, k in self.modalities.items() if k == "image"]
        if not images:
            raise ValueError("MultiModalCompose needs at least one image modality.")
        self.lead = images[0]
        self.geometric = list(geometric)
        _check_kind(self.geometric, A.DualTransform, "geometric",
                    "pixel-level transforms go in photometric={modality: [...]}.")
        self.photometric = {k: list(v) for k, v in (photometric or {}).items()}
        for name, transforms in self.photometric.items():
            if self.modalities.get(name) != "image":
                raise KeyError(f"photometric transforms for '{name}', which is not an image modality "
                               f"({', '.join(images)}).")
            _check_kind(transforms, A.ImageOnlyTransform, f"photometric['{name}']",
                        "spatial transforms go in geometric=[...] so that every modality follows them.")
        self.synthesize = {k: v if isinstance(v, Synthesis) else Synthesis(**v) for k, v in (synthesize or {}).items()}
        for target, syn in self.synthesize.items():
            for name in (target, syn.source):
                if self.modalities.get(name) != "image":
                    raise KeyError(f"synthesize['{target}']: '{name}' is not an image modality ({', '.join(images)}).")
        self.bbox_params = bbox_params
        self.keypoint_params = keypoint_params
        self.after = list(after)
        self.seed = seed
        others = {n: k for n, k in self.modalities.items() if n != self.lead}
        self._geometric = A.Compose(self.geometric, additional_targets=others, bbox_params=bbox_params,
                                    keypoint_params=keypoint_params)
        self._geometric_keys = [
            key for params, main in ((bbox_params, "bboxes"), (keypoint_params, "keypoints")) if params is not None
            for key in (main, *(params.label_fields or ()))
        ]
        self._photometric = {name: A.Compose(ts) for name, ts in self.photometric.items()}
        self._worker: Optional[int] = None
        self._reseed(-1)

    def _reseed(self, worker: int) -> None:
        """Seed the inner pipelines from (seed, worker): albumentations 2.0 copies one random state
        into every DataLoader worker, which would repeat the same augmentations in each of them."""
        self._worker = worker
        if self.seed is None and worker < 0:
            return
        base = self.seed if self.seed is not None else torch.initial_seed()  # differs per worker and epoch
        seeds = np.random.SeedSequence([base % 2**63, worker + 1]).generate_state(1 + len(self._photometric))
        self._geometric.set_random_seed(int(seeds[0]))
        for compose, s in zip(self._photometric.values(), seeds[1:]):
            compose.set_random_seed(int(s))

    def __call__(self, **sample: Any) -> Sample:
        if _worker_id() != self._worker:
            self._reseed(_worker_id())
        missing = [n for n in self.modalities if n not in sample and n not in self.synthesize]
        if missing:
            raise KeyError(f"MultiModalCompose: the sample lacks {', '.join(missing)}; declared modalities: "
                           f"{', '.join(self.modalities)}; given: {', '.join(sample)}.")
        out = dict(sample)
        for target, syn in self.synthesize.items():
            if syn.always or target not in out:
                if syn.source not in out:
                    raise KeyError(f"MultiModalCompose: cannot synthesize '{target}' without '{syn.source}'.")
                out[target] = syn.run(out[syn.source])
        for key, params, arg in (("bboxes", self.bbox_params, "bbox_params=A.BboxParams(...)"),
                                 ("keypoints", self.keypoint_params, "keypoint_params=A.KeypointParams(...)")):
            if key in out and params is None:
                raise ValueError(f"MultiModalCompose: the sample has '{key}' but the pipeline was built without "
                                 f"{arg.split('=')[0]}, so they would not follow the geometric transforms; pass {arg}.")
        extra = {k: out[k] for k in self._geometric_keys if k in out}
        geo = self._geometric(image=out[self.lead], **{n: out[n] for n in self.modalities if n != self.lead}, **extra)
        out.update({k: v for k, v in geo.items() if k != "image"})
        out[self.lead] = geo["image"]
        for name, compose in self._photometric.items():
            out[name] = _photometric(compose, out[name])
        for fn in self.after:
            out = fn(out)
        return out

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable description; :meth:`from_dict` rebuilds an equal pipeline."""
        return {
            "__class_fullname__": "cyclecmda.augment.MultiModalCompose",
            "modalities": dict(self.modalities),
            "geometric": A.to_dict(self._geometric),
            "photometric": {name: A.to_dict(c) for name, c in self._photometric.items()},
            "synthesize": {k: asdict(v) for k, v in self.synthesize.items()},
            "after": [getattr(fn, "to_dict")() for fn in self.after],
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MultiModalCompose":
        geo = A.from_dict(data["geometric"])
        bboxes, keypoints = geo.processors.get("bboxes"), geo.processors.get("keypoints")
        after_types = {"ModalityDropout": ModalityDropout}
        after = []
        for d in data.get("after", []):
            kind = after_types.get(d.get("__class_fullname__", "").rsplit(".", 1)[-1])
            if kind is None:
                raise ValueError(f"cannot rebuild the after-transform {d.get('__class_fullname__')!r}; "
                                 f"known: {', '.join(after_types)}.")
            after.append(kind.from_dict(d))
        return cls(
            modalities=data["modalities"],
            geometric=list(geo.transforms),
            photometric={name: list(A.from_dict(c).transforms) for name, c in data.get("photometric", {}).items()},
            synthesize=data.get("synthesize", {}),
            bbox_params=bboxes.params if bboxes is not None else None,
            keypoint_params=keypoints.params if keypoints is not None else None,
            after=after,
            seed=data.get("seed"),
        )


def _photometric(compose: A.Compose, image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:  # albumentations' pixel transforms take uint8 or float32 in [0, 1]
        unit = compose(image=image.astype(np.float32) / 65535.0)["image"]
        return np.rint(np.clip(unit, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return compose(image=image)["image"]


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
        self._rng = _WorkerRng(seed)

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
        self._rng = _WorkerRng(seed)

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
