"""Labels as data: image-level classes and per-pixel label masks of a domain's images.

Image-level classes come from a CSV of ``file,label`` rows (a header naming a ``filename`` or
``file`` column and a ``label`` column; labels are class indices or class names; an optional
``class_name`` column names the indices), or from class-named subfolders (``labels: folders``).
A mask is a 1-channel 8-bit PNG (gray, or palette as VOC and annotation tools write it, whose
palette indices are the classes) with the same relative name as its image (``a/b.jpg`` ->
``MASKS/a/b.png``) holding a class index per pixel; :data:`IGNORE` (255) marks pixels without one.

Problems are reported per file (a missing entry, an unknown class, a missing mask, a mask of
another size, and with a full scan a mask value out of range), so that ``data.on_bad_file`` can
stop with them or skip those files.
"""

from __future__ import annotations

import csv
import glob as globlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import UnidentifiedImageError

from cyclecmda.errors import DataError
from cyclecmda.images import _open_header, probe_image

IGNORE = 255  # mask value of pixels that carry no class
NO_LABEL = -1  # label of an image without one (a domain or split that has no labels)

__all__ = ["IGNORE", "NO_LABEL", "DomainLabels", "image_base", "read_mask", "resolve_classes"]


def image_base(root: str) -> Path:
    """The folder that image names are relative to: the root folder, a glob's fixed prefix, or a
    list file's folder."""
    path = Path(root).expanduser()
    if any(ch in root for ch in "*?["):
        fixed = []
        for part in path.parts:
            if globlib.has_magic(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path(".")
    return path if path.is_dir() else path.parent


def _relative_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def _read_csv(path: Path, key: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """``{file name: label}`` and ``{label index: class name}`` of a labels CSV."""
    if not path.is_file():
        raise DataError(f"{key}: '{path}' does not exist (expected a CSV of file,label rows, or 'folders').")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{key}: '{path}' is not a readable CSV file ({exc}).") from None
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    name_col = next((header.index(c) for c in ("filename", "file", "path", "image") if c in header), None)
    if name_col is None or "label" not in header:
        raise DataError(
            f"{key}: '{path}' needs a header row with a file column ('filename' or 'file') and a 'label' "
            f"column, got {rows[0] if rows else 'an empty file'}."
        )
    label_col = header.index("label")
    class_col = header.index("class_name") if "class_name" in header else None
    labels: Dict[str, str] = {}
    names: Dict[str, str] = {}
    for n, row in enumerate(rows[1:], 2):
        if len(row) <= max(name_col, label_col):
            raise DataError(f"{key}: '{path}' line {n} has {len(row)} column(s), fewer than the header's.")
        labels[row[name_col].strip().replace("\\", "/")] = row[label_col].strip()
        if class_col is not None and len(row) > class_col:
            names[row[label_col].strip()] = row[class_col].strip()
    return labels, names


def resolve_classes(configured: Sequence[str], found: Sequence[str], names: Dict[str, str], key: str) -> List[str]:
    """The class names: configured ones, else those the labels give (names, or indices 0..K-1)."""
    if configured:
        return list(configured)
    if not found:
        raise DataError(f"{key}: no labels found, so the class names are unknown; set data.classes.")
    if all(v.lstrip("-").isdigit() for v in found):
        count = max(int(v) for v in found) + 1
        return [names.get(str(i), str(i)) for i in range(count)]
    if any(v.lstrip("-").isdigit() for v in found):
        raise DataError(f"{key}: labels mix class indices and names; use one or the other, or set data.classes.")
    return sorted(set(found))


@dataclass
class DomainLabels:
    """Labels and masks of one split's files, and the problem of each file that has one."""

    labels: Optional[Dict[Path, int]] = None
    masks: Optional[Dict[Path, Path]] = None
    problems: Dict[Path, str] = field(default_factory=dict)

    def label(self, path: Path) -> int:
        return NO_LABEL if self.labels is None else self.labels.get(path, NO_LABEL)

    @classmethod
    def build(
        cls,
        files: Sequence[Path],
        root: str,
        labels: str,
        masks: str,
        classes: Sequence[str],
        key: str,
        test: bool = False,
        mask_values: int = 0,
    ) -> Tuple["DomainLabels", List[str]]:
        """Read a split's labels (``labels``: a CSV path, ``folders``, or empty) and masks (a folder,
        or empty). Returns them with the class names, ``classes`` when given. ``key`` names the
        domain in messages (``data.a``); ``test``: the keys are test_labels / test_masks.
        ``mask_values``: the number of mask classes, to check every mask's values now (a full
        scan); 0 checks headers only."""
        labels_key, masks_key = (f"{key}.test_labels", f"{key}.test_masks") if test else (f"{key}.labels", f"{key}.masks")
        out = cls()
        base = image_base(root)
        names = [_relative_name(p, base) for p in files]
        if labels:
            if labels == "folders":
                raw = {p: (n.split("/")[0] if "/" in n else "") for p, n in zip(files, names)}
                found = sorted({v for v in raw.values() if v})
                class_names = resolve_classes(classes, found, {}, labels_key)
            else:
                table, index_names = _read_csv(Path(labels).expanduser(), labels_key)
                by_file = {Path(n).name: v for n, v in table.items()}
                raw = {p: table.get(n, by_file.get(p.name, "")) for p, n in zip(files, names)}
                class_names = resolve_classes(classes, list(table.values()), index_names, labels_key)
            out.labels = {}
            for path, value in raw.items():
                index = _class_index(value, class_names)
                if not value:
                    why = "it is not in a class-named subfolder" if labels == "folders" else f"{labels} has no row for it"
                    out.problems[path] = f"{path}: has no label ({labels_key}: {why})."
                elif index is None:
                    out.problems[path] = (
                        f"{path}: label {value!r} is not a known class ({len(class_names)} classes: "
                        f"{', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}); fix the label "
                        "or list it in data.classes."
                    )
                else:
                    out.labels[path] = index
        else:
            class_names = list(classes)
        if masks:
            folder = Path(masks).expanduser()
            if not folder.is_dir():
                raise DataError(f"{masks_key}: '{masks}' is not a folder (expected label PNGs named like the images).")
            out.masks = {}
            for path, name in zip(files, names):
                mask = (folder / name).with_suffix(".png")
                problem = _check_mask(path, mask, masks_key, mask_values)
                if problem:
                    out.problems.setdefault(path, problem)
                else:
                    out.masks[path] = mask
        return out, class_names


def _class_index(value: str, class_names: Sequence[str]) -> Optional[int]:
    if not value:
        return None
    if value in class_names:
        return list(class_names).index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(class_names):
        return int(value)
    return None


def _check_mask(image: Path, mask: Path, key: str, num_classes: int = 0) -> Optional[str]:
    """The problem of an image's mask: its header (mode, size), and with ``num_classes`` its values."""
    if not mask.is_file():
        return f"{image}: its mask '{mask}' does not exist ({key})."
    try:
        info, image_info = probe_image(mask), probe_image(image)
    except DataError as exc:
        return str(exc)
    if not (info.channels == 1 or info.palette) or info.bit_depth != 8:
        return (f"{mask}: a mask must be a 1-channel 8-bit PNG of class indices (gray, or a palette's indices), "
                f"got {info.channels} channel(s) at {info.bit_depth} bits.")
    if (info.width, info.height) != (image_info.width, image_info.height):
        return (f"{mask}: is {info.width}x{info.height} but its image '{image}' is "
                f"{image_info.width}x{image_info.height}; a mask must have its image's size.")
    if num_classes:
        try:
            read_mask(mask, num_classes, (image_info.height, image_info.width))
        except DataError as exc:
            return str(exc)
    return None


def _decode_mask(data: np.ndarray) -> Optional[np.ndarray]:
    # OpenCV expands a palette to colours; the palette indices are the classes, and PIL returns them
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and data.size > 25 and data[25] == 3:
        try:
            im = _open_header(io.BytesIO(data.tobytes()))
            return np.asarray(im) if im.mode == "P" else None
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
            return None
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def read_mask(path: Path, num_classes: int, shape: Tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class indices of a mask, checked: its size, and values below ``num_classes`` or 255."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    mask = _decode_mask(data) if data.size else None
    if mask is None or mask.dtype != np.uint8 or mask.ndim != 2:
        raise DataError(f"{path}: is not a readable 1-channel 8-bit mask PNG (gray or palette).")
    if mask.shape != tuple(shape):
        raise DataError(f"{path}: is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}.")
    bad = (mask >= num_classes) & (mask != IGNORE)
    if bad.any():
        raise DataError(
            f"{path}: holds the value {int(mask[bad].max())}, but there are {num_classes} mask classes "
            f"(values 0 to {num_classes - 1}, and {IGNORE} for pixels to ignore); check data.mask_classes."
        )
    return mask
