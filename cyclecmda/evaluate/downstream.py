"""What a translator is worth downstream, on any labelled data.

The same downstream model (a classifier, or a segmenter) is trained several ways and tested on
labelled real B test images:

- ``as_is``: the labelled A training images as they are, converted to B's channel count;
- ``translated``: the same A images through an exported A -> B translator (one arm per artifact);
- ``real_b``: labelled B training images, where the config gives them (the ceiling).

Every image the model sees is in [-1, 1] on one B scale: the first artifact's output value range
(``meta.json`` ``output.value_range``), else the config's resolved ``data.b`` range; A images as
they are map by data.a's own range. Each arm is trained once per seed; a seed fixes the model's
initial weights, the shuffling and the flips, so the same seed gives the same figure on a device.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cyclecmda.config import Config, DataConfig, DomainConfig
from cyclecmda.data.domain import DomainFiles, ValueRange, build_domain, class_order
from cyclecmda.data.images import convert_channels, to_model
from cyclecmda.data.labels import ClassOrder, read_mask
from cyclecmda.errors import ConfigError, DataError, unknown
from cyclecmda.evaluate.task_model import BETAS, Labelled, ModelFactory, build_model, check_model, train_and_score
from cyclecmda.export.artifact import TranslatorArtifact, load_artifact, to_unit, translate_unit
from cyclecmda.models.task import (
    DEFAULT_TASK_NETWORK,
    TASK_KINDS,
    TORCHVISION_PREFIX,
    TaskNetwork,
)

PathLike = Union[str, Path]
Artifacts = Union[PathLike, Sequence[PathLike], Mapping[str, PathLike]]

ARM_KINDS = ("as_is", "translated", "real_b")
METRIC = {"class": "accuracy", "mask": "miou"}
DEFAULT_WIDTH = {"class": 16, "mask": 8}
DEFAULT_LR = {"class": 1e-3, "mask": 2e-3}
# Where the test score of every arm had levelled off on the demo data (docs/experiments.md, "Default epochs of
# cyclecmda downstream").
DEFAULT_EPOCHS = {"class": 80, "mask": 100}
DEFAULT_SEEDS = (0, 1, 2)

__all__ = ["ARM_KINDS", "DEFAULT_EPOCHS", "Labelled", "format_table", "measure", "train_and_score"]


@dataclass
class _Raw:
    """A split's images resized to S x S, in raw pixel values (float32, the domain's channels)."""

    images: torch.Tensor  # (N, C, S, S)
    targets: torch.Tensor
    files: DomainFiles


# --- reading --------------------------------------------------------------------------------------


def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=mode)
    return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out


def _read(files: DomainFiles, task: str, size: int) -> _Raw:
    """Every image of ``files`` (decoded and checked by the domain's rules) resized to ``size``, with
    its class or mask; an unusable file stops the run, or is skipped under data.on_bad_file=skip."""
    images: List[np.ndarray] = []
    targets: List[Any] = []
    for path in files.files:
        try:
            img = files.decode(path)
            if task == "mask":
                masks = files.labels.masks or {}
                mask = read_mask(masks[path], len(files.mask_classes), img.shape[:2])
        except DataError as exc:
            if files.on_bad_file == "error":
                raise
            files.skipped[str(path)] = str(exc)
            warnings.warn(f"skipping unusable image: {exc}", stacklevel=2)
            continue
        images.append(_resize(img.astype(np.float32), size))
        targets.append(_resize(mask, size, nearest=True) if task == "mask" else files.labels.label(path))
    if not images:
        raise DataError(f"{files.key}: every image was unusable ({len(files.skipped)} skipped).")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack(targets)).long() if task == "mask" else torch.tensor(targets, dtype=torch.long)
    return _Raw(x, y, files)


def _split(data: DataConfig, side: str, split: str, task: str, order: ClassOrder) -> DomainFiles:
    """The labelled files of one split through build_domain, with only the task's labels attached."""
    dom: DomainConfig = getattr(data, side)
    if task == "class":
        dom = dataclasses.replace(dom, masks="", test_masks="")
    else:
        dom = dataclasses.replace(dom, labels="", test_labels="")
    return build_domain(f"data.{side}", dom, data, split, classes=order)


def _labels_key(data: DataConfig, task: str, side: str, split: str) -> Tuple[str, str]:
    """The config key that labels a split for a task (``data.b.test_labels``) and its value."""
    name = f"{'test_' if split == 'test' else ''}{'labels' if task == 'class' else 'masks'}"
    return f"data.{side}.{name}", getattr(getattr(data, side), name)


def _b_range(data: DataConfig, real_b: Optional[DomainFiles], test_b: DomainFiles) -> ValueRange:
    """The config's resolved data.b range: of B's training images where it depends on them."""
    if real_b is not None:
        return real_b.value_range
    if data.b.scale.mode == "percentile" and data.b.root:
        return build_domain("data.b", dataclasses.replace(data.b, labels="", masks=""), data).value_range
    return test_b.value_range


# --- translators ----------------------------------------------------------------------------------


def _artifact_arms(artifacts: Artifacts) -> Dict[str, Path]:
    """Arm name -> artifact folder: the given label, else the folder as given."""
    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    items = list(artifacts.items()) if isinstance(artifacts, Mapping) else [(str(Path(p)), p) for p in artifacts]
    arms: Dict[str, Path] = {}
    for name, path in items:
        if name in ("as_is", "real_b") or name in arms:
            raise ConfigError(f"two arms are named '{name}'; give the translators distinct names (NAME=DIR).")
        arms[name] = Path(path)
    return arms


def _check_artifact(artifact: TranslatorArtifact, data: DataConfig) -> None:
    """Refuse a translator whose sides are not data.a's and data.b's channels and bit depths."""
    for side, key, dom in (("input", "data.a", data.a), ("output", "data.b", data.b)):
        meta = artifact.meta[side]
        if (meta["channels"], meta["bit_depth"]) != (dom.channels, dom.bit_depth):
            raise ConfigError(
                f"the translator '{artifact.path}' takes {artifact.meta['input']['channels']}-channel "
                f"{artifact.meta['input']['bit_depth']}-bit images to {artifact.meta['output']['channels']}-channel "
                f"{artifact.meta['output']['bit_depth']}-bit ones, but {key} is {dom.channels}-channel "
                f"{dom.bit_depth}-bit ({key}.channels, {key}.bit_depth); give an A -> B translator of these domains."
            )


@torch.no_grad()
def _translate(raw_a: torch.Tensor, artifact: TranslatorArtifact, b_range: ValueRange, device: str,
               batch_size: int = 32) -> torch.Tensor:
    """A images (raw) through the translator, on B's scale ``b_range`` in [-1, 1]."""
    in_range, out_range = (ValueRange(*artifact.meta[s]["value_range"]) for s in ("input", "output"))
    out = []
    for batch in raw_a.split(batch_size):
        unit = to_unit(batch, in_range.lo, in_range.hi).to(device)
        fake = translate_unit(artifact, unit, torch.ones(len(batch)), keep_input_channels=False).float().cpu()
        out.append(to_model(to_unit(fake * (out_range.hi - out_range.lo) + out_range.lo, b_range.lo, b_range.hi)))
    return torch.cat(out)


# --- the measurement ------------------------------------------------------------------------------


def _summary(values: List[float]) -> Dict[str, Any]:
    """Per-seed values, mean, standard deviation and standard error of the mean (None for one seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"values": values, "mean": statistics.fmean(values), "std": sd,
            "sem": sd / math.sqrt(len(values)) if sd is not None else None, "n": len(values)}


def _default_task(data: DataConfig) -> str:
    if data.a.labels:
        return "class"
    if data.a.masks:
        return "mask"
    raise ConfigError("downstream trains on labelled A images: set data.a.labels (image classes) or data.a.masks "
                      "(label masks, with data.mask_classes).")


def _choose_arms(arms: Optional[Sequence[str]], translators: Dict[str, Path], b_key: str,
                 b_labelled: bool) -> List[str]:
    """The arm kinds to run: those asked for, each checked against what it needs; else every one possible."""
    if arms is None:
        return ["as_is", *(["translated"] if translators else []), *(["real_b"] if b_labelled else [])]
    arms = list(dict.fromkeys(arms.split(",") if isinstance(arms, str) else arms))
    for kind in arms:
        if kind not in ARM_KINDS:
            raise unknown("arm", kind, ARM_KINDS)
    if "translated" in arms and not translators:
        raise ConfigError("the arm 'translated' needs an exported A -> B translator (--artifact DIR).")
    if translators and "translated" not in arms:
        raise ConfigError(f"translators are given but the arms ({', '.join(arms)}) leave out 'translated'.")
    if "real_b" in arms and not b_labelled:
        raise ConfigError(f"the arm 'real_b' trains on labelled B images: set data.b.root and {b_key}.")
    return [k for k in ARM_KINDS if k in arms]


def measure(
    cfg: Config,
    artifacts: Artifacts = (),
    task: Optional[str] = None,
    arms: Optional[Sequence[str]] = None,
    model: Union[str, ModelFactory, None] = None,
    weights: str = "",
    width: Optional[int] = None,
    epochs: Optional[int] = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    batch_size: int = 32,
    lr: Optional[float] = None,
    size: Optional[int] = None,
    device: str = "cpu",
    progress: bool = False,
) -> Dict[str, Any]:
    """Train the same downstream model on each arm for each seed and score it on labelled B test images.

    ``artifacts``: exported A -> B translator folders (a list, arms named by the folder as given, or a
    mapping of arm name to folder). ``task``: ``class`` (data.*.labels) or ``mask`` (data.*.masks;
    default: class where data.a.labels is set). ``arms``: kinds to run (default: every one the config
    and artifacts allow). ``model``: a registered task network, ``torchvision.NAME`` (weights=None), or
    a callable ``(in_channels, num_classes) -> nn.Module`` reading [-1, 1] images; ``weights``: a local
    state dict loaded into it. ``size``: the side images are resized to (default data.crop_size).
    Returns a JSON-ready dict: per arm the per-seed values, mean, std and standard error, and how it was
    measured."""
    data = cfg.data
    task = task or _default_task(data)
    if task not in TASK_KINDS:
        raise unknown("task", task, TASK_KINDS)
    for side, split, what in (("a", "train", "A training"), ("b", "test", "B test")):
        key, value = _labels_key(data, task, side, split)
        if not value:
            raise ConfigError(f"downstream --task {task} needs labelled {what} images: {key} is not set.")
    test_key = _labels_key(data, task, "b", "test")[0]
    b_key, b_labels = _labels_key(data, task, "b", "train")
    translators = _artifact_arms(artifacts)
    kinds = _choose_arms(arms, translators, b_key, bool(data.b.root and b_labels))
    model = model or DEFAULT_TASK_NETWORK[task]
    if isinstance(model, str):
        check_model(model, task)
    width = width or DEFAULT_WIDTH[task]
    epochs = epochs if epochs is not None else DEFAULT_EPOCHS[task]
    lr = lr or DEFAULT_LR[task]
    size = size or data.crop_size
    seeds = list(seeds)
    if epochs < 1 or batch_size < 1 or size < 1 or not seeds:
        raise ConfigError("epochs, batch size and size must be positive, and at least one seed given.")
    loaded = {name: load_artifact(path) for name, path in translators.items()}
    for artifact in loaded.values():
        _check_artifact(artifact, data)

    # Read every split once: arms (a) and (c) and the test set serve every translator.
    order = class_order(data) if task == "class" else ClassOrder()
    a = _read(_split(data, "a", "train", task, order), task, size)
    test = _read(_split(data, "b", "test", task, order), task, size)
    real_b = _read(_split(data, "b", "train", task, order), task, size) if "real_b" in kinds else None
    classes = list(order) if task == "class" else list(data.mask_classes)
    if loaded:
        first = next(iter(loaded.values()))
        b_range, b_from = ValueRange(*first.meta["output"]["value_range"]), f"{first.path}/meta.json output.value_range"
    else:
        b_range = _b_range(data, real_b.files if real_b else None, test.files)
        b_from = f"data.b.scale (mode {data.b.scale.mode})"

    sets: Dict[str, Tuple[str, Labelled]] = {}
    if "as_is" in kinds:
        unit = convert_channels(to_unit(a.images, a.files.value_range.lo, a.files.value_range.hi), data.b.channels)
        sets["as_is"] = ("as_is", Labelled(to_model(unit), a.targets))
    for name, artifact in loaded.items():
        sets[name] = ("translated", Labelled(_translate(a.images, artifact, b_range, device), a.targets))
    if real_b is not None:
        sets["real_b"] = ("real_b", Labelled(to_model(to_unit(real_b.images, b_range.lo, b_range.hi)), real_b.targets))
    test_set = Labelled(to_model(to_unit(test.images, b_range.lo, b_range.hi)), test.targets)

    values: Dict[str, List[float]] = {name: [] for name in sets}
    bar = tqdm(total=len(sets) * len(seeds), desc="downstream", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for name, (_, train_set) in sets.items():
            for seed in seeds:
                bar.set_postfix_str(f"{name} seed {seed}")
                values[name].append(train_and_score(train_set, test_set, task, len(classes), seed, epochs, model,
                                                    width, weights, lr, batch_size, device))
                bar.update()
    finally:
        bar.close()

    results: Dict[str, Any] = {}
    for name, (kind, train_set) in sets.items():
        results[name] = {"kind": kind, "train_images": len(train_set), **_summary(values[name])}
        if kind == "translated":
            results[name]["artifact"] = str(translators[name])
    gap: Dict[str, Optional[float]] = {}
    if "as_is" in results and "real_b" in results:
        low, high = results["as_is"]["mean"], results["real_b"]["mean"]
        for name in loaded:
            gap[name] = (results[name]["mean"] - low) / (high - low) if high != low else None
    return {
        "task": task,
        "metric": METRIC[task],
        "classes": classes,
        "test": {"root": data.b.test_root, "images": len(test_set), "labels": test_key},
        "b_value_range": {"range": [b_range.lo, b_range.hi], "from": b_from},
        "model": _model_record(model, task, data.b.channels, len(classes), width, weights),
        "training": {"epochs": epochs, "batch_size": batch_size, "size": size,
                     "optimizer": {"name": "Adam", "lr": lr, "betas": list(BETAS)},
                     "augmentation": "horizontal flip (p=0.5)", "device": device},
        "seeds": seeds,
        "arms": results,
        "gap_share": gap,
    }


def _model_record(model: Union[str, ModelFactory], task: str, in_channels: int, num_classes: int, width: int,
                  weights: str) -> Dict[str, Any]:
    """What the model was: its name and arguments (a task network's spec), weights file, size."""
    probe = build_model(model, task, in_channels, num_classes, width, "")
    if isinstance(probe, TaskNetwork):
        name, args = probe.spec["name"], dict(probe.spec["args"])
        if name.startswith(TORCHVISION_PREFIX):
            args.pop("width")
    else:
        name = getattr(model, "__name__", type(probe).__name__)
        args = {"kind": task, "in_channels": in_channels, "num_classes": num_classes}
    return {"name": name, "args": args, "weights": weights or None,
            "parameters": sum(p.numel() for p in probe.parameters())}


def format_table(report: Dict[str, Any]) -> str:
    """The arms as rows: mean ± standard error over the seeds, and each translator's share of the gap
    between as_is and real_b."""
    metric = {"accuracy": "accuracy", "miou": "mean IoU"}[report["metric"]]
    m, t = report["model"], report["training"]
    width = m["args"].get("width")
    head = (f"{metric} on {report['test']['images']} labelled B test images ({report['test']['root']}); "
            f"{m['name']}{f' width {width}' if width else ''}, {t['epochs']} epochs at {t['size']} px, "
            f"seeds {' '.join(map(str, report['seeds']))}")
    rows = [("arm", "kind", "mean ± s.e.", "seeds", "gap share")]
    for name, arm in report["arms"].items():
        sem = f" ± {arm['sem']:.3f}" if arm["sem"] is not None else ""
        share = report["gap_share"].get(name)
        rows.append((name, arm["kind"], f"{arm['mean']:.3f}{sem}", str(arm["n"]),
                     f"{share:.2f}" if share is not None else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    note = ("gap share: (translated - as_is) / (real_b - as_is), the part of the way from A as it is to real "
            "labelled B that the translator covers") if report["gap_share"] else ""
    return "\n".join([head, *lines, *([note] if note else [])])
