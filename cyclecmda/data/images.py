"""Image files: header probing, decoding at native bit depth, channel conversion, writing.

Decoding keeps 16-bit data as ``uint16`` (never clipped to 255); arrays are HWC. A file whose
header claims more than a limit of pixels (default :data:`MAX_IMAGE_PIXELS`) is refused before
any pixel is decoded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from cyclecmda.errors import DataError
from cyclecmda.files import output_error

cv2.setNumThreads(0)  # decoding runs in DataLoader workers; one thread each
try:  # OpenCV prints its own decoder warnings to stderr; our errors say it better
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass

PathLike = Union[str, Path]
LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B
# Largest width x height decoded by default: the size at which PIL refuses a file as a decompression bomb.
MAX_IMAGE_PIXELS = 2 * 89478485
LIMIT_SETTING = "data.max_image_pixels"

# PIL mode -> (channels, bit depth); None marks modes we cannot convert.
_PIL_MODES = {
    "1": (1, 8),
    "L": (1, 8),
    "P": (3, 8),
    "LA": (2, 8),
    "La": (2, 8),
    "PA": (4, 8),
    "RGB": (3, 8),
    "RGBA": (4, 8),
    "RGBa": (4, 8),
    "RGBX": (4, 8),
    "I;16": (1, 16),
    "I;16L": (1, 16),
    "I;16B": (1, 16),
    "I;16N": (1, 16),
}


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says: size, channels and bit depth per channel; ``palette``: a PNG of
    palette indices (its channels are the palette's colours)."""

    width: int
    height: int
    channels: int
    bit_depth: int
    format: str
    palette: bool = False


def check_pixels(path: PathLike, width: int, height: int, max_pixels: Optional[int], setting: str) -> None:
    """Raise DataError if width x height exceeds `max_pixels` (None or 0: no limit), naming `setting`."""
    if max_pixels and width * height > max_pixels:
        raise DataError(
            f"{path}: {width}x{height} is {width * height} pixels, more than the limit of {max_pixels} "
            f"({setting}); raise {setting}, or set it to 0 for no limit, if your images really are this large."
        )


def _open_header(fp: BinaryIO) -> ImageFile.ImageFile:
    """Parse an image header as ``Image.open`` does, without PIL's decompression-bomb check.

    That check reads a process-wide setting and warns or raises by its own threshold; the callers
    here compare the size with their own limit (:func:`check_pixels`) instead.
    """
    Image.init()
    prefix = fp.read(16)
    if not prefix:
        raise UnidentifiedImageError("empty file, 0 bytes")
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:  # some plugins' tests read more bytes than a tiny file has
            verdict = accept(prefix) if accept else True
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
        if not verdict or isinstance(verdict, str):  # a string explains why the plugin declines
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError("cannot identify image file")


def probe_image(path: PathLike, max_pixels: Optional[int] = MAX_IMAGE_PIXELS, setting: str = LIMIT_SETTING) -> ImageInfo:
    """Read only the header of an image file; raise DataError if it is not a usable image.

    An image of more than `max_pixels` (None or 0: no limit) is not usable; the error names `setting`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            im = _open_header(f)
            mode, fmt, (w, h) = im.mode, (im.format or "?"), im.size
            tiff_bits = getattr(im, "tag_v2").get(258) if fmt == "TIFF" else None  # BitsPerSample
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}).") from None
    check_pixels(path, w, h, max_pixels, setting)
    if fmt == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        # IHDR: width, height, bit depth, colour type at byte offsets 16..25
        bits, colour = head[24], head[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 0)
        return ImageInfo(w, h, channels, 16 if bits == 16 else 8, fmt, palette=colour == 3)
    if tiff_bits is not None:
        bits_t = tuple(tiff_bits) if isinstance(tiff_bits, (tuple, list)) else (int(tiff_bits),)
        bits = max(bits_t)
        if bits not in (1, 8, 16):
            raise DataError(f"{path}: {bits}-bit TIFF samples are not supported (8 or 16 bit only).")
        channels = len(bits_t) if len(bits_t) > 1 else _PIL_MODES.get(mode, (1, 8))[0]
        return ImageInfo(w, h, channels, 16 if bits == 16 else 8, fmt)
    if mode not in _PIL_MODES:
        raise DataError(
            f"{path}: pixel mode '{mode}' is not supported; use 8- or 16-bit gray, RGB or RGBA images."
        )
    channels, bits = _PIL_MODES[mode]
    return ImageInfo(w, h, channels, bits, fmt)


def _header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from an encoded image's header; None when PIL cannot parse it (the decoder decides)."""
    try:
        return _open_header(io.BytesIO(data)).size
    except Exception:  # any parse failure: the decoder reports the file as undecodable
        return None


def read_image(path: PathLike, max_pixels: Optional[int] = MAX_IMAGE_PIXELS, setting: str = LIMIT_SETTING) -> np.ndarray:
    """Decode an image to an (H, W, C) array of uint8 or uint16, channels in RGB(A) order.

    The header's size is checked against `max_pixels` (None or 0: no limit) before decoding, so an
    oversized file raises DataError (naming `setting`) without its pixels ever being allocated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    if not data:
        raise DataError(f"{path}: not a readable image (empty file, 0 bytes).")
    size = _header_size(data) if max_pixels else None
    if size is not None:
        check_pixels(path, *size, max_pixels, setting)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # OpenCV's own limit, 2**30 pixels unless raised
            raise DataError(
                f"{path}: OpenCV refuses to decode images this large; set the environment variable "
                "OPENCV_IO_MAX_IMAGE_PIXELS to a larger pixel count before starting cyclecmda."
            ) from None
        raise DataError(f"{path}: cannot be decoded ({str(exc).strip().splitlines()[-1]}).") from None
    if img is None:
        raise DataError(f"{path}: cannot be decoded (empty, truncated or corrupt image file).")
    if size is None:  # a format whose header PIL cannot read: check what was decoded
        check_pixels(path, img.shape[1], img.shape[0], max_pixels, setting)
    if img.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: {img.dtype} pixels are not supported; use 8- or 16-bit images.")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def convertible(src_channels: int, dst_channels: int) -> bool:
    """Whether an image with src_channels can be turned into dst_channels (1 or 3)."""
    return src_channels in (1, 2, 3, 4) and dst_channels in (1, 3)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert HWC gray / gray+alpha / RGB / RGBA to 1 (luma, BT.601) or 3 channels; keeps dtype."""
    c = img.shape[2]
    if not convertible(c, channels):
        raise ValueError(f"cannot convert {c}-channel image to {channels} channels")
    if c in (2, 4):  # drop alpha
        img = img[:, :, : c - 1]
        c -= 1
    if c == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    luma = img.astype(np.float32) @ np.array(LUMA, dtype=np.float32)
    info = np.iinfo(img.dtype)
    return np.clip(np.rint(luma), info.min, info.max).astype(img.dtype)[:, :, None]


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, channels, H, W): luma for 3 -> 1, replication for 1 -> 3, alpha dropped."""
    c = x.shape[1]
    if c in (2, 4):
        x, c = x[:, : c - 1], c - 1
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        # Python-scalar weights: no host-to-device copy, so no wait for the GPU inside a training step
        return x[:, 0:1] * LUMA[0] + x[:, 1:2] * LUMA[1] + x[:, 2:3] * LUMA[2]
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels.")


def write_image(path: PathLike, img: np.ndarray) -> Path:
    """Write an HWC (or HW) uint8/uint16 RGB(A) or gray array; the format follows the suffix.

    A failed write raises :class:`cyclecmda.files.OutputError` naming the path and the cause.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path.parent) from None
    if img.dtype == np.uint16 and path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise DataError(f"{path}: {path.suffix} cannot hold 16-bit pixels; write 16-bit images as .png or .tif.")
    arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(arr))
    if not ok:
        raise DataError(f"{path}: cannot encode a {img.dtype} image with shape {img.shape} as {path.suffix}.")
    tmp = path.with_name(path.name + ".tmp")
    try:
        buf.tofile(tmp)
        tmp.replace(path)
    except OSError as exc:
        raise output_error(exc, path) from None
    return path


def images_under(folder: Path, extensions: Iterable[str], exclude: Optional[Path] = None) -> List[Path]:
    """Files below ``folder`` (searched recursively) with one of ``extensions`` (any case), sorted;
    none below the resolved folder ``exclude``."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file()
                  and not (exclude is not None and p.resolve().is_relative_to(exclude)))


def to_model(unit: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> the networks' [-1, 1]."""
    return unit * 2 - 1


def from_model(x: torch.Tensor) -> torch.Tensor:
    """The networks' values in [-1, 1] -> [0, 1], clipped."""
    return ((x + 1) / 2).clamp(0, 1)

