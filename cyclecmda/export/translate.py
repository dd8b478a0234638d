"""Translate image files with an exported translator: folders in, folders out, optionally in tiles.

Each output keeps its input's relative path and file name and has the generator's output channel
count. Its units are the target domain's by default, so a folder translated makes a dataset of
that domain: its training dtype (uint16 for 16-bit, else uint8) and raw value range
(``meta.json``'s ``output``); ``units="input"`` keeps each input's dtype and value range instead
(:func:`cyclecmda.export.artifact.output_units`). Images of one size are translated ``batch_size`` at a
time; large images can go through overlapping tiles blended with a smooth window.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from cyclecmda.config.schema import IMAGE_EXTENSIONS
from cyclecmda.data.images import MAX_IMAGE_PIXELS, images_under, probe_image, read_image, write_image
from cyclecmda.errors import CycleCMDAError, DataError
from cyclecmda.export.artifact import UNITS, TranslatorArtifact, load_artifact, translate_raw, translate_unit
from cyclecmda.files import OutputError, ensure_writable_dir

PathLike = Union[str, Path]
# OpenCV silently saturates 16-bit images to 8 bits in these formats.
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp", ".webp")


class TranslateError(CycleCMDAError, ValueError):
    """Arguments of a translation run that cannot work (bad tile, strength, paths)."""


# --- tiles ------------------------------------------------------------------------------------


def tile_spans(length: int, tile: int, overlap: int, multiple: int = 1) -> List[Tuple[int, int]]:
    """(start, stop) of the tiles along one axis, overlapping by at least `overlap`.

    Starts are multiples of `multiple` (a strided network then samples every tile on the same grid
    as the whole image); the last tile is shifted inward and stretched to the end, so no tile is
    smaller than `tile` (rounded down to a multiple, at least one). One span when `length` fits.
    """
    tile = max(multiple, tile // multiple * multiple)
    if length <= tile:
        return [(0, length)]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    last = (length - tile) // multiple * multiple
    return [(s, s + tile) for s in range(0, last, step)] + [(last, length)]


def edge_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D tile weight: 1 in the middle; towards an edge shared with another tile, a Hann ramp.

    From a shared edge inward: ``overlap // 4`` pixels of weight 0 (their output lacks context),
    then a raised-cosine ramp over the rest of the overlap, so two tiles overlapping by
    ``overlap`` pixels get weights summing to 1. Edges on the image border keep weight 1.
    """
    margin = overlap // 4
    ramp_len = overlap - 2 * margin
    k = torch.arange(1, ramp_len + 1, dtype=torch.float32)
    profile = torch.cat([torch.zeros(margin), torch.sin(math.pi * k / (2 * (ramp_len + 1))) ** 2])
    w = torch.ones(size)
    n = min(size, profile.numel())
    if ramp_start:
        w[:n] = torch.minimum(w[:n], profile[:n])
    if ramp_end:
        w[size - n:] = torch.minimum(w[size - n:], profile[:n].flip(0))
    return w


@torch.no_grad()
def translate_tiled(
    artifact: TranslatorArtifact,
    unit: torch.Tensor,
    tile: int,
    overlap: Optional[int] = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Translate (B, C, H, W) unit images in overlapping tiles -> (B, C_out, H, W) unit images.

    Tiles (see :func:`tile_spans`) start on multiples of the network's size multiple and overlap
    by at least ``overlap``; the last one along each axis is shifted inward. Each tile's output is
    weighted by :func:`edge_window` (falling to 0 towards edges shared with other tiles, 1 at image
    borders) and the weighted sums are divided by the summed weights, so a network whose outputs
    depend only on pixels within ``overlap // 4`` gives exactly the untiled result. Instance-
    normalised generators (CycleGAN's default) normalise each tile by its own statistics, so their
    tiles differ from the whole image's translation; the blend hides the seams, not that difference.
    ``overlap`` defaults to ``tile // 4``; images no larger than ``tile`` are translated whole.
    """
    overlap = tile // 4 if overlap is None else overlap
    check_tiling(tile, overlap, artifact.size_multiple)
    b, _, h, w = unit.shape
    strengths = torch.full((b,), float(strength))
    multiple = artifact.size_multiple
    rows, cols = tile_spans(h, tile, overlap, multiple), tile_spans(w, tile, overlap, multiple)
    if len(rows) == 1 and len(cols) == 1:
        return translate_unit(artifact, unit, strengths, keep_input_channels=False)
    out: Optional[torch.Tensor] = None
    weight_sum = torch.zeros(1, 1, h, w, device=unit.device)
    for y0, y1 in rows:
        wy = edge_window(y1 - y0, overlap, y0 > 0, y1 < h)
        for x0, x1 in cols:
            wx = edge_window(x1 - x0, overlap, x0 > 0, x1 < w)
            window = (wy[:, None] * wx[None, :]).to(unit.device)
            fake = translate_unit(artifact, unit[:, :, y0:y1, x0:x1], strengths, keep_input_channels=False)
            if out is None:
                out = torch.zeros(b, fake.shape[1], h, w, device=unit.device)
            out[:, :, y0:y1, x0:x1] += fake * window
            weight_sum[:, :, y0:y1, x0:x1] += window
    assert out is not None
    return out / weight_sum


def check_tiling(tile: int, overlap: int, multiple: int = 1) -> None:
    """Raise TranslateError unless 0 <= overlap < tile and tiles on the network's grid still overlap."""
    if tile < 1:
        raise TranslateError(f"tile must be a positive number of pixels, got {tile}.")
    if not 0 <= overlap < tile:
        raise TranslateError(f"overlap must be at least 0 and smaller than the tile ({tile}), got {overlap}.")
    rounded = max(multiple, tile // multiple * multiple)
    step = max(multiple, (tile - overlap) // multiple * multiple)
    if rounded - step < overlap:
        raise TranslateError(
            f"tile {tile} with overlap {overlap} is too small for this network, whose tiles must start on "
            f"multiples of {multiple}: use a tile of at least {multiple + -(-overlap // multiple) * multiple}."
        )


# --- files ------------------------------------------------------------------------------------


def find_images(input: PathLike, exclude: Optional[PathLike] = None) -> Tuple[Path, List[Path]]:
    """(root, image files under it, sorted); a single file is its own list.

    An `exclude` folder nested inside `input` (an output folder) is not searched.
    """
    path = Path(input)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise DataError(f"input '{path}' does not exist.")
    skip = Path(exclude).resolve() if exclude is not None else None
    if skip is not None and (skip == path.resolve() or not skip.is_relative_to(path.resolve())):
        skip = None  # only an output folder nested inside the input is left out
    files = images_under(path, IMAGE_EXTENSIONS, skip)
    if not files:
        raise DataError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) found under '{path}'.")
    return path, files


def output_path(out_dir: Path, rel: Path, dtype: np.dtype, taken: Set[Path]) -> Path:
    """Where the translation of `rel` goes: the same relative path, PNG when the format is 8-bit only."""
    if dtype != np.uint16 or rel.suffix.lower() not in EIGHT_BIT_ONLY:
        return out_dir / rel
    png = rel.with_suffix(".png")
    if png in taken:  # an input of that name exists beside it
        png = rel.with_name(rel.name + ".png")
    return out_dir / png


def check_outputs_free(out_dir: Path, root: Path, files: List[Path], dtypes: Tuple[np.dtype, ...]) -> None:
    """Raise TranslateError if `out_dir` holds files that translating `files` would replace, for any
    dtype in `dtypes` the translations may have (16-bit results of 8-bit-only formats become PNG)."""
    taken = {p.relative_to(root) for p in files}
    found = (output_path(out_dir, p.relative_to(root), dtype, taken) for p in files for dtype in dtypes)
    in_the_way = [dest for dest in dict.fromkeys(found) if dest.is_file()]
    if in_the_way:
        n = len(in_the_way)
        raise TranslateError(
            f"the output folder '{out_dir}' already holds {n} file{'s' if n > 1 else ''} of the names translations "
            f"are written under, e.g. '{in_the_way[0]}'; choose another output folder, or pass --overwrite to "
            "replace them."
        )


# --- folders ----------------------------------------------------------------------------------


def translate_arrays(
    artifact: TranslatorArtifact,
    images: np.ndarray,
    device: Union[str, torch.device] = "cpu",
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    strength: float = 1.0,
    units: str = "target",
) -> np.ndarray:
    """(N, H, W, C) uint8/uint16 images -> (N, H, W, C_out) translations in `units` (target or input)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
    strengths = torch.full((len(images),), float(strength))

    def translate(unit: torch.Tensor) -> torch.Tensor:
        if tile is None:
            return translate_unit(artifact, unit, strengths, keep_input_channels=False)
        return translate_tiled(artifact, unit, tile, overlap, strength)

    return translate_raw(artifact, x, translate, units).permute(0, 2, 3, 1).cpu().numpy()


def translate_folder(
    artifact_path: PathLike,
    input: PathLike,
    output: PathLike,
    batch_size: int = 8,
    device: str = "cpu",
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    strength: float = 1.0,
    progress: bool = True,
    max_image_pixels: Optional[int] = MAX_IMAGE_PIXELS,
    units: str = "target",
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Translate every image under `input` (a folder, searched recursively, or one file) into `output`.

    ``units="target"`` writes the target domain's dtype and raw value range, ``"input"`` each
    input's own. An `output` that already holds files of the names it would write is refused
    unless ``overwrite``.

    Unreadable images, and images of more than `max_image_pixels` (width x height; None or 0: no
    limit), are reported on stderr and skipped. Returns a summary: ``translated`` and
    ``skipped`` counts, ``written`` output paths, ``skipped_files`` {path: reason} and
    ``renamed`` {input: output} for 16-bit results written as PNG instead of an 8-bit-only format.
    """
    if units not in UNITS:
        raise TranslateError(f"units must be one of {', '.join(UNITS)}, got {units!r}.")
    if batch_size < 1:
        raise TranslateError(f"batch size must be a positive integer, got {batch_size}.")
    if not 0.0 <= strength <= 1.0:
        raise TranslateError(f"strength must be in [0, 1], got {strength}.")
    if tile is not None:
        overlap = tile // 4 if overlap is None else overlap
        check_tiling(tile, overlap)
    out_dir = Path(output)
    root, files = find_images(input, exclude=out_dir)
    if out_dir.resolve() == root.resolve():
        raise TranslateError(f"the output folder '{out_dir}' is the input folder: translations would overwrite the originals.")
    artifact = load_artifact(artifact_path)
    if not overwrite:  # before any work: a folder of real images is never replaced by accident
        target = np.dtype(np.uint16 if artifact.meta["output"]["bit_depth"] == 16 else np.uint8)
        check_outputs_free(out_dir, root, files, (target,) if units == "target" else (np.dtype(np.uint8), np.dtype(np.uint16)))
    ensure_writable_dir(out_dir, "output folder")  # before any work
    if tile is not None:
        check_tiling(tile, tile // 4 if overlap is None else overlap, artifact.size_multiple)
    try:  # fail on a bad artifact or device before reading any image
        artifact.module(device)
    except RuntimeError as exc:
        raise TranslateError(f"cannot load {artifact.path} on device '{device}': {str(exc).splitlines()[0]}") from None
    taken = {p.relative_to(root) for p in files}

    summary: Dict[str, Any] = {"translated": 0, "skipped": 0, "written": [], "skipped_files": {}, "renamed": {}}
    bar = tqdm(total=len(files), unit="img", desc="translate", disable=not progress or not sys.stderr.isatty())

    def skip(path: Path, reason: str) -> None:
        summary["skipped"] += 1
        summary["skipped_files"][str(path)] = reason
        bar.write(f"warning: skipped {path}: {reason}", file=sys.stderr)
        bar.update(1)

    for items in _decoded_batches(files, batch_size, skip, max_image_pixels):
        try:
            fakes = translate_arrays(artifact, np.stack([img for _, img in items]), device, tile, overlap, strength, units)
        except CycleCMDAError as exc:
            for path, _ in items:
                skip(path, str(exc))
            continue
        except RuntimeError as exc:  # e.g. too small for the network, or out of memory: try --tile
            reason = f"the network failed on it ({str(exc).splitlines()[0]}); for large images try --tile"
            for path, _ in items:
                skip(path, reason)
            continue
        for (path, _), fake in zip(items, fakes):
            rel = path.relative_to(root)
            dest = output_path(out_dir, rel, fake.dtype, taken)
            if dest.suffix != rel.suffix and not summary["renamed"]:
                bar.write(f"note: 16-bit results cannot be stored as {rel.suffix}; writing PNG instead "
                          f"(first: {path} -> {dest})", file=sys.stderr)
            try:
                write_image(dest, fake)
            except OutputError:
                bar.close()
                raise  # the output location failed, not this image: stop
            except CycleCMDAError as exc:
                skip(path, _reason(exc, dest))
                continue
            if dest.suffix != rel.suffix:
                summary["renamed"][str(path)] = str(dest)
            summary["translated"] += 1
            summary["written"].append(str(dest))
            bar.update(1)
    bar.close()
    return summary


def _decoded_batches(
    files: List[Path], batch_size: int, skip: Callable[[Path, str], None], max_pixels: Optional[int]
) -> Iterator[List[Tuple[Path, np.ndarray]]]:
    """Decoded images in stackable lists (one shape and dtype) of at most `batch_size`; failures go to `skip`.

    Files are grouped by the size their headers give, so at most `batch_size` images are held.
    """
    by_size: Dict[Tuple[int, int], List[Path]] = defaultdict(list)
    for path in files:
        try:
            info = probe_image(path, max_pixels, "--max-image-pixels")
        except DataError as exc:
            skip(path, _reason(exc, path))
            continue
        by_size[(info.height, info.width)].append(path)
    for paths in by_size.values():
        for start in range(0, len(paths), batch_size):
            groups: Dict[Tuple[Tuple[int, ...], np.dtype], List[Tuple[Path, np.ndarray]]] = defaultdict(list)
            for path in paths[start:start + batch_size]:
                try:
                    img = read_image(path, max_pixels, "--max-image-pixels")
                except DataError as exc:
                    skip(path, _reason(exc, path))
                    continue
                groups[(img.shape, img.dtype)].append((path, img))  # the decoder has the last word
            yield from groups.values()


def _reason(exc: Exception, path: Path) -> str:
    """The error message without its leading 'path: ' (the warning line names the file already)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def format_summary(summary: Dict[str, Any]) -> str:
    """One line: 'translated N, skipped M' (plus how many were written as PNG)."""
    line = f"translated {summary['translated']}, skipped {summary['skipped']}"
    if summary["renamed"]:
        line += f" ({len(summary['renamed'])} written as PNG: 16-bit)"
    return line

