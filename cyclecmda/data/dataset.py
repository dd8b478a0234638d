"""Unpaired two-domain data: per-domain pipelines, the dataset, the resumable sampler and the loader.

A sample is a pure function of (seed, epoch, index): the B partner and every random transform
parameter are drawn from a generator seeded by those three numbers, so results do not depend on
the number of DataLoader workers and a resumed run sees exactly the samples it would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cyclecmda.config import DataConfig, DomainConfig
from cyclecmda.data.boxes import ImageBoxes
from cyclecmda.data.domain import ClassOrder, DomainFiles, build_domain, class_order
from cyclecmda.data.images import to_model
from cyclecmda.errors import DataError
from cyclecmda.stopping import shield_worker


def build_pipeline(dom: DomainConfig, cfg: DataConfig, train: bool, boxes: bool = False) -> A.Compose:
    """Per-domain albumentations pipeline: the configured transforms, or resize -> crop -> flip.
    With ``boxes`` the images' boxes move with them (boxes cropped away are dropped)."""
    bbox = box_params() if boxes else None
    if not train:
        return A.Compose([A.Resize(cfg.crop_size, cfg.crop_size)], bbox_params=bbox)
    if dom.transforms is not None:
        return A.Compose([getattr(A, t.name)(**t.params) for t in dom.transforms], bbox_params=bbox)
    steps: List[Any] = [A.Resize(cfg.load_size, cfg.load_size)]
    if cfg.crop_size != cfg.load_size:
        steps.append(A.RandomCrop(cfg.crop_size, cfg.crop_size))
    if cfg.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps, bbox_params=bbox)


def box_params() -> A.BboxParams:
    """Boxes in pixels (x_min, y_min, x_max, y_max) with their classes (``box_labels``), clipped to
    the image after each transform and dropped once nothing of them is left."""
    return A.BboxParams(format="pascal_voc", label_fields=["box_labels"], clip=True)


def _reseed(pipeline: A.Compose, seed: int) -> None:
    """Give the pipeline and each of its transforms a distinct seed derived from `seed`."""
    pipeline.set_random_seed(seed)
    for j, t in enumerate(pipeline.transforms):
        t.set_random_seed(seed + 7919 * (j + 1))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC float [0, 1] -> CHW float32 tensor in [-1, 1]."""
    return to_model(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))


class UnpairedDataset(Dataset):
    """Draws A by index and B independently (at random, or in order with serial_b).

    Epoch length is the size of the larger domain. Each item is
    ``{"a": (C_a, H, W), "b": (C_b, H, W), "a_path": str, "b_path": str}`` with values in [-1, 1],
    and for a domain with labels ``"a_label"`` (class index), with masks ``"a_mask"`` ((H, W) int64
    class indices, 255 where ignored), with boxes ``"a_boxes"`` ((N, 4) float32 x_min, y_min,
    x_max, y_max in pixels) and ``"a_box_labels"`` ((N,) int64), moved by the same transforms as
    the image. :func:`collate` keeps a batch's boxes as lists (N differs between images).
    """

    def __init__(
        self,
        a: DomainFiles,
        b: DomainFiles,
        pipeline_a: A.Compose,
        pipeline_b: A.Compose,
        serial_b: bool = False,
        seed: int = 0,
        size: Optional[int] = None,
    ) -> None:
        self.a, self.b = a, b
        self.pipeline_a, self.pipeline_b = pipeline_a, pipeline_b
        self.serial_b = serial_b
        self.seed = seed
        self.epoch = 0
        self.size = size  # expected output H = W, checked per item

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _apply(self, pipeline: A.Compose, img: np.ndarray, seed: int, path: Path, key: str,
               mask: Optional[np.ndarray] = None, boxes: Optional[ImageBoxes] = None
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[ImageBoxes]]:
        """The pipeline on an image (and its mask, moved with it: nearest for masks; and its boxes)."""
        _reseed(pipeline, seed)
        targets: Dict[str, Any] = {} if mask is None else {"mask": mask}
        if boxes is not None:
            targets.update(bboxes=boxes.boxes, box_labels=boxes.labels)
        result = pipeline(image=img, **targets)
        out = result["image"]
        moved_boxes = None
        if boxes is not None:
            moved_boxes = ImageBoxes(np.asarray(result["bboxes"], np.float32).reshape(-1, 4),
                                     np.asarray(result["box_labels"], np.int64).reshape(-1))
        out_mask = None
        if mask is not None:
            m = np.asarray(result["mask"])
            if m.shape[:2] != out.shape[:2]:
                raise DataError(f"{key}.transforms moved the mask of '{path}' to {m.shape[1]}x{m.shape[0]} but the "
                                f"image to {out.shape[1]}x{out.shape[0]}; use transforms that apply to masks too.")
            out_mask = torch.from_numpy(np.ascontiguousarray(m.reshape(m.shape[:2]))).long()
        if out.ndim == 2:
            out = out[:, :, None]
        if self.size is not None and out.shape[:2] != (self.size, self.size):
            raise DataError(
                f"{key}.transforms produced a {out.shape[0]}x{out.shape[1]} image from '{path}', "
                f"but data.crop_size is {self.size}; end the pipeline with a crop or resize to that size."
            )
        return to_tensor(out.astype(np.float32, copy=False)), out_mask, moved_boxes

    def __getitem__(self, index: Union[int, Tuple[int, int]]) -> Dict[str, Any]:
        """Item `index` of the current epoch, or of epoch e when given ``(e, index)``."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        rng = np.random.default_rng([self.seed, epoch, index])
        b_index = index % len(self.b) if self.serial_b else int(rng.integers(len(self.b)))
        seed_a, seed_b = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        item: Dict[str, Any] = {}
        for side, files, pipeline, i, seed in (("a", self.a, self.pipeline_a, index % len(self.a), seed_a),
                                               ("b", self.b, self.pipeline_b, b_index, seed_b)):
            img, mask, path = files.load_labelled(i)
            boxes = files.boxes[path] if files.boxes is not None else None
            item[side], moved, moved_boxes = self._apply(pipeline, img, seed, path, files.key, mask, boxes)
            item[f"{side}_path"] = str(path)
            if files.has_labels:
                item[f"{side}_label"] = files.labels.label(path)
            if moved is not None:
                item[f"{side}_mask"] = moved
            if moved_boxes is not None:
                item[f"{side}_boxes"] = torch.from_numpy(moved_boxes.boxes)
                item[f"{side}_box_labels"] = torch.from_numpy(moved_boxes.labels)
        return item


def build_dataset(cfg: DataConfig, seed: int = 0, split: str = "train",
                  classes: Optional[ClassOrder] = None) -> UnpairedDataset:
    """The unpaired dataset of a config's data section, checked before any training starts.

    Training labels define the class order (:func:`class_order`) as they are read; a test split reads
    its labels through the order of the training ones (``classes``, where the training split is
    built already; else read again)."""
    train = split == "train"
    order = ClassOrder(cfg.classes) if train else (classes if classes else class_order(cfg))
    a = build_domain("data.a", cfg.a, cfg, split, classes=order)
    b = build_domain("data.b", cfg.b, cfg, split, classes=a.classes or order)
    return UnpairedDataset(
        a,
        b,
        build_pipeline(cfg.a, cfg, train, boxes=a.has_boxes),
        build_pipeline(cfg.b, cfg, train, boxes=b.has_boxes),
        serial_b=cfg.serial_batches or not train,
        seed=seed,
        size=cfg.crop_size,
    )


class ResumableSampler(Sampler[Tuple[int, int]]):
    """Epoch-seeded order over a dataset, sharded across ranks, that can start mid-epoch.

    ``set_epoch(epoch, start)`` makes the next iteration yield this rank's ``(epoch, index)``
    pairs of that epoch from position ``start`` on, so a resumed run continues exactly where it
    stopped. Carrying the epoch in each index keeps persistent DataLoader workers in step.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def per_rank(self) -> int:
        return -(-self.length // self.world_size)

    def indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank() * self.world_size
        order += order[: total - len(order)]  # pad so every rank gets the same count
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.indices()[self.start :]])

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)


BOX_KEYS = ("a_boxes", "a_box_labels", "b_boxes", "b_box_labels")


def collate(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The default collation, but boxes stay one tensor per image (a list): images hold different numbers of them."""
    boxes = {k: [item.pop(k) for item in items] for k in BOX_KEYS if k in items[0]}
    return {**default_collate(items), **boxes}


def build_loader(
    dataset: UnpairedDataset, cfg: DataConfig, sampler: Sampler[Any], drop_last: bool = True, pin_memory: bool = False
) -> DataLoader:
    """DataLoader with the config's batch size and workers (kept alive across epochs).

    Workers outlive a job's SIGINT / SIGTERM, so the training process can finish its step and
    save (:mod:`cyclecmda.stopping`); it shuts them down itself.
    """
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=shield_worker if cfg.num_workers > 0 else None,
        collate_fn=collate,
        generator=torch.Generator(),  # leaves the global torch RNG (image pools, dropout) alone
    )
