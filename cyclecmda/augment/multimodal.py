"""Augmentations for samples that hold several aligned modalities (visible, infrared, masks, boxes).

- :class:`MultiModalCompose` declares the modalities of a sample once and applies geometric
  transforms with the same parameters to all of them, photometric transforms to the modality
  they are declared for, and synthesizes a missing modality with an exported translator.

:class:`ModalityDropout` and :class:`CrossModalMixup` (``augment.modalities``) work on its samples
and batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import albumentations as A
import numpy as np
import torch

from cyclecmda.augment.albu import translate_batch
from cyclecmda.export.artifact import check_runtime, load_artifact, to_unit, unit_mapping

__all__ = ["MultiModalCompose", "Synthesis"]

Sample = Dict[str, Any]
KINDS = ("image", "mask")
_RESERVED = ("image", "images", "mask", "masks", "bboxes", "keypoints", "volume", "volumes")


def worker_id() -> int:
    """This process's DataLoader worker id, -1 in the main process."""
    info = torch.utils.data.get_worker_info()
    return info.id if info is not None else -1


class WorkerRng:
    """A NumPy generator seeded by (seed, DataLoader worker id), created on first use in each process.

    With a seed, draws are reproducible and differ between workers; without one, fresh entropy.
    """

    def __init__(self, seed: Optional[int]) -> None:
        self.seed = seed
        self._rng: Optional[np.random.Generator] = None
        self._worker: Optional[int] = None

    def get(self) -> np.random.Generator:
        worker = worker_id()
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
        if worker_id() != self._worker:
            self._reseed(worker_id())
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
        from cyclecmda.augment.modalities import ModalityDropout  # it imports this module

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
