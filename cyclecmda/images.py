"""Image files: header probing, decoding at native bit depth, channel conversion, writing.

Decoding keeps 16-bit data as ``uint16`` (never clipped to 255); arrays are HWC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cyclecmda.errors import DataError

cv2.setNumThreads(0)  # decoding runs in DataLoader workers; one thread each
try:  # OpenCV prints its own decoder warnings to stderr; our errors say it better
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass

PathLike = Union[str, Path]
LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B

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
    """What a file's header says: size, channels and bit depth per channel."""

    width: int
    height: int
    channels: int
    bit_depth: int
    format: str


def probe_image(path: PathLike) -> ImageInfo:
    """Read only the header of an image file; raise DataError if it is not a usable image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode, fmt, (w, h) = im.mode, (im.format or "?"), im.size
            tiff_bits = im.tag_v2.get(258) if fmt == "TIFF" else None  # BitsPerSample
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}).") from None
    if fmt == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        # IHDR: width, height, bit depth, colour type at byte offsets 16..25
        bits, colour = head[24], head[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 0)
        return ImageInfo(w, h, channels, 16 if bits == 16 else 8, fmt)
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


def read_image(path: PathLike) -> np.ndarray:
    """Decode an image to an (H, W, C) array of uint8 or uint16, channels in RGB(A) order."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"{path}: cannot be decoded (empty, truncated or corrupt image file).")
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
    """Write an HWC (or HW) uint8/uint16 RGB(A) or gray array; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    buf.tofile(tmp)
    tmp.replace(path)
    return path

