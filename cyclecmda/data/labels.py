"""Labels as data: image-level classes and per-pixel label masks of a domain's images.

Image-level classes come from a CSV of ``file,label`` rows (a header naming a ``filename`` or
``file`` column and a ``label`` column; labels are class indices or class names; an optional
``class_name`` column names the indices), or from class-named subfolders (``labels: folders``:
every first-level subfolder of the root is a class, an empty one too, hidden ones excepted).
A CSV may start with a byte order mark (as Excel writes it); file and class names are compared
after Unicode NFC normalisation (macOS writes NFD); two rows that give one file different labels
are an error.

The class index order is defined once (:class:`ClassOrder`): by ``data.classes``, else by the first
labels file (``data.a.labels``, else ``data.b.labels``, else a test one): its indices (named by its
``class_name`` column, if any) or its sorted class names. Every other labels file (B's, the test
splits') is read through that order: names by name, indices by index; a file of indices can sit
beside an order of names only where its ``class_name`` column names every index it uses (else
``data.classes`` must say which index is which), and a ``class_name`` that disagrees with the
order is an error. Without ``data.classes``, an index file whose largest index + 1 is more
than 10 and more than 10 times its number of distinct labels is refused, so that one stray label
cannot create thousands of empty classes; ``data.classes`` allows any index below its length.

A mask is a 1-channel 8-bit PNG (gray, or palette as VOC and annotation tools write it, whose
palette indices are the classes) with the same relative name as its image (``a/b.jpg`` ->
``MASKS/a/b.png``) holding a class index per pixel; :data:`IGNORE` (255) marks pixels without one.

Problems are reported per file (a missing entry, an unknown class, a missing mask, a mask of
another size, and with a full scan a mask value out of range), so that ``data.on_bad_file`` can
stop with them or skip those files; problems of a whole labels file are errors.
"""

from __future__ import annotations

import csv
import glob as globlib
import io
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
from PIL import UnidentifiedImageError

from cyclecmda.data.images import _open_header, probe_image
from cyclecmda.errors import DataError

IGNORE = 255  # mask value of pixels that carry no class
NO_LABEL = -1  # label of an image without one (a domain or split that has no labels)
SPARSE_FACTOR = 10  # an index file may name up to this many classes per distinct label (and always 10)

__all__ = ["IGNORE", "NO_LABEL", "ClassOrder", "DomainLabels", "image_base", "read_class_order", "read_mask"]


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class ClassOrder(list):
    """Class names in index order, and where that order came from.

    ``source`` names it in messages (``data.classes``, or a labels key and its file); ``given_by``
    is ``config``, ``indices`` (``named``: a class_name column named them) or ``names`` (sorted).
    """

    def __init__(self, names: Iterable[str] = (), source: str = "data.classes", given_by: str = "config",
                 named: bool = True) -> None:
        super().__init__(names)
        self.source, self.given_by, self.named = source, given_by, named

    def indexer(self) -> Callable[[str], Optional[int]]:
        """A function from a label (an NFC class name, or an index) to its class index, None if it is none."""
        by_name: Dict[str, int] = {}
        for i, name in enumerate(self):
            by_name.setdefault(nfc(name), i)

        def index_of(value: str) -> Optional[int]:
            if value in by_name:
                return by_name[value]
            return int(value) if _is_index(value) and 0 <= int(value) < len(self) else None

        return index_of

    def preview(self) -> str:
        return f"{', '.join(self[:10])}{', ...' if len(self) > 10 else ''}"


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


def _is_index(value: str) -> bool:
    return (value[1:] if value.startswith("-") else value).isdecimal()


@dataclass
class LabelsFile:
    """What a labels CSV says: each file's label and line, and the class names of its indices."""

    path: Path
    key: str
    rows: Dict[str, Tuple[str, int]]  # NFC file name -> (label, line)
    index_names: Dict[int, Tuple[str, int]]  # index -> (class_name, line)

    @property
    def where(self) -> str:
        return f"{self.key} ('{self.path}')"

    @property
    def values(self) -> List[Tuple[str, int]]:
        return [v for v in self.rows.values() if v[0]]

    @property
    def indices(self) -> Set[int]:
        return {int(v) for v, _ in self.values if _is_index(v)}

    @property
    def has_names(self) -> bool:
        return any(not _is_index(v) for v, _ in self.values)


def _read_csv(path: Path, key: str) -> LabelsFile:
    """The rows of a labels CSV, refusing a file that gives one image two labels."""
    if not path.is_file():
        raise DataError(f"{key}: '{path}' does not exist (expected a CSV of file,label rows, or 'folders').")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{key}: '{path}' is not a readable CSV file ({exc}).") from None
    numbered = [(n, r) for n, r in enumerate(rows, 1) if r and any(cell.strip() for cell in r)]
    header = [cell.strip().lower() for cell in numbered[0][1]] if numbered else []
    name_col = next((header.index(c) for c in ("filename", "file", "path", "image") if c in header), None)
    if name_col is None or "label" not in header:
        raise DataError(
            f"{key}: '{path}' needs a header row with a file column ('filename' or 'file') and a 'label' "
            f"column, got {numbered[0][1] if numbered else 'an empty file'}."
        )
    label_col = header.index("label")
    class_col = header.index("class_name") if "class_name" in header else None
    out = LabelsFile(path, key, {}, {})
    for n, row in numbered[1:]:
        if len(row) <= max(name_col, label_col):
            raise DataError(f"{key}: '{path}' line {n} has {len(row)} column(s), fewer than the header's.")
        name, label = nfc(row[name_col].strip().replace("\\", "/")), nfc(row[label_col].strip())
        if name in out.rows and out.rows[name][0] != label:
            first, line = out.rows[name]
            raise DataError(f"{out.where}: {name} has two different labels, {first!r} on line {line} and {label!r} "
                            f"on line {n}; keep one row per file.")
        out.rows.setdefault(name, (label, n))
        class_name = nfc(row[class_col].strip()) if class_col is not None and len(row) > class_col else ""
        if class_name and _is_index(label):
            index = int(label)
            if index in out.index_names and out.index_names[index][0] != class_name:
                other, line = out.index_names[index]
                raise DataError(f"{out.where}: class {index} is named {other!r} on line {line} and {class_name!r} "
                                f"on line {n}; give each index one class_name.")
            out.index_names.setdefault(index, (class_name, n))
    return out


def _order_of_csv(table: LabelsFile) -> ClassOrder:
    """The class order a labels CSV defines when it is the first one: its indices, or its sorted names."""
    values = table.values
    if not values:
        raise DataError(f"{table.key}: no labels found in '{table.path}', so the class names are unknown; set data.classes.")
    if table.indices and table.has_names:
        raise DataError(f"{table.where}: labels mix class indices and names; use one or the other, or set data.classes.")
    if table.has_names:
        return ClassOrder(sorted({v for v, _ in values}), table.where, "names")
    largest, line = max(((int(v), n) for v, n in values), key=lambda vn: vn[0])
    count, distinct = largest + 1, len({int(v) for v, _ in values})
    if count > SPARSE_FACTOR and count > SPARSE_FACTOR * distinct:
        raise DataError(
            f"{table.where}: label {largest} on line {line} would make {count} classes from {distinct} distinct "
            f"labels; fix the label, or set data.classes to the class names in index order if there really are "
            f"{count} classes."
        )
    names = [table.index_names.get(i, (str(i), 0))[0] for i in range(max(count, 0))]
    return ClassOrder(names, table.where, "indices", named=bool(table.index_names))


def _class_folders(base: Path) -> List[str]:
    """The class names of ``labels: folders``: every first-level subfolder of the root but hidden ones."""
    if not base.is_dir():
        return []
    return sorted(nfc(p.name) for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_class_order(labels: str, root: str, key: str) -> ClassOrder:
    """The class order that a labels setting (a CSV path or ``folders``) defines as the first one."""
    if labels == "folders":
        base = image_base(root)
        return ClassOrder(_class_folders(base), f"{key} (the class folders of '{base}')", "names")
    return _order_of_csv(_read_csv(Path(labels).expanduser(), key))


def _check_against(where: str, key: str, indices: Set[int], names: bool, index_names: Dict[int, Tuple[str, int]],
                   order: ClassOrder) -> None:
    """Refuse a labels file whose indices or names cannot be read through the established order: indices
    beside an order of names unless a class_name column names each of them, names beside unnamed indices,
    and a class_name that disagrees with the order."""
    if order.given_by == "names" and not indices <= set(index_names):
        raise DataError(
            f"{where} gives class indices, but the class order comes from {order.source}, which gives class "
            f"names (sorted: {order.preview()}); set data.classes to the class names in index order, or use "
            f"class names in {key}."
        )
    if names and order.given_by == "indices" and not order.named:
        raise DataError(
            f"{where} gives class names, but the class order comes from {order.source}, which gives class indices "
            f"without names; set data.classes to the class names in index order, or use indices in {key}."
        )
    for index, (name, line) in sorted(index_names.items()):
        if 0 <= index < len(order) and order[index] != str(index) and nfc(order[index]) != name:
            raise DataError(
                f"{where} line {line} names class {index} {name!r}, but class {index} is {order[index]!r} in the "
                f"class order of {order.source}; correct the class_name column, or set data.classes to the class "
                "names in index order."
            )


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
    ) -> Tuple["DomainLabels", ClassOrder]:
        """Read a split's labels (``labels``: a CSV path, ``folders``, or empty) and masks (a folder,
        or empty). Returns them with the class order: ``classes`` when given (a plain list counts as
        data.classes), else the one these labels define. ``key`` names the domain in messages
        (``data.a``); ``test``: the keys are test_labels / test_masks. ``mask_values``: the number
        of mask classes, to check every mask's values now (a full scan); 0 checks headers only."""
        labels_key, masks_key = (f"{key}.test_labels", f"{key}.test_masks") if test else (f"{key}.labels", f"{key}.masks")
        order = classes if isinstance(classes, ClassOrder) else ClassOrder(classes)
        out = cls()
        base = image_base(root)
        relative = [_relative_name(p, base) for p in files]
        names = [nfc(n) for n in relative]  # labels files name files in either form; masks mirror the disk
        if labels:
            if labels == "folders":
                raw = {p: (n.split("/")[0] if "/" in n else "") for p, n in zip(files, names)}
                if order:
                    where = f"{labels_key} (the class folders of '{base}')"
                    _check_against(where, labels_key, set(), any(raw.values()), {}, order)
                else:
                    order = read_class_order(labels, root, labels_key)
                    _warn_empty_folders(order, set(raw.values()), labels_key, base)
            else:
                table = _read_csv(Path(labels).expanduser(), labels_key)
                if order:
                    _check_against(table.where, labels_key, table.indices, table.has_names, table.index_names, order)
                else:
                    order = _order_of_csv(table)
                by_file = {Path(n).name: v for n, (v, _) in table.rows.items()}
                raw = {p: table.rows.get(n, ("",))[0] or by_file.get(nfc(p.name), "") for p, n in zip(files, names)}
            out.labels = {}
            index_of = order.indexer()
            for path, value in raw.items():
                index = index_of(value) if value else None
                if not value:
                    why = "it is not in a class-named subfolder" if labels == "folders" else f"{labels} has no row for it"
                    out.problems[path] = f"{path}: has no label ({labels_key}: {why})."
                elif index is None:
                    indices = f"; indices 0 to {len(order) - 1}" if _is_index(value) and order else ""
                    out.problems[path] = (
                        f"{path}: label {value!r} is not a known class ({len(order)} classes of {order.source}: "
                        f"{order.preview()}{indices}); fix the label or list it in data.classes."
                    )
                else:
                    out.labels[path] = index
        if masks:
            folder = Path(masks).expanduser()
            if not folder.is_dir():
                raise DataError(f"{masks_key}: '{masks}' is not a folder (expected label PNGs named like the images).")
            out.masks = {}
            for path, name in zip(files, relative):
                mask = (folder / name).with_suffix(".png")
                problem = _check_mask(path, mask, masks_key, mask_values)
                if problem:
                    out.problems.setdefault(path, problem)
                else:
                    out.masks[path] = mask
        return out, order


def _warn_empty_folders(order: ClassOrder, used: Set[str], key: str, base: Path) -> None:
    for index, name in enumerate(order):
        if name not in used:
            warnings.warn(f"{key}: the class folder '{name}' of '{base}' holds no images; it stays class {index} of "
                          f"{len(order)} so that the classes after it keep their indices.", stacklevel=4)


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
