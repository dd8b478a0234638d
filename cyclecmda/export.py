"""Standalone translator artifacts: TorchScript (and ONNX) networks plus ``meta.json``.

An artifact folder (one per direction) holds

- ``model.ts``: TorchScript module, (B, C_in, H, W) float in [-1, 1] -> (B, C_out, H, W) in
  [-1, 1], any H and W: sizes that are not a multiple of the network's ``size_multiple`` are
  reflection-padded, translated and cropped back inside the module.
- ``model.onnx`` (when asked): the same computation, dynamic batch, height and width.
- ``weights.pt``: the bare generator state dict (``torch.load(weights_only=True)``).
- ``meta.json``: direction, channels, bit depth and value range of each side, the size multiple,
  the network's registry name and arguments, package version, resolved training config and the
  source checkpoint's SHA-256.

With ``task=True`` (``cyclecmda export --task``) a checkpoint trained with ``loss.semantic`` also
gives ``task_b/``: the task network trained on translated A images, as a standalone classifier
(``(B, K)`` logits) or segmenter (``(B, K, H, W)`` logits) of B images, in the same layout, its
class names in ``meta.json``'s ``task`` entry.

Loading needs only torch (``torch.jit.load``) or onnxruntime, never this package.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda import __version__
from cyclecmda.checkpoint import atomic_torch_save, load_checkpoint
from cyclecmda.cyclegan import build_network
from cyclecmda.errors import CycleCMDAError, short_reason
from cyclecmda.files import OutputError, ensure_writable_dir, output_error

EXPORT_FORMAT = "cyclecmda.export"
EXPORT_FORMAT_VERSION = 1
DIRECTIONS = ("a2b", "b2a")
FORMATS = ("torchscript", "onnx")
PathLike = Union[str, Path]


class ExportError(CycleCMDAError):
    """An export was asked for something the checkpoint or the installed tools cannot give."""


class PaddedTranslator(nn.Module):
    """A generator that accepts any H and W: pad up to its size multiple, translate, crop back.

    Padding reflects the image (replicates it where the image is too small to reflect).
    """

    def __init__(self, generator: nn.Module, size_multiple: int) -> None:
        super().__init__()
        self.generator = generator
        self.size_multiple = int(size_multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.size_multiple
        pad_h = (m - h % m) % m
        pad_w = (m - w % m) % m
        if pad_h > 0 or pad_w > 0:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, [0, pad_w, 0, pad_h], mode=mode)
        return self.generator(x)[:, :, :h, :w]


class _OnnxTranslator(PaddedTranslator):
    """The same computation without data-dependent branches, so it traces to dynamic ONNX shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.size_multiple
        x = F.pad(x, [0, (m - w % m) % m, 0, (m - h % m) % m], mode="reflect")
        return self.generator(x)[:, :, :h, :w]


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _side(cfg: Dict[str, Any], ranges: Dict[str, Sequence[float]], domain: str) -> Dict[str, Any]:
    dom = cfg["data"][domain]
    return {
        "domain": domain,
        "channels": dom["channels"],
        "bit_depth": dom["bit_depth"],
        "value_range": [float(v) for v in ranges[domain]],
    }


def export_checkpoint(
    checkpoint: PathLike,
    out_dir: PathLike,
    directions: Sequence[str] = DIRECTIONS,
    formats: Sequence[str] = ("torchscript",),
    task: bool = False,
) -> List[Path]:
    """Write one artifact folder per direction (``out_dir/a2b``, ``out_dir/b2a``), and with
    ``task`` the B task network (``out_dir/task_b``); return them."""
    for d in directions:
        if d not in DIRECTIONS:
            raise ExportError(f"unknown direction '{d}'; valid: a2b, b2a, both.")
    for f in formats:
        if f not in FORMATS:
            raise ExportError(f"unknown export format '{f}'; valid: {', '.join(FORMATS)}.")
    ensure_writable_dir(out_dir, "export folder")  # before any work
    ckpt = load_checkpoint(checkpoint)
    if task and not ckpt.get("semantic"):
        raise ExportError(f"'{checkpoint}' holds no task network: --task needs a run trained with "
                          "loss.semantic.kind=class or mask.")
    digest = sha256_of(checkpoint)
    written = []
    for direction in directions:
        name = "gen_ab" if direction == "a2b" else "gen_ba"
        spec = ckpt["networks"][name]
        gen = build_network(spec)
        gen.load_state_dict(ckpt["state"][name])
        gen.eval()
        src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
        folder = Path(out_dir) / direction
        ensure_writable_dir(folder, "export folder")
        files: Dict[str, str] = {"weights": "weights.pt"}
        atomic_torch_save(gen.state_dict(), folder / "weights.pt")
        if "torchscript" in formats:
            files["torchscript"] = "model.ts"
            _save_torchscript(PaddedTranslator(gen, gen.size_multiple), folder / "model.ts")
        if "onnx" in formats:
            files["onnx"] = "model.onnx"
            _save_onnx(_OnnxTranslator(gen, gen.size_multiple), spec["args"]["in_channels"], folder / "model.onnx")
        meta = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "direction": direction,
            "input": _side(ckpt["config"], ckpt["value_ranges"], src),
            "output": _side(ckpt["config"], ckpt["value_ranges"], dst),
            "value_scaling": "model = 2 * (clip(raw, lo, hi) - lo) / (hi - lo) - 1 on input; the inverse on output",
            "size_multiple": int(gen.size_multiple),
            # model.ts takes any size; model.onnx pads by reflection, which needs H, W >= size_multiple
            "onnx_min_input_size": int(gen.size_multiple),
            "network": spec,
            "files": files,
            "package_version": __version__,
            "checkpoint": {"file": Path(checkpoint).name, "sha256": digest, "step": ckpt["progress"]["step"]},
            "config": ckpt["config"],
        }
        _write_meta(meta, folder)
        written.append(folder)
    if task:
        written.append(_export_task(ckpt, Path(out_dir) / "task_b", formats, digest, Path(checkpoint).name))
    return written


def _write_meta(meta: Dict[str, Any], folder: Path) -> None:
    tmp = folder / "meta.json.tmp"
    try:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(folder / "meta.json")
    except OSError as exc:
        raise output_error(exc, folder / "meta.json") from None


def _export_task(ckpt: Dict[str, Any], folder: Path, formats: Sequence[str], digest: str, name: str) -> Path:
    """The B task network of a semantic run as an artifact: logits of B images, class names in meta."""
    from cyclecmda.semantic import load_task_network

    semantic = ckpt["semantic"]
    spec = semantic["networks"]["task_ab"]  # the task network trained on translations
    state = {k[len("task_ab."):]: v for k, v in semantic["state"].items() if k.startswith("task_ab.")}
    net = load_task_network(spec, state).eval()
    ensure_writable_dir(folder, "export folder")
    files: Dict[str, str] = {"weights": "weights.pt"}
    atomic_torch_save(net.state_dict(), folder / "weights.pt")
    in_channels = spec["args"]["in_channels"]
    if "torchscript" in formats:
        files["torchscript"] = "model.ts"
        _save_torchscript(net, folder / "model.ts")
    if "onnx" in formats:
        files["onnx"] = "model.onnx"
        _save_onnx(net, in_channels, folder / "model.onnx", output="logits")
    kind, classes = semantic["kind"], list(semantic["classes"])
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "direction": "task_b",
        "task": {"kind": kind, "classes": classes,
                 "output": "(B, K) class logits" if kind == "class" else "(B, K, H, W) per-pixel class logits",
                 "trained_on": "translations of A training images with their labels (and labelled real B, if any)"},
        "input": _side(ckpt["config"], ckpt["value_ranges"], "b"),
        "output": {"channels": len(classes), "classes": classes},
        "value_scaling": "model = 2 * (clip(raw, lo, hi) - lo) / (hi - lo) - 1 on input",
        "size_multiple": 1,
        "onnx_min_input_size": 4,
        "network": spec,
        "files": files,
        "package_version": __version__,
        "checkpoint": {"file": name, "sha256": digest, "step": ckpt["progress"]["step"]},
        "config": ckpt["config"],
    }
    _write_meta(meta, folder)
    return folder


def _save_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
        scripted = torch.jit.script(module.eval())
    tmp = path.with_name(path.name + ".tmp")
    try:
        scripted.save(str(tmp))
        tmp.replace(path)
    except OSError as exc:
        raise output_error(exc, path) from None
    except RuntimeError as exc:  # torch's writer reports a failed write in its own words
        raise OutputError(f"cannot write to '{path}': {short_reason(exc)}.") from None


def _save_onnx(module: nn.Module, in_channels: int, path: Path, output: str = "translated") -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package: pip install onnx onnxruntime") from None
    multiple = int(getattr(module, "size_multiple", 4))
    example = torch.zeros(1, in_channels, 2 * multiple + 3, 2 * multiple + 5)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=[output],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                          output: {0: "batch"} if output == "logits" else {0: "batch", 2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)
