"""One domain's image files: listing, checks, value ranges, labels and masks (``DomainFiles``).

Built before any training starts, so that bad files, settings or labels stop a run at once, each
named with what would be valid.
"""

from __future__ import annotations

import glob as globlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cyclecmda.config import DataConfig, DomainConfig, ScaleConfig
from cyclecmda.data.boxes import ImageBoxes, read_boxes
from cyclecmda.data.images import (
    LIMIT_SETTING,
    MAX_IMAGE_PIXELS,
    convertible,
    images_under,
    probe_image,
    read_image,
    to_channels,
)
from cyclecmda.data.labels import ClassOrder, DomainLabels, read_class_order, read_mask
from cyclecmda.errors import DataError


def list_images(root: str, extensions: Sequence[str], key: str = "root") -> List[Path]:
    """Image paths of a folder (searched recursively), a glob pattern, or a text file of paths.

    Paths in a list file are relative to the list file's folder unless absolute; blank lines and
    lines starting with '#' are ignored. The result is sorted for determinism.
    """
    if not root:
        raise DataError(f"{key} is not set: give a folder, a glob pattern or a text file listing image paths.")
    exts = {e.lower() for e in extensions}
    path = Path(root).expanduser()
    if any(ch in root for ch in "*?["):
        files = [Path(p) for p in globlib.glob(str(path), recursive=True)]
        files = [p for p in files if p.is_file() and p.suffix.lower() in exts]
        what = f"glob pattern '{root}'"
    elif path.is_dir():
        files = images_under(path, exts)
        what = f"folder '{root}'"
    elif path.is_file():
        base = path.parent
        files = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line).expanduser()
            files.append(p if p.is_absolute() else base / p)
        what = f"list file '{root}'"
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise DataError(
                f"{key}: {len(missing)} path(s) in {what} do not exist, e.g. '{missing[0]}'."
            )
    else:
        raise DataError(f"{key}: '{root}' does not exist (expected a folder, a glob pattern or a text file of paths).")
    if not files:
        raise DataError(f"{key}: {what} holds no images with extensions {', '.join(sorted(exts))}.")
    return sorted(files)


@dataclass(frozen=True)
class ValueRange:
    """Raw pixel values [lo, hi] that map to [0, 1] (then [-1, 1]); outside values are clipped."""

    lo: float
    hi: float

    def to_unit(self, img: np.ndarray) -> np.ndarray:
        out = (img.astype(np.float32) - np.float32(self.lo)) * np.float32(1.0 / (self.hi - self.lo))
        return np.clip(out, 0.0, 1.0, out=out)

    def from_unit(self, unit: np.ndarray, dtype: np.dtype) -> np.ndarray:
        raw = np.asarray(unit, np.float64) * (self.hi - self.lo) + self.lo
        info = np.iinfo(dtype)
        return np.clip(np.rint(raw), info.min, info.max).astype(dtype)


class DomainFiles:
    """The checked image files of one domain and how to decode them to float [0, 1] HWC.

    Images larger than `max_pixels` (width x height; None or 0: no limit) are unusable files;
    their error names `limit_setting`, the setting that raises the limit.
    """

    def __init__(
        self,
        key: str,
        cfg: DomainConfig,
        files: Sequence[Path],
        on_bad_file: str = "error",
        root: str = "",
        max_pixels: Optional[int] = MAX_IMAGE_PIXELS,
        limit_setting: str = LIMIT_SETTING,
    ) -> None:
        self.key = key  # e.g. "data.a"
        self.root = root
        self.channels = cfg.channels
        self.bit_depth = cfg.bit_depth
        self.on_bad_file = on_bad_file
        self.max_pixels = max_pixels
        self.limit_setting = limit_setting
        self.files = list(files)
        self.skipped: Dict[str, str] = {}
        self.value_range = ValueRange(0.0, 1.0)  # replaced by resolve_range
        self.labels = DomainLabels()  # replaced by attach_labels
        self.boxes: Optional[Dict[Path, ImageBoxes]] = None  # set by attach_boxes
        self.classes: ClassOrder = ClassOrder()
        self.mask_classes: List[str] = []

    @property
    def has_labels(self) -> bool:
        return self.labels.labels is not None

    @property
    def has_masks(self) -> bool:
        return self.labels.masks is not None

    def attach_labels(self, labels: str, masks: str, classes: Sequence[str], mask_classes: Sequence[str],
                      test: bool = False, scan: str = "header") -> None:
        """Read the labels and masks of these files (``classes``: the class order, if one is set; with
        ``scan=full`` every mask's values are checked too); files with a problem follow on_bad_file."""
        mask_values = len(mask_classes) if scan == "full" else 0
        self.labels, self.classes = DomainLabels.build(self.files, self.root, labels, masks, classes, self.key, test,
                                                       mask_values)
        self.mask_classes = list(mask_classes)
        self._drop(self.labels.problems)

    @property
    def has_boxes(self) -> bool:
        return self.boxes is not None

    def attach_boxes(self, boxes: str, fmt: str, classes: Sequence[str], test: bool = False) -> None:
        """Read the boxes of these files (``classes``: the class order, if one is set, else the one
        the boxes define); files with a problem follow on_bad_file."""
        key = f"{self.key}.test_boxes" if test else f"{self.key}.boxes"
        order = classes if isinstance(classes, ClassOrder) else ClassOrder(classes)
        self.boxes, problems, self.classes = read_boxes(boxes, self.files, self.root, key, order, fmt)
        self._drop(problems)

    def __len__(self) -> int:
        return len(self.files)

    def check_info(self, path: Path, channels: int, bit_depth: int) -> None:
        """Raise DataError if an image with this header cannot serve this domain."""
        if not convertible(channels, self.channels):
            raise DataError(
                f"{path}: has {channels} channels, which cannot be converted to the "
                f"{self.channels} channel(s) of {self.key}.channels (1, 2, 3 or 4 channels can)."
            )
        if bit_depth != self.bit_depth:
            raise DataError(
                f"{path}: is a {bit_depth}-bit image but {self.key}.bit_depth is {self.bit_depth}; "
                f"set {self.key}.bit_depth={bit_depth} if the whole domain is {bit_depth}-bit, "
                f"or remove the file."
            )

    def scan(self, mode: str) -> None:
        """Check every file (header only, or a full decode) before training; apply on_bad_file."""
        if mode == "none":
            return
        bad: Dict[Path, str] = {}
        for path in self.files:
            try:
                if mode == "full":
                    self.decode(path)
                else:
                    info = probe_image(path, self.max_pixels, self.limit_setting)
                    self.check_info(path, info.channels, info.bit_depth)
            except DataError as exc:
                bad[path] = str(exc)
        self._drop(bad)

    def _drop(self, bad: Dict[Path, str]) -> None:
        if not bad:
            return
        if self.on_bad_file == "error":
            lines = "\n  ".join(list(bad.values())[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(
                f"{self.key}: {len(bad)} of {len(self.files)} image(s) cannot be used:\n  {lines}{more}\n"
                "Fix or remove them, or set data.on_bad_file=skip to skip such files."
            )
        self.files = [p for p in self.files if p not in bad]
        self.skipped.update({str(p): r for p, r in bad.items()})
        warnings.warn(f"{self.key}: skipping {len(bad)} unusable image(s), e.g. {next(iter(bad.values()))}", stacklevel=2)
        if not self.files:
            raise DataError(f"{self.key}: every image was unusable ({len(bad)} skipped).")

    def decode(self, path: Path) -> np.ndarray:
        """Raw HWC array with this domain's channels and dtype."""
        img = read_image(path, self.max_pixels, self.limit_setting)
        bits = 16 if img.dtype == np.uint16 else 8
        self.check_info(path, img.shape[2], bits)
        return to_channels(img, self.channels)

    def resolve_range(self, scale: ScaleConfig) -> ValueRange:
        """Fix the raw value range from the config (measuring percentiles if asked)."""
        if scale.mode == "full":
            self.value_range = ValueRange(0.0, float(2**self.bit_depth - 1))
        elif scale.mode == "fixed":
            assert scale.min is not None and scale.max is not None
            self.value_range = ValueRange(float(scale.min), float(scale.max))
        else:
            self.value_range = self._measure_percentiles(scale)
        return self.value_range

    def _measure_percentiles(self, scale: ScaleConfig) -> ValueRange:
        n = min(scale.sample_images, len(self.files))
        picks = np.linspace(0, len(self.files) - 1, n).round().astype(int)
        rng = np.random.default_rng(0)
        samples = []
        for i in picks:
            try:
                flat = self.decode(self.files[i]).reshape(-1)
            except DataError:
                continue  # reported when the file is used
            samples.append(flat if flat.size <= 65536 else rng.choice(flat, 65536, replace=False))
        if not samples:
            raise DataError(f"{self.key}.scale: no readable image to measure percentiles on.")
        values = np.concatenate(samples)
        lo, hi = np.percentile(values, [scale.low_percentile, scale.high_percentile])
        if hi <= lo:
            raise DataError(
                f"{self.key}.scale: the {scale.low_percentile} and {scale.high_percentile} percentiles "
                f"are both {lo:g} (the images are flat); use scale.mode=fixed with explicit min/max."
            )
        return ValueRange(float(lo), float(hi))

    def load(self, index: int) -> Tuple[np.ndarray, Path]:
        """Float32 HWC image in [0, 1] of file `index`; in skip mode a bad file is replaced by the next."""
        img, _, path = self.load_labelled(index)
        return img, path

    def load_labelled(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray], Path]:
        """:meth:`load` with the file's (H, W) uint8 mask (None without masks)."""
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            if str(path) in self.skipped:
                continue
            try:
                img = self.value_range.to_unit(self.decode(path))
                mask = None
                if self.labels.masks is not None:
                    mask = read_mask(self.labels.masks[path], len(self.mask_classes), img.shape[:2])
                return img, mask, path
            except DataError as exc:
                if self.on_bad_file == "error":
                    raise
                self.skipped[str(path)] = str(exc)
                warnings.warn(f"skipping unusable image: {exc}", stacklevel=2)
        raise DataError(f"{self.key}: every image was unusable ({len(self.skipped)} skipped).")


def class_order(cfg: DataConfig) -> ClassOrder:
    """The class index order of a data config: data.classes, else the one the first labels file
    defines (data.a.labels, then data.b.labels, then the test labels in that order), else the
    first boxes file (data.a.boxes, data.b.boxes, then the test boxes)."""
    if cfg.classes:
        return ClassOrder(cfg.classes)
    for key, root, labels in (("data.a.labels", cfg.a.root, cfg.a.labels), ("data.b.labels", cfg.b.root, cfg.b.labels),
                              ("data.a.test_labels", cfg.a.test_root, cfg.a.test_labels),
                              ("data.b.test_labels", cfg.b.test_root, cfg.b.test_labels)):
        if labels:
            return read_class_order(labels, root, key)
    for key, dom, root, boxes in (("data.a.boxes", cfg.a, cfg.a.root, cfg.a.boxes),
                                  ("data.b.boxes", cfg.b, cfg.b.root, cfg.b.boxes),
                                  ("data.a.test_boxes", cfg.a, cfg.a.test_root, cfg.a.test_boxes),
                                  ("data.b.test_boxes", cfg.b, cfg.b.test_root, cfg.b.test_boxes)):
        if boxes:
            files = list_images(root, cfg.extensions, key)
            return read_boxes(boxes, files, root, key, ClassOrder(), dom.boxes_format)[2]
    return ClassOrder()


def build_domain(key: str, dom: DomainConfig, cfg: DataConfig, split: str = "train",
                 classes: Sequence[str] = ()) -> DomainFiles:
    """List, check and range-resolve the files of one domain ('train' uses root, 'test' test_root),
    with their labels and masks where configured (class order: ``classes``, else data.classes, else
    the one these labels define)."""
    train = split == "train"
    root_key = f"{key}.root" if train else f"{key}.test_root"
    root = dom.root if train else dom.test_root
    files = DomainFiles(key, dom, list_images(root, cfg.extensions, root_key), cfg.on_bad_file,
                        root=root, max_pixels=cfg.max_image_pixels)
    files.scan(cfg.scan)
    labels, masks = (dom.labels, dom.masks) if train else (dom.test_labels, dom.test_masks)
    order = classes if classes else ClassOrder(cfg.classes)
    if labels or masks:
        files.attach_labels(labels, masks, order, cfg.mask_classes, test=not train, scan=cfg.scan)
    boxes = dom.boxes if train else dom.test_boxes
    if boxes:
        files.attach_boxes(boxes, dom.boxes_format, files.classes or order, test=not train)
    files.resolve_range(dom.scale)
    return files
