"""Translation quality on held-out images: FID/KID against the real target domain, cycle
reconstruction error, and (for test sets paired by file name) L1, PSNR and SSIM of each
translation against its true counterpart.

Works on a training checkpoint (both directions) or on exported translators (an export folder
with ``a2b/`` and/or ``b2a/``, or one direction's folder), and inside the training loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from cyclecmda.config import DataConfig, config_from_dict
from cyclecmda.data.dataset import build_pipeline, to_tensor
from cyclecmda.data.domain import DomainFiles, ValueRange, list_images
from cyclecmda.data.images import LIMIT_SETTING, MAX_IMAGE_PIXELS, from_model
from cyclecmda.errors import CycleCMDAError, DataError
from cyclecmda.evaluate.metrics import FeatureExtractor, fid_kid, psnr, ssim
from cyclecmda.export.artifact import PaddedNetwork, TranslatorArtifact
from cyclecmda.files import output_error
from cyclecmda.method.cyclegan import stored_generator
from cyclecmda.models.generators import size_multiple
from cyclecmda.train.checkpoint import load_checkpoint

Translate = Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) in [-1, 1] -> same
DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}


@dataclass
class Translators:
    """Translation functions per direction, with the data settings they were trained with."""

    directions: Dict[str, Translate]
    data: DataConfig
    value_ranges: Dict[str, ValueRange]
    source: str = ""
    modules: List[nn.Module] = field(default_factory=list)

    def to(self, device: Union[str, torch.device]) -> "Translators":
        for m in self.modules:
            m.to(device)
        return self


def check_source(path: Union[str, Path]) -> Path:
    """Raise CycleCMDAError unless `path` exists (what it holds is checked when it is loaded)."""
    path = Path(path)
    if not path.exists():
        raise CycleCMDAError(f"'{path}' does not exist; give a checkpoint (.pt) or an export folder.")
    return path


def load_translators(path: Union[str, Path], device: str = "cpu") -> Translators:
    """Both generators of a checkpoint, or the exported translators under a folder."""
    path = check_source(path)
    if path.is_file():
        ckpt = load_checkpoint(path)
        nets: Dict[str, nn.Module] = {}
        for direction in ("a2b", "b2a"):
            gen = stored_generator(ckpt, direction)
            nets[direction] = PaddedNetwork(gen, size_multiple(gen)).to(device).eval()
        ranges = {k: ValueRange(*v) for k, v in ckpt["value_ranges"].items()}
        return Translators(dict(nets), config_from_dict(ckpt["config"]).data, ranges, str(path), list(nets.values()))
    folders = [path] if (path / "meta.json").is_file() else [path / d for d in DIRECTIONS if (path / d / "meta.json").is_file()]
    if not folders:
        raise CycleCMDAError(
            f"'{path}' is neither a checkpoint file nor an export folder (no meta.json in it or in a2b/, b2a/)."
        )
    directions: Dict[str, Translate] = {}
    modules: List[nn.Module] = []
    meta: Dict = {}
    for folder in folders:
        artifact = TranslatorArtifact(folder)  # not the shared cache: Translators.to moves its modules
        if artifact.task:
            raise CycleCMDAError(f"'{folder}' is a task network, not a translator; evaluate an a2b or b2a folder.")
        meta = artifact.meta
        net = artifact.module(device)
        directions[meta["direction"]] = net
        modules.append(net)
    ranges = {meta["input"]["domain"]: ValueRange(*meta["input"]["value_range"]),
              meta["output"]["domain"]: ValueRange(*meta["output"]["value_range"])}
    return Translators(directions, config_from_dict(meta["config"]).data, ranges, str(path), modules)


def load_test_images(
    side: str,
    root: str,
    data: DataConfig,
    value_range: ValueRange,
    max_images: Optional[int] = None,
    limit_setting: str = LIMIT_SETTING,
) -> Tuple[List[Path], torch.Tensor]:
    """A folder's images as one (N, C, S, S) tensor in [-1, 1], prepared as in training (test pipeline).

    Images larger than ``data.max_image_pixels`` are refused with an error naming `limit_setting`.
    """
    dom = getattr(data, side)
    files = DomainFiles(f"data.{side}", dom, list_images(root, data.extensions, f"{side} images"),
                        max_pixels=data.max_image_pixels, limit_setting=limit_setting)
    if max_images:
        files.files = files.files[:max_images]
    files.value_range = value_range
    pipeline = build_pipeline(dom, data, train=False)
    tensors = []
    for i in range(len(files)):
        img, _ = files.load(i)
        out = pipeline(image=img)["image"]
        tensors.append(to_tensor(out[:, :, None] if out.ndim == 2 else out))
    return files.files, torch.stack(tensors)


@torch.no_grad()
def run_batched(fn: Translate, images: torch.Tensor, device: Union[str, torch.device], batch_size: int = 16) -> torch.Tensor:
    return torch.cat([fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])


def compute_metrics(
    translators: Dict[str, Translate],
    real: Dict[str, torch.Tensor],
    paired: bool = False,
    extractor: Optional[FeatureExtractor] = None,
    device: Union[str, torch.device] = "cpu",
    kid_subset_size: int = 1000,
) -> Dict[str, float]:
    """Metrics of each available direction on held-out tensors ({"a": ..., "b": ...} in [-1, 1])."""
    fakes = {d: run_batched(fn, real[DIRECTIONS[d][0]], device) for d, fn in translators.items()}
    metrics: Dict[str, float] = {}
    for direction, fake in fakes.items():
        src, dst = DIRECTIONS[direction]
        if extractor is not None:
            scores = fid_kid(extractor, from_model(fake).split(32), from_model(real[dst]).split(32), device=device,
                             kid_subset_size=kid_subset_size)
            metrics.update({f"{k}_{direction}": float(v) for k, v in scores.items()})
        if paired:
            pred, target = from_model(fake), from_model(real[dst])
            metrics[f"paired_l1_{direction}"] = float((pred - target).abs().mean())
            metrics[f"paired_psnr_{direction}"] = float(psnr(pred, target).mean())
            metrics[f"paired_ssim_{direction}"] = float(ssim(pred, target).mean())
            mean_image = target.mean(0, keepdim=True).expand_as(target)
            metrics[f"mean_image_l1_{direction}"] = float((mean_image - target).abs().mean())
        back = {"a2b": "b2a", "b2a": "a2b"}[direction]
        if back in translators:
            rec = from_model(run_batched(translators[back], fake, device))
            metrics[f"cycle_l1_{src}"] = float((rec - from_model(real[src])).abs().mean())
            metrics[f"cycle_psnr_{src}"] = float(psnr(rec, from_model(real[src])).mean())
    return metrics


def evaluate(
    path: Union[str, Path],
    a_dir: Optional[str],
    b_dir: Optional[str],
    paired: bool = False,
    extractor: Optional[FeatureExtractor] = None,
    device: str = "cpu",
    max_image_pixels: Optional[int] = MAX_IMAGE_PIXELS,
) -> Dict[str, float]:
    """Metrics of a checkpoint or export on test folders of domain A and B.

    Test images larger than `max_image_pixels` (width x height; None or 0: no limit) are refused.
    """
    tr = load_translators(path, device)
    data = replace(tr.data, max_image_pixels=max_image_pixels)
    real: Dict[str, torch.Tensor] = {}
    names: Dict[str, List[str]] = {}
    for side, root in (("a", a_dir), ("b", b_dir)):
        if root:
            files, real[side] = load_test_images(side, root, data, tr.value_ranges[side],
                                                 limit_setting="--max-image-pixels")
            names[side] = [p.name for p in files]
    usable = {d: fn for d, fn in tr.directions.items() if set(DIRECTIONS[d]) <= set(real)}
    if not usable:
        raise CycleCMDAError("give test folders of both domains (--a and --b) so that each direction can be scored.")
    if paired and names["a"] != names["b"]:
        differ = sorted(set(names["a"]) ^ set(names["b"]))
        raise DataError(
            f"--paired needs the same file names in both folders; {len(differ) or 'their order'} differ"
            + (f", e.g. '{differ[0]}'." if differ else ".")
        )
    metrics = compute_metrics(usable, real, paired, extractor, device)
    metrics.update({f"n_{side}": float(len(t)) for side, t in real.items()})
    return metrics


def format_table(metrics: Dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items())


def features_record(extractor: Optional[FeatureExtractor]) -> Optional[Dict[str, object]]:
    """What evaluation.json says of the FID/KID feature network: name, weights and their SHA-256,
    resizing, and whether its FID compares with published numbers."""
    if extractor is None:
        return None
    return {"network": extractor.name, "weights": str(getattr(extractor, "weights_path", "")),
            "weights_sha256": getattr(extractor, "weights_sha256", None), "resize": getattr(extractor, "resize", None),
            "comparable_with_papers": extractor.name == "inception_v3_tf_fid"}


def write_json(metrics: Dict[str, float], path: Optional[Path], about: Optional[Dict[str, object]] = None) -> None:
    """Write the metrics (and, under ``about``, how they were measured) as JSON; a failed write
    raises :class:`OutputError` naming the path."""
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**metrics, **({"about": about} if about else {})}, indent=2) + "\n")
        except OSError as exc:
            raise output_error(exc, path) from None
