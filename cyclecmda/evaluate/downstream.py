"""What a translator is worth downstream, on any labelled data.

The same downstream model (a classifier, a segmenter, or a detector) is trained several ways and
tested on labelled real B test images:

- ``as_is``: the labelled A training images as they are, converted to B's channel count;
- ``translated``: the same A images through an exported A -> B translator (one arm per artifact);
- ``real_b``: labelled B training images, where the config gives them (the ceiling);
- ``mixed``: a translator's images and the labelled B training images together, as augmentation
  uses them (one arm per artifact, named ``NAME+real_b``).

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
from cyclecmda.data.boxes import ImageBoxes
from cyclecmda.data.domain import DomainFiles, ValueRange, build_domain, class_order
from cyclecmda.data.images import convert_channels, to_model
from cyclecmda.data.labels import ClassOrder, read_mask
from cyclecmda.errors import ConfigError, DataError, unknown
from cyclecmda.evaluate.detection import Boxed, build_detector, train_and_score_boxes
from cyclecmda.evaluate.task_model import BETAS, Labelled, ModelFactory, build_model, check_model, train_and_score
from cyclecmda.export.artifact import TranslatorArtifact, load_artifact, to_unit, translate_unit
from cyclecmda.method.losses import BOX_METRICS
from cyclecmda.models.detector import DEFAULT_DETECTOR, Detector, check_detector
from cyclecmda.models.task import (
    DEFAULT_TASK_NETWORK,
    TASK_KINDS,
    TORCHVISION_PREFIX,
    TaskNetwork,
)

PathLike = Union[str, Path]
Artifacts = Union[PathLike, Sequence[PathLike], Mapping[str, PathLike]]

ARM_KINDS = ("as_is", "translated", "real_b", "mixed")
TASKS = (*TASK_KINDS, "boxes")
# each task's metrics, the first the one the table leads with and the gap share uses
METRICS: Dict[str, Dict[str, str]] = {"class": {"accuracy": "accuracy"}, "mask": {"miou": "mean IoU"}, "boxes": BOX_METRICS}
DEFAULT_MODEL = {**DEFAULT_TASK_NETWORK, "boxes": DEFAULT_DETECTOR}
DEFAULT_WIDTH = {"class": 16, "mask": 8, "boxes": 16}
DEFAULT_LR = {"class": 1e-3, "mask": 2e-3, "boxes": 2e-3}
# Where the test score of every arm had levelled off on the demo data (docs/experiments.md, "Default epochs of
# cyclecmda downstream").
DEFAULT_EPOCHS = {"class": 80, "mask": 100, "boxes": 60}
DEFAULT_SEEDS = (0, 1, 2)

__all__ = ["ARM_KINDS", "DEFAULT_EPOCHS", "TASKS", "Labelled", "format_table", "measure", "train_and_score"]


@dataclass
class _Raw:
    """A split's images resized to S x S, in raw pixel values (float32, the domain's channels), and
    their targets: classes or masks (a tensor), or boxes (one ImageBoxes per image, in S x S pixels)."""

    images: torch.Tensor  # (N, C, S, S)
    targets: Union[torch.Tensor, List[ImageBoxes]]
    files: DomainFiles

    def labelled(self, images: torch.Tensor) -> Union[Labelled, Boxed]:
        """``images`` (this split's, as the model reads them) with this split's targets."""
        if isinstance(self.targets, torch.Tensor):
            return Labelled(images, self.targets)
        return Boxed(images, [torch.from_numpy(t.boxes) for t in self.targets],
                     [torch.from_numpy(t.labels) for t in self.targets])


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
    its class, mask or boxes; an unusable file stops the run, or is skipped under data.on_bad_file=skip."""
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
        if task == "boxes":
            assert files.boxes is not None
            found = files.boxes[path]
            scale = np.array([size / img.shape[1], size / img.shape[0]] * 2, np.float32)
            targets.append(ImageBoxes(found.boxes * scale, found.labels))
        else:
            targets.append(_resize(mask, size, nearest=True) if task == "mask" else files.labels.label(path))
    if not images:
        raise DataError(f"{files.key}: every image was unusable ({len(files.skipped)} skipped).")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    if task == "boxes":
        return _Raw(x, targets, files)
    y = torch.from_numpy(np.stack(targets)).long() if task == "mask" else torch.tensor(targets, dtype=torch.long)
    return _Raw(x, y, files)


def _split(data: DataConfig, side: str, split: str, task: str, order: ClassOrder) -> DomainFiles:
    """The labelled files of one split through build_domain, with only the task's labels attached."""
    dom: DomainConfig = getattr(data, side)
    unused: Dict[str, Any] = {name: "" for key in ("labels", "masks", "boxes") if key != _TARGETS[task]
                              for name in (key, f"test_{key}")}
    return build_domain(f"data.{side}", dataclasses.replace(dom, **unused), data, split, classes=order)


_TARGETS = {"class": "labels", "mask": "masks", "boxes": "boxes"}  # the data.* key of each task's targets


def _labels_key(data: DataConfig, task: str, side: str, split: str) -> Tuple[str, str]:
    """The config key that labels a split for a task (``data.b.test_labels``) and its value."""
    name = f"{'test_' if split == 'test' else ''}{_TARGETS[task]}"
    return f"data.{side}.{name}", getattr(getattr(data, side), name)


def _b_range(data: DataConfig, real_b: Optional[DomainFiles], test_b: DomainFiles) -> ValueRange:
    """The config's resolved data.b range: of B's training images where it depends on them."""
    if real_b is not None:
        return real_b.value_range
    if data.b.scale.mode == "percentile" and data.b.root:
        return build_domain("data.b", dataclasses.replace(data.b, labels="", masks="", boxes=""), data).value_range
    return test_b.value_range


# --- translators ----------------------------------------------------------------------------------


def _artifact_arms(artifacts: Artifacts) -> Dict[str, Path]:
    """Arm name -> artifact folder: the given label, else the folder as given."""
    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    items = list(artifacts.items()) if isinstance(artifacts, Mapping) else [(str(Path(p)), p) for p in artifacts]
    arms: Dict[str, Path] = {}
    for name, path in items:
        if name in ("as_is", "real_b") or name.endswith("+real_b") or name in arms:
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


def _sampling_error(accuracy: float, n_test: int) -> float:
    """The binomial standard error of an accuracy measured on ``n_test`` images: how far another
    test set of the same size would move it."""
    return math.sqrt(accuracy * (1 - accuracy) / n_test)


def _default_task(data: DataConfig) -> str:
    if data.a.labels:
        return "class"
    if data.a.masks:
        return "mask"
    if data.a.boxes:
        return "boxes"
    raise ConfigError("downstream trains on labelled A images: set data.a.labels (image classes), data.a.masks "
                      "(label masks, with data.mask_classes) or data.a.boxes (object boxes).")


def _choose_arms(arms: Optional[Sequence[str]], translators: Dict[str, Path], b_key: str,
                 b_labelled: bool) -> List[str]:
    """The arm kinds to run: those asked for, each checked against what it needs; else every one possible."""
    if arms is None:
        return ["as_is", *(["translated"] if translators else []), *(["real_b"] if b_labelled else []),
                *(["mixed"] if translators and b_labelled else [])]
    arms = list(dict.fromkeys(arms.split(",") if isinstance(arms, str) else arms))
    for kind in arms:
        if kind not in ARM_KINDS:
            raise unknown("arm", kind, ARM_KINDS)
    if "translated" in arms and not translators:
        raise ConfigError("the arm 'translated' needs an exported A -> B translator (--artifact DIR).")
    if translators and not {"translated", "mixed"} & set(arms):
        raise ConfigError(f"translators are given but the arms ({', '.join(arms)}) leave out 'translated' and 'mixed'.")
    for kind in ("real_b", "mixed"):
        if kind in arms and not b_labelled:
            raise ConfigError(f"the arm '{kind}' trains on labelled B images: set data.b.root and {b_key}.")
    if "mixed" in arms and not translators:
        raise ConfigError("the arm 'mixed' needs an exported A -> B translator (--artifact DIR).")
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
    mapping of arm name to folder). ``task``: ``class`` (data.*.labels), ``mask`` (data.*.masks) or
    ``boxes`` (data.*.boxes; default: the first of these that data.a sets). ``arms``: kinds to run
    (default: every one the config and artifacts allow). ``model``: a registered task network or
    detector, ``torchvision.NAME`` (weights=None), or a callable ``(in_channels, num_classes) ->
    nn.Module`` reading [-1, 1] images (a detector: torchvision's detection interface, classes from
    0); ``weights``: a local state dict loaded into it. ``size``: the side images are resized to
    (default data.crop_size). Returns a JSON-ready dict: per arm the per-seed values, mean, std and
    standard error (boxes: of mAP@0.5, and every metric under ``metrics``), and how it was measured."""
    data = cfg.data
    task = task or _default_task(data)
    if task not in TASKS:
        raise unknown("task", task, TASKS)
    for side, split, what in (("a", "train", "A training"), ("b", "test", "B test")):
        key, value = _labels_key(data, task, side, split)
        if not value:
            raise ConfigError(f"downstream --task {task} needs labelled {what} images: {key} is not set.")
    test_key = _labels_key(data, task, "b", "test")[0]
    b_key, b_labels = _labels_key(data, task, "b", "train")
    translators = _artifact_arms(artifacts)
    kinds = _choose_arms(arms, translators, b_key, bool(data.b.root and b_labels))
    model = model or DEFAULT_MODEL[task]
    if isinstance(model, str):
        check_detector(model) if task == "boxes" else check_model(model, task)
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
    order = class_order(data) if task != "mask" else ClassOrder()
    a = _read(_split(data, "a", "train", task, order), task, size)
    test = _read(_split(data, "b", "test", task, order), task, size)
    real_b = _read(_split(data, "b", "train", task, order), task, size) if {"real_b", "mixed"} & set(kinds) else None
    classes = list(order) if task != "mask" else list(data.mask_classes)
    if loaded:
        first = next(iter(loaded.values()))
        b_range, b_from = ValueRange(*first.meta["output"]["value_range"]), f"{first.path}/meta.json output.value_range"
    else:
        b_range = _b_range(data, real_b.files if real_b else None, test.files)
        b_from = f"data.b.scale (mode {data.b.scale.mode})"

    TrainSet = Union[Labelled, Boxed]
    sets: Dict[str, Tuple[str, TrainSet, Optional[str]]] = {}  # arm -> kind, images, translator
    if "as_is" in kinds:
        unit = convert_channels(to_unit(a.images, a.files.value_range.lo, a.files.value_range.hi), data.b.channels)
        sets["as_is"] = ("as_is", a.labelled(to_model(unit)), None)
    translated = {name: a.labelled(_translate(a.images, artifact, b_range, device)) for name, artifact in loaded.items()}
    if "translated" in kinds:
        sets.update({name: ("translated", images, name) for name, images in translated.items()})
    if real_b is not None:
        labelled_b = real_b.labelled(to_model(to_unit(real_b.images, b_range.lo, b_range.hi)))
        if "real_b" in kinds:
            sets["real_b"] = ("real_b", labelled_b, None)
        if "mixed" in kinds:
            sets.update({f"{name}+real_b": ("mixed", images + labelled_b, name)  # type: ignore[operator]
                         for name, images in translated.items()})
    test_set = test.labelled(to_model(to_unit(test.images, b_range.lo, b_range.hi)))
    metrics = list(METRICS[task])

    def run(train_set: TrainSet, seed: int) -> Dict[str, float]:
        if isinstance(train_set, Boxed):
            assert isinstance(test_set, Boxed)
            return train_and_score_boxes(train_set, test_set, len(classes), seed, epochs, model, width, weights, lr,
                                         batch_size, device)
        assert isinstance(test_set, Labelled)
        return {metrics[0]: train_and_score(train_set, test_set, task, len(classes), seed, epochs, model, width,
                                            weights, lr, batch_size, device)}

    values: Dict[str, List[Dict[str, float]]] = {name: [] for name in sets}
    bar = tqdm(total=len(sets) * len(seeds), desc="downstream", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for name, (_, train_set, _) in sets.items():
            for seed in seeds:
                bar.set_postfix_str(f"{name} seed {seed}")
                values[name].append(run(train_set, seed))
                bar.update()
    finally:
        bar.close()

    results: Dict[str, Any] = {}
    for name, (kind, train_set, source) in sets.items():
        results[name] = {"kind": kind, "train_images": len(train_set), **_summary([v[metrics[0]] for v in values[name]])}
        if task == "class":  # what the test set alone adds, which the seeds' standard error leaves out
            results[name]["test_se"] = _sampling_error(results[name]["mean"], len(test_set))
        if len(metrics) > 1:
            results[name]["metrics"] = {m: _summary([v[m] for v in values[name]]) for m in metrics}
        if source is not None:
            results[name]["artifact"] = str(translators[source])
    gap: Dict[str, Optional[float]] = {}
    if "as_is" in results and "real_b" in results:
        low, high = results["as_is"]["mean"], results["real_b"]["mean"]
        for name, (kind, _, _) in sets.items():
            if kind == "translated":
                gap[name] = (results[name]["mean"] - low) / (high - low) if high != low else None
    return {
        "task": task,
        "metric": metrics[0],
        "metrics": metrics,
        "classes": classes,
        "test": {"root": data.b.test_root, "images": len(test_set), "labels": test_key},
        "b_value_range": {"range": [b_range.lo, b_range.hi], "from": b_from},
        "model": _model_record(model, task, data.b.channels, len(classes), width, weights, size),
        "training": {"epochs": epochs, "batch_size": batch_size, "size": size,
                     "optimizer": {"name": "Adam", "lr": lr, "betas": list(BETAS)},
                     "augmentation": "horizontal flip (p=0.5)" + (", boxes mirrored" if task == "boxes" else ""),
                     "device": device},
        "seeds": seeds,
        "arms": results,
        "gap_share": gap,
    }


def _model_record(model: Union[str, ModelFactory], task: str, in_channels: int, num_classes: int, width: int,
                  weights: str, size: int) -> Dict[str, Any]:
    """What the model was: its name and arguments (a task network's spec), weights file, size."""
    if task == "boxes":
        probe = build_detector(model, in_channels, num_classes, width, size, "")
    else:
        probe = build_model(model, task, in_channels, num_classes, width, "")
    if isinstance(probe, (TaskNetwork, Detector)):
        name, args = probe.spec["name"], dict(probe.spec["args"])
        if name.startswith(TORCHVISION_PREFIX):
            args.pop("width")
    else:
        name = getattr(model, "__name__", type(probe).__name__)
        args = {"kind": task, "in_channels": in_channels, "num_classes": num_classes}
    return {"name": name, "args": args, "weights": weights or None,
            "parameters": sum(p.numel() for p in probe.parameters())}


def format_table(report: Dict[str, Any]) -> str:
    """The arms as rows: mean ± standard error over the seeds of each metric, and each translator's
    share of the gap between as_is and real_b (in the first metric)."""
    names = METRICS[report["task"]]
    metrics = report.get("metrics", [report["metric"]])
    m, t = report["model"], report["training"]
    width = m["args"].get("width")
    head = (f"{' and '.join(names[k] for k in metrics)} on {report['test']['images']} labelled B test images "
            f"({report['test']['root']}); {m['name']}{f' width {width}' if width else ''}, {t['epochs']} epochs at "
            f"{t['size']} px, seeds {' '.join(map(str, report['seeds']))}")
    several = len(metrics) > 1
    rows = [("arm", "kind", *(f"{names[k]} mean ± s.e." if several else "mean ± s.e." for k in metrics), "seeds",
             "gap share")]
    for name, arm in report["arms"].items():
        cells = []
        for k in metrics:
            got = arm["metrics"][k] if several else arm
            cells.append(f"{got['mean']:.3f}" + (f" ± {got['sem']:.3f}" if got["sem"] is not None else ""))
        share = report["gap_share"].get(name)
        rows.append((name, arm["kind"], *cells, str(arm["n"]), f"{share:.2f}" if share is not None else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    notes = []
    if report["gap_share"]:
        notes.append("gap share: (translated - as_is) / (real_b - as_is), the part of the way from A as it is to "
                     "real labelled B that the translator covers")
    test_se = [arm["test_se"] for arm in report["arms"].values() if "test_se" in arm]
    if test_se:
        notes.append(f"s.e. is over the seeds; the {report['test']['images']} test images add up to "
                     f"± {max(test_se):.3f} of their own (binomial), so arms closer than that need more test images")
    return "\n".join([head, *lines, *notes])
