"""Labels and masks as the task networks' targets: a batch's, and those of held-out test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import torch

from cyclecmda.config import DataConfig, DomainConfig
from cyclecmda.data.boxes import box_masks, read_boxes
from cyclecmda.data.domain import class_order
from cyclecmda.data.images import probe_image
from cyclecmda.data.labels import IGNORE, NO_LABEL, ClassOrder, DomainLabels, read_mask
from cyclecmda.errors import DataError


def ignore_index(kind: str) -> int:
    """Target value that carries no label: -1 for image classes, 255 for mask pixels."""
    return NO_LABEL if kind == "class" else IGNORE


def batch_targets(batch: Dict[str, Any], side: str, kind: str, like: torch.Tensor) -> torch.Tensor:
    """A batch's labels of one side (``a_label``, ``a_mask``, or ``a_boxes`` as coarse masks), or
    the ignore value where it has none."""
    if kind == "boxes":
        if f"{side}_boxes" in batch:
            return box_masks(batch[f"{side}_boxes"], batch[f"{side}_box_labels"], (like.shape[2], like.shape[3]))
        kind = "mask"
    key = f"{side}_label" if kind == "class" else f"{side}_mask"
    if key in batch:
        return torch.as_tensor(batch[key]).long()
    shape = like.shape[:1] if kind == "class" else like.shape[:1] + like.shape[2:]
    return torch.full(shape, ignore_index(kind), dtype=torch.long)


def test_targets(files: List[Path], dom: DomainConfig, data: DataConfig, key: str, kind: str,
                 classes: List[str]) -> Optional[torch.Tensor]:
    """Labels (N,) or masks (N, S, S) of test images, prepared like them (boxes as coarse masks);
    None without any.

    Test labels are read through the training labels' class order (``classes``, and where that
    order came from: data.classes or the first labels file)."""
    if kind == "boxes":
        return _test_box_masks(files, dom, data, key, classes)
    source = dom.test_labels if kind == "class" else dom.test_masks
    if not source:
        return None
    order: List[str] = []
    if kind == "class":
        order = classes if isinstance(classes, ClassOrder) else class_order(data)
        if list(order) != list(classes):
            order = ClassOrder(classes, "the task networks' classes")
    found, _ = DomainLabels.build(files, dom.test_root, source if kind == "class" else "",
                                  source if kind == "mask" else "", order, key, test=True)
    if found.problems:
        problems = list(found.problems.values())
        raise DataError(f"{len(problems)} held-out image(s) of {key} have no usable label, e.g. {problems[0]}")
    if kind == "class":
        return torch.tensor([found.label(p) for p in files], dtype=torch.long)
    assert found.masks is not None
    masks = []
    for path in files:
        info = probe_image(path)
        mask = read_mask(found.masks[path], len(data.mask_classes), (info.height, info.width))
        masks.append(torch.from_numpy(cv2.resize(mask, (data.crop_size, data.crop_size),
                                                 interpolation=cv2.INTER_NEAREST)).long())
    return torch.stack(masks)


def test_boxes(files: List[Path], dom: DomainConfig, data: DataConfig, key: str,
               classes: List[str]) -> Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]]:
    """The boxes (in pixels at the crop size) and classes of test images, one tensor each per image
    (``classes``: background, then the boxes' classes); None without test boxes."""
    if not dom.test_boxes:
        return None
    order = ClassOrder(classes[1:], "the task networks' classes")
    found, problems, _ = read_boxes(dom.test_boxes, files, dom.test_root, f"{key}.test_boxes", order, dom.boxes_format)
    if problems:
        raise DataError(f"{len(problems)} held-out image(s) of {key} have unusable boxes, e.g. {next(iter(problems.values()))}")
    boxes, labels = [], []
    for path in files:
        info = probe_image(path)
        scale = torch.tensor([data.crop_size / info.width, data.crop_size / info.height] * 2)
        boxes.append(torch.from_numpy(found[path].boxes) * scale)
        labels.append(torch.from_numpy(found[path].labels))
    return boxes, labels


def _test_box_masks(files: List[Path], dom: DomainConfig, data: DataConfig, key: str,
                    classes: List[str]) -> Optional[torch.Tensor]:
    """The coarse masks of test images' boxes at the crop size."""
    found = test_boxes(files, dom, data, key, classes)
    return None if found is None else box_masks(*found, (data.crop_size, data.crop_size))
