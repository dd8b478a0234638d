"""Boxes as data: the object boxes of a domain's images, from the three layouts datasets ship in.

- **COCO**: one JSON file (``images`` with ``file_name``, ``width``, ``height``; ``annotations``
  with ``image_id``, ``bbox`` ``[x, y, w, h]`` in pixels and ``category_id``; ``categories`` with
  ``id`` and ``name``). Crowd annotations (``iscrowd: 1``) are regions, not objects: left out. An
  image of the domain that the file does not list is a problem of that image; one it lists
  without annotations has no objects.
- **YOLO**: a folder of ``.txt`` files named like the images (``a/b.jpg`` -> ``FOLDER/a/b.txt``,
  or ``FOLDER/b.txt``), a line ``class cx cy w h`` per object, normalised to the image's size.
  An image without a file has no objects (the YOLO convention); a folder none of whose files
  matches an image is an error. Class names: ``data.classes``, else a ``classes.txt`` (or
  ``obj.names``) in the folder, one name per line, else the indices.
- **Pascal VOC**: a folder of ``.xml`` files named like the images, ``object`` elements with a
  ``name`` and a ``bndbox`` (``xmin ymin xmax ymax`` in pixels). An image without a file is a problem.

The layout is found from what the path is (a ``.json`` file; a folder of ``.txt`` or of ``.xml``
files) unless ``boxes_format`` names it. Boxes come out as ``(N, 4)`` float32 ``x_min, y_min,
x_max, y_max`` in pixels (albumentations' ``pascal_voc``) with ``(N,)`` int64 class indices, in
the one class order of the run (``data.classes``, else the first labels or boxes file: COCO's
categories by id, VOC's names sorted, YOLO's ``classes.txt``). A box more than half a pixel outside
its image, one of zero or negative size, an unknown class and a malformed line are problems of
their image, named with the file and line (``data.on_bad_file`` stops on them or skips the image).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cyclecmda.config.schema import BOX_FORMATS
from cyclecmda.data.images import probe_image
from cyclecmda.data.labels import IGNORE, ClassOrder, _relative_name, image_base, nfc
from cyclecmda.errors import DataError, unknown

EDGE_SLACK = 0.5  # pixels a box may reach past the image edge (rounding in annotation tools); it is clipped
MAX_BOXES_FILE = 512 * 2**20  # bytes; a larger annotation file is refused before it is read
YOLO_NAMES = ("classes.txt", "obj.names")

__all__ = ["ImageBoxes", "box_format", "box_mask", "box_masks", "pack_boxes", "read_boxes", "unpack_boxes"]


@dataclass
class ImageBoxes:
    """One image's objects: ``boxes`` (N, 4) float32 x_min, y_min, x_max, y_max in pixels, ``labels`` (N,) int64."""

    boxes: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> "ImageBoxes":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.labels)


class _Problem(Exception):
    """A problem of one image's boxes (its message names the file and line)."""


def box_format(path: str, key: str, fmt: str = "auto") -> str:
    """The layout of a boxes setting: ``fmt`` checked against the path, or found from it."""
    if fmt not in BOX_FORMATS:
        raise unknown("boxes format", fmt, BOX_FORMATS, key=f"{key}_format")
    where = Path(path).expanduser()
    if where.is_file():
        if fmt in ("auto", "coco") and where.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{key}: '{path}' is a file; boxes come from a COCO .json file, or a folder of YOLO .txt "
                        "or Pascal VOC .xml files.")
    if not where.is_dir():
        raise DataError(f"{key}: '{path}' does not exist (expected a COCO .json file, or a folder of YOLO .txt or "
                        "Pascal VOC .xml files).")
    if fmt == "coco":
        raise DataError(f"{key}: '{path}' is a folder, but {key}_format=coco reads one .json file.")
    if fmt != "auto":
        return fmt
    kinds = {p.suffix.lower() for p in where.rglob("*") if p.is_file() and p.name not in YOLO_NAMES}
    found = [name for suffix, name in ((".txt", "yolo"), (".xml", "voc")) if suffix in kinds]
    if len(found) != 1:
        what = "both .txt and .xml files" if found else "no .txt or .xml files"
        raise DataError(f"{key}: the folder '{path}' holds {what}; keep one layout there, or set "
                        f"{key}_format to yolo or voc.")
    return found[0]


def _read_text(path: Path, key: str) -> str:
    size = path.stat().st_size
    if size > MAX_BOXES_FILE:
        raise DataError(f"{key}: '{path}' is {size / 2**20:.0f} MiB, more than an annotation file of "
                        f"{MAX_BOXES_FILE // 2**20} MiB holds; is it the right file?")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: cannot read '{path}' as UTF-8 text ({exc}).") from None


def _number(value: Any, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Problem(f"{where}: {what} {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise _Problem(f"{where}: {what} is {number}.")
    return number


def _checked(box: Tuple[float, float, float, float], size: Tuple[int, int], where: str) -> List[float]:
    """A box in pixels, clipped to the image; a problem if it has no area or lies outside the image."""
    x0, y0, x1, y1 = box
    width, height = size
    if x1 <= x0 or y1 <= y0:
        raise _Problem(f"{where}: the box {x0:g},{y0:g},{x1:g},{y1:g} (x_min,y_min,x_max,y_max) has no area.")
    if x0 < -EDGE_SLACK or y0 < -EDGE_SLACK or x1 > width + EDGE_SLACK or y1 > height + EDGE_SLACK:
        raise _Problem(f"{where}: the box {x0:g},{y0:g},{x1:g},{y1:g} (x_min,y_min,x_max,y_max) reaches outside "
                       f"the {width}x{height} image.")
    return [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]


def _boxes(rows: List[Tuple[List[float], int]]) -> ImageBoxes:
    if not rows:
        return ImageBoxes.empty()
    return ImageBoxes(np.array([r[0] for r in rows], np.float32), np.array([r[1] for r in rows], np.int64))


# --- the three layouts: each gives, per image, its boxes with class names, or a problem -----------

Named = List[Tuple[List[float], str, str]]  # (box in pixels, class name, where it was read)


def _coco(path: Path, key: str, files: Sequence[Path], names: Sequence[str], sizes: Callable[[Path], Tuple[int, int]]
          ) -> Tuple[Dict[Path, Named], Dict[Path, str], List[str]]:
    try:
        data = json.loads(_read_text(path, key))
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {nfc(str(i["file_name"])): i for i in data["images"]}
        annotations = data["annotations"]
    except json.JSONDecodeError as exc:
        raise DataError(f"{key}: '{path}' is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{key}: '{path}' is not a COCO file: 'images', 'annotations' and 'categories' with their "
                        f"'id', 'file_name' and 'name' fields are needed ({type(exc).__name__}: {exc}).") from None
    by_id: Dict[Any, List[Tuple[int, Dict[str, Any]]]] = {}
    for n, ann in enumerate(annotations):
        if isinstance(ann, dict) and not ann.get("iscrowd"):
            by_id.setdefault(ann.get("image_id"), []).append((n, ann))
    by_base = {Path(name).name: entry for name, entry in images.items()}
    out: Dict[Path, Named] = {}
    problems: Dict[Path, str] = {}
    for file, name in zip(files, names):
        entry = images.get(name) or by_base.get(Path(name).name)
        if entry is None:
            problems[file] = f"{file}: is not among the images of {key} '{path}' (no 'file_name' {name!r})."
            continue
        try:
            size = sizes(file)
            stated = (entry.get("width"), entry.get("height"))
            if None not in stated and tuple(int(v) for v in stated) != size:
                raise _Problem(f"{path}: image {entry.get('id')} ({name}) is {stated[0]}x{stated[1]} there, but "
                               f"'{file}' is {size[0]}x{size[1]}.")
            rows: Named = []
            for n, ann in by_id.get(entry.get("id"), []):
                where = f"{path}: annotation {n} (id {ann.get('id')}) of {name}"
                bbox = ann.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise _Problem(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}.")
                x, y, w, h = (_number(v, where, "bbox value") for v in bbox)
                category = ann.get("category_id")
                if category not in categories:
                    raise _Problem(f"{where}: category_id {category!r} is not in 'categories' "
                                   f"(ids {', '.join(map(str, sorted(categories)))}).")
                rows.append((_checked((x, y, x + w, y + h), size, where), categories[category], where))
            out[file] = rows
        except _Problem as exc:
            problems[file] = str(exc)
    return out, problems, [categories[i] for i in sorted(categories)]


def _yolo(folder: Path, key: str, files: Sequence[Path], names: Sequence[str], sizes: Callable[[Path], Tuple[int, int]]
          ) -> Tuple[Dict[Path, Named], Dict[Path, str], List[str]]:
    out: Dict[Path, Named] = {}
    problems: Dict[Path, str] = {}
    matched = 0
    for file, name in zip(files, names):
        txt = next((t for t in ((folder / name).with_suffix(".txt"), folder / (Path(name).stem + ".txt")) if t.is_file()),
                   None)
        if txt is None:
            out[file] = []
            continue
        matched += 1
        try:
            width, height = sizes(file)
            rows: Named = []
            for n, line in enumerate(_read_text(txt, key).splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{txt}:{n}"
                parts = line.split()
                if len(parts) != 5 or not parts[0].isdecimal():
                    raise _Problem(f"{where}: expected 'class cx cy w h' (a class index and four numbers normalised "
                                   f"to the image), got {line.strip()!r}.")
                cx, cy, w, h = (_number(v, where, "value") for v in parts[1:])
                box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
                rows.append((_checked(box, (width, height), where), parts[0], where))
            out[file] = rows
        except _Problem as exc:
            problems[file] = str(exc)
    if files and not matched:
        raise DataError(f"{key}: no .txt file in '{folder}' is named like an image of the domain (e.g. "
                        f"'{Path(names[0]).with_suffix('.txt')}'); is it the right folder?")
    names_file = next((folder / n for n in YOLO_NAMES if (folder / n).is_file()), None)
    class_names = [] if names_file is None else [ln.strip() for ln in _read_text(names_file, key).splitlines() if ln.strip()]
    return out, problems, class_names


def _voc(folder: Path, key: str, files: Sequence[Path], names: Sequence[str], sizes: Callable[[Path], Tuple[int, int]]
         ) -> Tuple[Dict[Path, Named], Dict[Path, str], List[str]]:
    out: Dict[Path, Named] = {}
    problems: Dict[Path, str] = {}
    seen = set()
    for file, name in zip(files, names):
        xml = next((t for t in ((folder / name).with_suffix(".xml"), folder / (Path(name).stem + ".xml")) if t.is_file()),
                   None)
        if xml is None:
            problems[file] = f"{file}: has no box file '{(folder / name).with_suffix('.xml')}' ({key})."
            continue
        try:
            try:
                root = ET.fromstring(_read_text(xml, key))
            except ET.ParseError as exc:
                raise _Problem(f"{xml}: is not valid XML ({exc}).") from None
            size = sizes(file)
            rows: Named = []
            for n, obj in enumerate(root.iter("object"), 1):
                where = f"{xml}: object {n}"
                label = (obj.findtext("name") or "").strip()
                box = obj.find("bndbox")
                if not label or box is None:
                    raise _Problem(f"{where}: needs a 'name' and a 'bndbox' with xmin, ymin, xmax, ymax.")
                x0, y0, x1, y1 = (_number(box.findtext(tag), where, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
                rows.append((_checked((x0, y0, x1, y1), size, where), nfc(label), where))
                seen.add(nfc(label))
            out[file] = rows
        except _Problem as exc:
            problems[file] = str(exc)
    return out, problems, sorted(seen)


READERS = {"coco": _coco, "yolo": _yolo, "voc": _voc}


def read_boxes(source: str, files: Sequence[Path], root: str, key: str, order: ClassOrder, fmt: str = "auto",
               sizes: Optional[Callable[[Path], Tuple[int, int]]] = None,
               ) -> Tuple[Dict[Path, ImageBoxes], Dict[Path, str], ClassOrder]:
    """The boxes of ``files`` from ``source`` (``key``: the setting, e.g. ``data.a.boxes``), with
    the problem of each image that has one, and the class order: ``order`` when it is set, else the
    one this file defines. ``sizes`` gives an image's (width, height) (its header by default)."""
    layout = box_format(source, key, fmt)
    base = image_base(root)
    names = [nfc(_relative_name(p, base)) for p in files]
    sizes = sizes or _header_size
    named, problems, file_classes = READERS[layout](Path(source).expanduser(), key, files, names, sizes)
    if not order:
        if layout == "yolo" and not file_classes:
            used = [int(c) for rows in named.values() for _, c, _ in rows]
            file_classes = [str(i) for i in range(max(used, default=-1) + 1)]
        order = ClassOrder(file_classes, f"{key} ('{source}')", "names" if layout != "yolo" else "indices")
    index_of = order.indexer()
    out: Dict[Path, ImageBoxes] = {}
    for file, rows in named.items():
        indexed = []
        for box, name, where in rows:
            index = index_of(nfc(name) if layout != "yolo" else _yolo_name(name, file_classes))
            if index is None:
                problems[file] = (f"{where}: class {name!r} is not a known class ({len(order)} classes of "
                                  f"{order.source}: {order.preview()}); fix it, or list it in data.classes.")
                break
            indexed.append((box, index))
        else:
            out[file] = _boxes(indexed)
    return out, problems, order


def _header_size(path: Path) -> Tuple[int, int]:
    try:
        info = probe_image(path)
    except DataError as exc:
        raise _Problem(str(exc)) from None
    return info.width, info.height


def _yolo_name(index: str, names: List[str]) -> str:
    """A YOLO class index as the class order reads it: its name in classes.txt, else the index."""
    i = int(index)
    return names[i] if 0 <= i < len(names) else index


BOX_BORDER = 1  # pixels on either side of a box's edge whose class is uncertain: no target there


def box_mask(boxes: torch.Tensor, labels: torch.Tensor, size: Tuple[int, int], border: int = BOX_BORDER) -> torch.Tensor:
    """(H, W) int64 coarse mask of one image's boxes (``loss.semantic.kind: boxes``): inside a box
    1 + its class, outside every box 0 (background); IGNORE where boxes of two classes overlap and
    within ``border`` pixels of any box's edge, where a box says nothing sure about a pixel."""
    height, width = size
    mask = torch.zeros(size, dtype=torch.long)
    unsure = torch.zeros(size, dtype=torch.bool)
    # pixel centres at i + 0.5: inside when at least ``border`` pixels within the box's edges
    cy = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    cx = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    for (x0, y0, x1, y1), cls in zip(boxes.tolist(), labels.tolist()):
        inner = (cy >= y0 + border) & (cy <= y1 - border) & (cx >= x0 + border) & (cx <= x1 - border)
        outer = (cy >= y0 - border) & (cy <= y1 + border) & (cx >= x0 - border) & (cx <= x1 + border)
        unsure |= outer & ~inner
        unsure |= inner & (mask > 0) & (mask != cls + 1)
        mask = torch.where(inner & (mask == 0), torch.full_like(mask, cls + 1), mask)
    return torch.where(unsure, torch.full_like(mask, IGNORE), mask)


def box_masks(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
    """(N, H, W) :func:`box_mask` of a batch's boxes (lists: one tensor per image)."""
    return torch.stack([box_mask(b.cpu(), c.cpu(), size) for b, c in zip(boxes, labels)])


BOX_STEPS = 4  # a packed box's corners are stored in quarter pixels (int16: images up to 8191 px)


def pack_boxes(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], max_boxes: int) -> torch.Tensor:
    """(N, max_boxes, 5) int16 of a batch's boxes (one tensor per image), each row x_min, y_min,
    x_max, y_max in quarter pixels and the class; rows past an image's boxes hold class -1. An
    image's boxes past ``max_boxes`` are left out (the largest kept)."""
    out = torch.zeros(len(boxes), max_boxes, 5, dtype=torch.int16)
    out[:, :, 4] = -1
    for i, (b, c) in enumerate(zip(boxes, labels)):
        b, c = b.detach().float().cpu().reshape(-1, 4), c.cpu()
        if len(b) > max_boxes:
            keep = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).argsort(descending=True)[:max_boxes]
            b, c = b[keep], c[keep]
        out[i, : len(b), :4] = (b * BOX_STEPS).round().clamp(-32768, 32767).to(torch.int16)
        out[i, : len(b), 4] = c.to(torch.int16)
    return out


def unpack_boxes(packed: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
    """:func:`pack_boxes` back to one ``{"boxes", "labels"}`` dict per image (boxes in pixels)."""
    out = []
    for rows in packed:
        rows = rows[rows[:, 4] >= 0]
        out.append({"boxes": rows[:, :4].float() / BOX_STEPS, "labels": rows[:, 4].long()})
    return out
