"""Standalone translator artifacts: exported networks (``torch.export``, ONNX, TorchScript) plus ``meta.json``.

An artifact folder (one per direction) holds

- ``model.pt2`` (the default): a ``torch.export`` ExportedProgram of the generator,
  (B, C_in, H, W) float in [-1, 1] -> (B, C_out, H, W) in [-1, 1], with dynamic batch, height and
  width: H and W any multiples of ``size_multiple`` from ``min_input_size`` on. Load it with
  ``torch.export.load(path).module()``; the package's loaders pad other sizes (by reflection, as
  in training) and crop the result back, so any image size works through them.
- ``model.onnx`` (when asked): the same program through the dynamo ONNX exporter, with the
  same dynamic shapes.
- ``model.ts`` (legacy, when asked): a TorchScript module that pads any H and W itself.
  TorchScript is deprecated in PyTorch; artifacts holding only ``model.ts`` still load.
- ``weights.pt``: the bare generator state dict (``torch.load(weights_only=True)``).
- ``meta.json``: direction, channels, bit depth and value range of each side, the size multiple,
  the network's registry name and arguments, package version, resolved training config and the
  source checkpoint's SHA-256.

With ``task=True`` (``cyclecmda export --task``) a checkpoint trained with ``loss.semantic`` also
gives ``downstream/``: the downstream model, trained on translated A images, as a standalone classifier
(``(B, K)`` logits) or segmenter (``(B, K, H, W)`` logits) of B images, in the same layout, its
class names in ``meta.json``'s ``task`` entry.

Loading needs only torch (``torch.export.load``) or onnxruntime, never this package.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
from torch import nn

from cyclecmda import __version__
from cyclecmda.errors import CycleCMDAError, short_reason, unknown
from cyclecmda.export.artifact import PaddedNetwork
from cyclecmda.export.artifact_checks import FORMAT, FORMAT_VERSION
from cyclecmda.files import atomic_write, ensure_writable_dir, output_error, sha256_of
from cyclecmda.method.cyclegan import stored_generator
from cyclecmda.models.detector import Detector, FixedDetections, SmallDetector
from cyclecmda.models.generators import size_multiple
from cyclecmda.models.task import build_task_network
from cyclecmda.train.checkpoint import load_checkpoint, save_to

EXPORT_FORMAT = FORMAT  # meta.json's marker and the newest layout, as the loaders check them
EXPORT_FORMAT_VERSION = FORMAT_VERSION
DIRECTIONS = ("a2b", "b2a")
FORMATS = ("pt2", "torchscript", "onnx")
DEFAULT_FORMATS = ("pt2",)
MAX_SIZE = 16384  # largest height or width an exported program takes
TASK_FOLDER = "downstream"  # export --task: the semantic term's downstream model, under its own name
TASK_SIZE_MULTIPLE = 16  # exported task networks take multiples of this (loaders pad other sizes)
MAX_BATCH = 65536
ARTIFACT_FILES = ("meta.json", "weights.pt", "model.pt2", "model.onnx", "model.ts")  # what an export writes
PathLike = Union[str, Path]


class ExportError(CycleCMDAError):
    """An export was asked for something the checkpoint or the installed tools cannot give."""


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
    formats: Sequence[str] = DEFAULT_FORMATS,
    task: bool = False,
    overwrite: bool = False,
) -> List[Path]:
    """Write one artifact folder per direction (``out_dir/a2b``, ``out_dir/b2a``), and with
    ``task`` the downstream model (``out_dir/downstream``); return them. A folder that already holds
    an export is refused unless ``overwrite``."""
    for d in directions:
        if d not in DIRECTIONS:
            raise unknown("direction", d, DIRECTIONS, ExportError, also="both")
    for f in formats:
        if f not in FORMATS:
            raise unknown("export format", f, FORMATS, ExportError)
    names = [*directions, *([TASK_FOLDER] if task else [])]
    if not overwrite:
        _check_no_export(Path(out_dir), names)
    ckpt = load_checkpoint(checkpoint)  # before anything is created
    if task and not ckpt.get("semantic"):
        raise ExportError(f"'{checkpoint}' holds no task network: --task needs a run trained with "
                          "loss.semantic.kind=class, mask or boxes.")
    ensure_writable_dir(out_dir, "export folder")
    digest = sha256_of(checkpoint)
    with _staging(Path(out_dir)) as stage:  # a failed export leaves nothing behind
        for direction in directions:
            _export_generator(ckpt, direction, stage / direction, formats, digest, Path(checkpoint).name)
        if task:
            _export_task(ckpt, stage / TASK_FOLDER, formats, digest, Path(checkpoint).name)
        return [_publish(stage / name, Path(out_dir) / name) for name in names]


def _export_generator(ckpt: Dict[str, Any], direction: str, folder: Path, formats: Sequence[str], digest: str,
                      name: str) -> Path:
    """One direction's generator as an artifact folder."""
    spec = ckpt["networks"]["gen_ab" if direction == "a2b" else "gen_ba"]
    gen = stored_generator(ckpt, direction)
    src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
    ensure_writable_dir(folder, "export folder")
    in_channels = spec["args"]["in_channels"]
    multiple = size_multiple(gen)
    files, min_size = _save_formats(gen, PaddedNetwork(gen, multiple), in_channels, multiple, formats, folder,
                                    "translated")
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "direction": direction,
        "input": _side(ckpt["config"], ckpt["value_ranges"], src),
        "output": _side(ckpt["config"], ckpt["value_ranges"], dst),
        "value_scaling": "model = 2 * (clip(raw, lo, hi) - lo) / (hi - lo) - 1 on input; the inverse on output",
        **_program_meta(ckpt, spec, files, multiple, min_size, digest, name),
    }
    _write_meta(meta, folder)
    return folder


def _program_meta(ckpt: Dict[str, Any], spec: Dict[str, Any], files: Dict[str, str], multiple: int, min_size: int,
                  digest: str, name: str) -> Dict[str, Any]:
    """The meta.json entries every exported network has: the sizes its programs take, its network,
    files, and where it came from."""
    return {
        "size_multiple": multiple,
        # model.pt2 and model.onnx take H, W: multiples of size_multiple, at least min_input_size
        "min_input_size": min_size,
        "onnx_min_input_size": min_size,
        "network": spec,
        "files": files,
        "package_version": __version__,
        "checkpoint": {"file": name, "sha256": digest, "step": ckpt["progress"]["step"]},
        "config": ckpt["config"],
    }


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside the artifacts that they are written into, removed at the end."""
    stage = out_dir / f".export-{os.getpid()}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(new: Path, dest: Path) -> Path:
    """Move a complete artifact folder into place, replacing what was there only once it is complete."""
    old = dest.with_name(f".{dest.name}-{os.getpid()}.old")
    try:
        if dest.is_dir() and not dest.is_symlink():
            dest.replace(old)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        new.replace(dest)
    except OSError as exc:
        raise output_error(exc, dest, "export folder") from None
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _check_no_export(out_dir: Path, folders: Sequence[str]) -> None:
    """Raise ExportError if one of the folders under `out_dir` already holds files of an export."""
    for name in folders:
        found = [f for f in ARTIFACT_FILES if (out_dir / name / f).is_file()]
        if found:
            raise ExportError(
                f"'{out_dir / name}' already holds an export ({', '.join(found)}); choose another output folder "
                "(-o), or pass --overwrite to replace it."
            )


def _write_meta(meta: Dict[str, Any], folder: Path) -> None:
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(folder / "meta.json", lambda tmp: tmp.write_text(text))


def _export_task(ckpt: Dict[str, Any], folder: Path, formats: Sequence[str], digest: str, name: str) -> Path:
    """The downstream model of a semantic run (trained on translations) as an artifact: logits of B
    images, class names in meta."""
    semantic = ckpt["semantic"]
    spec = semantic["networks"][TASK_FOLDER]
    prefix = TASK_FOLDER + "."
    kind, classes = semantic["kind"], list(semantic["classes"])
    net: nn.Module = Detector(spec["name"], **spec["args"]) if kind == "boxes" else build_task_network(spec)
    net.load_state_dict({k[len(prefix):]: v for k, v in semantic["state"].items() if k.startswith(prefix)})
    net.eval()
    ensure_writable_dir(folder, "export folder")
    in_channels = spec["args"]["in_channels"]
    if kind == "boxes":  # the detector's decoded detections, one fixed shape
        assert isinstance(net.net, SmallDetector)
        program = FixedDetections(net.net).eval()
        files, min_size = _save_formats(program, program, in_channels, TASK_SIZE_MULTIPLE, formats, folder, "detections")
        classes = classes[1:]  # the boxes' classes (the segmenters' background is no detector class)
        output = (f"(B, {net.net.max_detections}, 6) detections, strongest first: x_min, y_min, x_max, y_max in "
                  "pixels, score, class index (fewer rows on images with fewer positions)")
        out_meta: Dict[str, Any] = {"detections": net.net.max_detections, "classes": classes}
    else:
        files, min_size = _save_formats(net, net, in_channels, TASK_SIZE_MULTIPLE, formats, folder, "logits")
        output = "(B, K) class logits" if kind == "class" else "(B, K, H, W) per-pixel class logits"
        out_meta = {"channels": len(classes), "classes": classes}
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "direction": TASK_FOLDER,
        "task": {"kind": kind, "classes": classes, "output": output,
                 "trained_on": "translations of A training images with their labels"},
        "input": _side(ckpt["config"], ckpt["value_ranges"], "b"),
        "output": out_meta,
        "value_scaling": "model = 2 * (clip(raw, lo, hi) - lo) / (hi - lo) - 1 on input",
        **_program_meta(ckpt, spec, files, TASK_SIZE_MULTIPLE, min_size, digest, name),
    }
    _write_meta(meta, folder)
    return folder


def smallest_input(net: nn.Module, in_channels: int, multiple: int, limit: int = 64) -> int:
    """The smallest square size, a multiple of ``multiple``, that ``net`` runs on (a ResNet
    generator needs two positions left after its downsampling, a classifier one after its pooling)."""
    for k in range(1, limit + 1):
        try:
            with torch.no_grad():
                net.eval()(torch.zeros(1, in_channels, k * multiple, k * multiple))
            return k * multiple
        except (RuntimeError, ValueError):
            continue
    raise ExportError(f"the network runs on no input size up to {limit * multiple} px; it cannot be exported.")


def _save_formats(net: nn.Module, scriptable: nn.Module, in_channels: int, multiple: int, formats: Sequence[str],
                  folder: Path, output: str) -> Tuple[Dict[str, str], int]:
    """Write the weights and each asked format of one network into ``folder``: the ``files``
    entry of meta.json, and the smallest height and width the exported programs take."""
    files: Dict[str, str] = {"weights": "weights.pt"}
    state = net.state_dict()
    atomic_write(folder / "weights.pt", lambda tmp: save_to(state, tmp))
    min_size = smallest_input(net, in_channels, multiple)
    if "pt2" in formats or "onnx" in formats:
        program, min_size = _export_program(net.eval(), in_channels, multiple, min_size)
    if "pt2" in formats:
        files["pt2"] = "model.pt2"
        _save_pt2(program, folder / "model.pt2")
    if "torchscript" in formats:
        files["torchscript"] = "model.ts"
        _save_torchscript(scriptable, folder / "model.ts")
    if "onnx" in formats:
        files["onnx"] = "model.onnx"
        _save_onnx(program, folder / "model.onnx", output)
    return files, min_size


def _export_program(net: nn.Module, in_channels: int, multiple: int, min_size: int) -> Tuple[Any, int]:
    """``torch.export`` of ``net`` with dynamic batch, height and width (multiples of ``multiple``
    from ``min_size`` on), checked at its smallest size; and that size. A network whose graph
    depends on a size being above 1 somewhere inside (e.g. 1x1 maps after pooling) gets the next
    multiple as its smallest size."""
    from torch.export import Dim

    smallest = -(-min_size // multiple)
    for k in range(smallest, smallest + 3):
        example = torch.zeros(2, in_channels, (k + 1) * multiple, (k + 2) * multiple)
        shapes = ({0: Dim("batch", min=1, max=MAX_BATCH), 2: multiple * Dim("h", min=k, max=MAX_SIZE // multiple),
                   3: multiple * Dim("w", min=k, max=MAX_SIZE // multiple)},)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(net, (example,), dynamic_shapes=shapes)
        except Exception as exc:  # the exporter's failures come in many types
            raise ExportError(f"torch.export could not export this network ({short_reason(exc)}); "
                              "export it with --format torchscript instead.") from None
        try:
            with torch.no_grad():
                program.module()(torch.zeros(1, in_channels, k * multiple, k * multiple))
            return program, k * multiple
        except Exception:  # a guard of the traced graph excludes this size
            continue
    raise ExportError(f"torch.export gave no program that runs at {smallest * multiple} to "
                      f"{(smallest + 2) * multiple} px; export it with --format torchscript instead.")


def _save_pt2(program: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)))  # the .pt2 suffix is kept


def _save_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
        scripted = torch.jit.script(module.eval())
    atomic_write(path, lambda tmp: scripted.save(str(tmp)))


def _save_onnx(program: Any, path: Path, output: str) -> None:
    """The exported program through the dynamo ONNX exporter: the same dynamic batch, height and width."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' and 'onnxscript' packages: "
                          "pip install 'cyclecmda[onnx]' (or pip install onnx onnxscript onnxruntime)") from None
    def write(tmp: Path) -> None:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
                warnings.simplefilter("ignore")
                torch.onnx.export(program, dynamo=True, f=str(tmp), input_names=["image"], output_names=[output],
                                  external_data=False, verbose=False)
        except OSError:
            raise
        except Exception as exc:  # the exporter's failures come in many types
            raise ExportError(f"the ONNX exporter could not export this network ({short_reason(exc)}).") from None

    atomic_write(path, write)
