"""albumentations transforms: translate the image, or add the other modality as a new target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import albumentations as A
import numpy as np
import torch

from cyclecmda.export.artifact import TranslatorArtifact, check_runtime, check_units, load_artifact, translate_raw, translate_unit

Strength = Union[float, Tuple[float, float]]


def _strength_range(strength: Union[float, Sequence[float]]) -> Tuple[float, float]:
    lo, hi = (float(strength), float(strength)) if isinstance(strength, (int, float)) else map(float, strength)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"strength must be a float in [0, 1] or a (min, max) range inside it, got {strength!r}.")
    return lo, hi


def translate_batch(
    artifact: TranslatorArtifact,
    images: np.ndarray,
    strengths: Sequence[float],
    device: str,
    keep_input_channels: bool,
    units: str = "input",
) -> np.ndarray:
    """(N, H, W[, C]) uint8/uint16/float32 images -> translations in `units` (see :func:`output_units`)."""
    squeeze = images.ndim == 3
    batch = images[..., None] if squeeze else images
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2)
    s = torch.tensor(list(strengths))
    out = translate_raw(artifact, x, lambda unit: translate_unit(artifact, unit, s, keep_input_channels), units)
    pixels = out.permute(0, 2, 3, 1).cpu().numpy()
    return pixels[..., 0] if squeeze and pixels.shape[-1] == 1 else pixels


def store_translation(transform: Any, artifact: Union[str, Path], strength: Strength, device: Optional[str],
                      keep_input_channels: bool, units: str, runtime: str) -> None:
    """The translation arguments of a transform, checked and stored under their own names (so that
    albumentations' ``to_dict`` round-trips them); a wrong path or a missing file fails here, while
    the network itself loads lazily, in the process that uses it. ``device`` None: the transform
    runs where its input is (no ``device`` attribute)."""
    transform.artifact = str(artifact)
    transform.strength = strength
    if device is not None:
        transform.device = device
    transform.keep_input_channels = keep_input_channels
    transform.units = check_units(units)
    transform.runtime = check_runtime(runtime, device)
    transform._range = _strength_range(strength)
    load_artifact(transform.artifact, runtime=transform.runtime)


class CycleGANTranslate(A.ImageOnlyTransform):
    """Translate the image with an exported CycleGAN generator; masks, boxes and keypoints are untouched.

    Args:
        artifact: an exported direction folder (``cyclecmda export ... -o OUT`` -> ``OUT/a2b``).
        strength: blend of original (0) and translation (1); a (min, max) range draws one per call.
        device: where the network runs ("cpu", "cuda", "cuda:1").
        keep_input_channels: return as many channels as the input image (a 1-channel translation of
            an RGB image is replicated to 3, an RGB translation of a gray image becomes luma); with
            False the generator's own channel count is returned.
        units: ``"input"`` (default) returns the dtype and range the image came in, so the transform
            never changes a pipeline's types; ``"target"`` returns the target domain's dtype and raw
            range as trained (uint16 counts for a 16-bit thermal camera), and then every image,
            translated or not (``p``, strength 0), leaves in those units.
        runtime: ``"torch"`` (default) runs ``model.pt2``; ``"onnxruntime"`` runs ``model.onnx``
            (export with ``--format pt2,onnx``) in ONNX Runtime on the CPU, the fastest CPU path
            (docs/benchmarks.md).
        p: probability of applying the transform.

    The image may be uint8, uint16 or float32 in [0, 1], HWC or HW; with ``units="input"`` the
    result has the same dtype, range and layout. The network is loaded on first use, once per process, so the transform is
    cheap to pickle into DataLoader workers. ``images`` (a batch) runs as one batched forward.
    """

    def __init__(
        self,
        artifact: Union[str, Path],
        strength: Strength = 1.0,
        device: str = "cpu",
        keep_input_channels: bool = True,
        units: str = "input",
        runtime: str = "torch",
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        store_translation(self, artifact, strength, device, keep_input_channels, units, runtime)

    def should_apply(self, force_apply: bool = False) -> bool:
        # in target units an image that is not translated must still leave in the target's units
        return self.units == "target" or super().should_apply(force_apply)

    def get_params(self) -> Dict[str, Any]:
        translate = self.units == "input" or super().should_apply()  # the draw against p, in target units
        return {"strength": self.py_random.uniform(*self._range) if translate else 0.0}

    def _translate(self, images: np.ndarray, strengths: Sequence[float]) -> np.ndarray:
        artifact = load_artifact(self.artifact, runtime=self.runtime)
        return translate_batch(artifact, images, strengths, self.device, self.keep_input_channels, self.units)

    def apply(self, img: np.ndarray, strength: float = 1.0, **params: Any) -> np.ndarray:
        if strength <= 0 and self.keep_input_channels and self.units == "input":
            return img
        return self._translate(img[None], [strength])[0]

    def apply_to_images(self, images: np.ndarray, strength: float = 1.0, **params: Any) -> np.ndarray:
        return self._translate(np.asarray(images), [strength] * len(images))

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ("artifact", "strength", "device", "keep_input_channels", "units", "runtime")


class SynthesizeModality(A.ImageOnlyTransform):
    """Add the other modality as a new target: ``data[target] = translate(data[source])``.

    Declare the new key in the pipeline (``A.Compose(..., additional_targets={"infrared": "image"})``)
    so that geometric transforms after this one are applied with the same parameters to both
    modalities. Always applied: a pipeline that expects the target must always get it.

    ``units="target"`` (default): the new modality looks like the real sensor's data, in the
    target domain's dtype and raw range as trained (uint16 counts for a 16-bit thermal camera,
    uint8 for an 8-bit one), whatever the source image's dtype. ``units="input"`` gives it the
    source image's dtype and range instead.
    """

    def __init__(
        self,
        artifact: Union[str, Path],
        target: str = "synthesized",
        source: str = "image",
        strength: Strength = 1.0,
        device: str = "cpu",
        keep_input_channels: bool = False,
        units: str = "target",
        runtime: str = "torch",
        p: float = 1.0,
    ) -> None:
        super().__init__(p=1.0)
        self.target = target
        self.source = source
        store_translation(self, artifact, strength, device, keep_input_channels, units, runtime)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> Dict[str, Any]:
        if args:
            raise KeyError("pass data to augmentations as named arguments, e.g. aug(image=image)")
        if self.source not in data:
            raise KeyError(f"SynthesizeModality: source key '{self.source}' is not in the sample ({', '.join(data)}).")
        strength = self.py_random.uniform(*self._range)
        self.params = {"strength": strength}
        out = dict(data)
        out[self.target] = translate_batch(
            load_artifact(self.artifact, runtime=self.runtime), np.asarray(data[self.source])[None], [strength],
            self.device, self.keep_input_channels, self.units,
        )[0]
        return out

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ("artifact", "target", "source", "strength", "device", "keep_input_channels", "units", "runtime")

