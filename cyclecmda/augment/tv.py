"""torchvision ``transforms.v2`` flavour: batched translation of tensors on their own device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2._utils import is_pure_tensor

from cyclecmda.augment.albu import store_translation
from cyclecmda.export.artifact import load_artifact, translate_raw, translate_unit


class CycleGANTranslateV2(v2.Transform):
    """Translate images ((C, H, W) or batched (B, C, H, W)) with an exported CycleGAN generator.

    Works on ``tv_tensors.Image`` and plain tensors (uint8, uint16, or float in [0, 1]) wherever
    they live: the network runs on the input's device. ``Mask``, ``BoundingBoxes`` and other
    targets pass through untouched. ``strength`` is a float or a (min, max) range drawn per sample.
    ``units="input"`` (default) keeps the input's dtype and range; ``units="target"`` returns the
    target domain's dtype and raw range as trained, for every sample, translated or not (``p``).
    ``runtime="onnxruntime"`` runs ``model.onnx`` in ONNX Runtime instead of ``model.pt2`` in
    torch (CPU tensors only).
    """

    _transformed_types = (tv_tensors.Image, is_pure_tensor)

    def __init__(
        self,
        artifact: Union[str, Path],
        strength: Union[float, Tuple[float, float]] = 1.0,
        keep_input_channels: bool = True,
        units: str = "input",
        p: float = 1.0,
        runtime: str = "torch",
    ) -> None:
        super().__init__()
        self.p = p
        store_translation(self, artifact, strength, None, keep_input_channels, units, runtime)

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        images = [x for x, needed in zip(flat_inputs, self._needs_transform_list(flat_inputs)) if needed]
        n = images[0].shape[0] if images and images[0].ndim == 4 else 1
        lo, hi = self._range
        strength = torch.empty(n).uniform_(lo, hi) if hi > lo else torch.full((n,), lo)
        apply = torch.rand(n) < self.p
        return {"strength": torch.where(apply, strength, torch.zeros(n))}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        keeps_units = self.units == "input"
        if keeps_units and not bool((params["strength"] > 0).any()):
            return inpt
        artifact = load_artifact(self.artifact, runtime=self.runtime)
        x = inpt.as_subclass(torch.Tensor)
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        strength = params["strength"]
        out = translate_raw(artifact, batch, lambda u: translate_unit(artifact, u, strength, self.keep_input_channels),
                            self.units)
        if keeps_units and out.shape == batch.shape:  # samples drawn with strength 0 come back untouched
            keep = (params["strength"] <= 0).to(out.device).view(-1, 1, 1, 1)
            out = torch.where(keep, batch, out)
        out = out if x.ndim == 4 else out.squeeze(0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    # torchvision < 0.21 calls the private names
    def _get_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        return self.make_params(flat_inputs)

    def _transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self.transform(inpt, params)

