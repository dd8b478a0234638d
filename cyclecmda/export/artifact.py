"""Loading and running exported artifacts (translators and task networks): the checked
``meta.json`` and program, padding to the sizes a program takes, and the pixel work on tensors.

Pixel values travel as a "unit" scale, [0, 1]. A pipeline image maps to it by its dtype: float
images are taken as already in [0, 1]; uint8 / uint16 images use the artifact's value range for
that side when the bit depth matches (as in training), else the full range of the dtype. The
output leaves in one of two units (:func:`output_units`): ``"input"`` goes back through the same
mapping, so an image keeps the dtype and range it came in; ``"target"`` gives the target domain's
dtype and raw range as trained (uint16 counts of a 16-bit camera, uint8 of an 8-bit one).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from cyclecmda.data.images import convert_channels, from_model, to_model
from cyclecmda.errors import short_reason
from cyclecmda.export.artifact_checks import ArtifactError, check_meta, program_channels, read_pt2

PathLike = Union[str, Path]
__all__ = ["ArtifactError", "TranslatorArtifact", "load_artifact", "translate_unit", "translate_raw"]


RUNTIMES = ("torch", "onnxruntime")


def check_runtime(runtime: str, device: Union[str, torch.device, None] = None) -> str:
    """``runtime`` if it is one of RUNTIMES (and can run on ``device``), else ValueError."""
    if runtime not in RUNTIMES:
        raise ValueError(
            f"runtime must be 'torch' (model.pt2, or a legacy model.ts, on any device) or 'onnxruntime' "
            f"(model.onnx in ONNX Runtime, on the CPU), got {runtime!r}."
        )
    if runtime == "onnxruntime" and device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"runtime='onnxruntime' runs on the CPU, not on {device!r}; use runtime='torch' there.")
    return runtime


class TranslatorArtifact:
    """An exported translator or task network (``meta.json`` + ``model.pt2``, or the legacy
    ``model.ts``); the network loads on first use. A task network (``cyclecmda export --task``) has
    a ``task`` entry (kind, class names). Images smaller than the network's ``min_input_size`` are
    padded (replicating their edge) for it and cropped back.

    Every file ``meta.json`` names must resolve (symbolic links followed) inside the artifact
    folder; an entry pointing elsewhere is refused before anything is loaded.
    """

    def __init__(self, path: PathLike, runtime: str = "torch") -> None:
        self.path = Path(path)
        self.runtime = check_runtime(runtime)
        if not self.path.is_dir():
            what = "does not exist" if not self.path.exists() else "is a file, not an artifact folder"
            raise ArtifactError(
                f"'{self.path}' {what}: an exported translator is a folder with meta.json (make one with "
                "'cyclecmda export CHECKPOINT -o OUT_DIR', then use OUT_DIR/a2b or OUT_DIR/b2a)."
            )
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise ArtifactError(
                f"'{self.path}' is not an exported translator: no meta.json in it "
                "(make one with 'cyclecmda export CHECKPOINT -o OUT_DIR', then use OUT_DIR/a2b or OUT_DIR/b2a)."
            )
        if not meta_path.resolve().is_relative_to(self.path.resolve()):
            raise ArtifactError(
                f"{meta_path} is a symbolic link leading out of the artifact folder; an export's meta.json must "
                f"be inside '{self.path}', so it was not read (re-export it with 'cyclecmda export')."
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(
                f"{meta_path} is not valid JSON ({short_reason(exc)}); re-export it with 'cyclecmda export'.") from None
        self.meta = check_meta(meta, meta_path)
        self.files = {kind: self._inside(meta_path, f"files.{kind}", name) for kind, name in self.meta["files"].items()}
        self.format = next((f for f in ("pt2", "torchscript") if f in self.files), None)
        if runtime == "onnxruntime":
            if "onnx" not in self.files:
                raise ArtifactError(f"{self.path} has no model.onnx for runtime='onnxruntime'; export one with "
                                    "'cyclecmda export CHECKPOINT --format pt2,onnx', or use runtime='torch'.")
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise ArtifactError("runtime='onnxruntime' needs the onnxruntime package (pip install onnxruntime, "
                                    "or this package's [onnx] extra).") from None
            self.format = "onnx"
        if self.format is None:
            raise ArtifactError(f"{self.path} has no PyTorch network (model.pt2 or model.ts); re-export it with "
                                "'cyclecmda export' (the default format, pt2).")
        self.in_channels: int = self.meta["input"]["channels"]
        self.out_channels: int = self.meta["output"]["channels"]
        self.size_multiple: int = self.meta["size_multiple"]
        self.min_input_size: int = self.meta.get("min_input_size", 1)
        self.task: Optional[Dict] = self.meta.get("task")
        self.classes: List[str] = list(self.task["classes"]) if self.task else []
        self._modules: Dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()

    def _inside(self, meta_path: Path, key: str, name: object) -> Path:
        """The resolved path of a file of the artifact (``key`` names the entry in messages), which
        must lie inside the artifact folder, symbolic links followed."""
        folder = self.path.resolve()
        target = (folder / name).resolve() if isinstance(name, str) and name else None
        if target is None or target == folder or not target.is_relative_to(folder):
            raise ArtifactError(
                f"{meta_path}: {key} = {name!r} points outside the artifact folder; an export's files "
                f"must be inside '{self.path}' (re-export it with 'cyclecmda export')."
            )
        return target

    def module(self, device: Union[str, torch.device]) -> torch.nn.Module:
        """The network on `device` in this artifact's runtime, loaded once per device."""
        key = str(torch.device(device))
        with self._lock:
            if key not in self._modules:
                min_size = self.min_input_size
                if self.format == "onnx":
                    check_runtime(self.runtime, key)
                    session = OnnxRuntimeNetwork(self.files["onnx"])
                    min_size = self.meta.get("onnx_min_input_size", min_size)
                    self._check_channels(self.files["onnx"], session.channels)
                    net: torch.nn.Module = session
                elif self.format == "pt2":
                    net, channels = _load_pt2(self.files["pt2"], key)
                    self._check_channels(self.files["pt2"], channels)
                else:
                    net = _load_torchscript(self.files["torchscript"], key)
                self._modules[key] = PaddedNetwork(net, self.size_multiple, min_size)
        return self._modules[key]

    def _check_channels(self, file: Path, channels: Tuple[Optional[int], Optional[int]]) -> None:
        """Refuse a network file whose input or output channels are not those meta.json states."""
        for (found, stated), side in zip(zip(channels, (self.in_channels, self.out_channels)), ("input", "output")):
            if found is not None and found != stated:
                what = f"{stated} channel(s)" if side == "input" or not self.task else f"{stated} class logits"
                raise ArtifactError(
                    f"'{file}' has {found} {side} channel(s) but {self.path / 'meta.json'} says its {side} has "
                    f"{what}: the network file belongs to another network (the other direction's, or a task "
                    "network's); keep the files of one export folder together, or re-export it with 'cyclecmda export'."
                )

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) in [-1, 1] on any device -> (B, C_out, H, W) in [-1, 1] (or the task
        network's logits) on that device. Any H and W: padded to what the network takes
        (a multiple of ``size_multiple``, at least ``min_input_size``) and cropped back."""

        return self.module(x.device)(x.float())


class PaddedNetwork(torch.nn.Module):
    """A network that takes any H and W: padded to what it takes (``pad_for``), cropped back.
    Scriptable: the TorchScript export is this module around the generator."""

    def __init__(self, net: torch.nn.Module, multiple: int, min_size: int = 1) -> None:
        super().__init__()
        self.net, self.multiple, self.min_size = net, int(multiple), int(min_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        out = self.net(pad_for(x, self.multiple, self.min_size))
        return out[..., :h, :w] if out.dim() == 4 else out


class OnnxRuntimeNetwork(torch.nn.Module):
    """``model.onnx`` in an ONNX Runtime CPU session, called like the torch network. The session
    uses as many threads as torch does in this process (one in a DataLoader worker)."""

    def __init__(self, file: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:  # from bytes: a model that names external data files cannot reach outside its folder
            self.session = ort.InferenceSession(file.read_bytes(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for damaged files
            raise ArtifactError(f"'{file}' is not a loadable ONNX model ({short_reason(exc)}); re-export it with "
                                "'cyclecmda export --format pt2,onnx'.") from None
        self.input_name = self.session.get_inputs()[0].name
        shapes = [self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape]
        sides = [s[1] if len(s) >= 2 and isinstance(s[1], int) else None for s in shapes]
        self.channels: Tuple[Optional[int], Optional[int]] = (sides[0], sides[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def _padded(n: int, multiple: int, min_size: int) -> int:
    return max((n + multiple - 1) // multiple, (min_size + multiple - 1) // multiple) * multiple


def pad_for(x: torch.Tensor, multiple: int, min_size: int = 1) -> torch.Tensor:
    """``x`` padded at the bottom and right to sides that are multiples of ``multiple`` and at
    least ``min_size``: by reflection, as in training, where the image is large enough to reflect,
    else by replicating its edge."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h, pad_w = _padded(h, multiple, min_size) - h, _padded(w, multiple, min_size) - w
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return torch.nn.functional.pad(x, [0, pad_w, 0, pad_h], mode=mode)


def _load_pt2(file: Path, device: str) -> Tuple[torch.nn.Module, Tuple[Optional[int], Optional[int]]]:
    """An ExportedProgram's module on ``device``, and its (input, output) channels. The archive is
    checked first (:func:`read_pt2`): nothing in it is unpickled or run."""
    data = read_pt2(file)
    torch_export_log = logging.getLogger("torch.export")  # logs a traceback before its own error
    level = torch_export_log.level
    try:
        torch_export_log.setLevel(logging.CRITICAL)
        program = torch.export.load(data)
        channels = program_channels(program)
        if device != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        return program.module(), channels
    except Exception as exc:  # a damaged archive fails in many types (zip, key, runtime errors)
        raise ArtifactError(
            f"'{file}' is not a loadable exported program ({short_reason(exc)}); re-export it with 'cyclecmda export'."
        ) from None
    finally:
        torch_export_log.setLevel(level)


def _load_torchscript(file: Path, device: str) -> torch.nn.Module:
    """A legacy TorchScript artifact on ``device``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            net = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise ArtifactError(
            f"'{file}' is not a loadable TorchScript network ({short_reason(exc)}); re-export it with 'cyclecmda export'."
        ) from None
    return net.to(device).eval()


_CACHE: Dict[Tuple[int, str, str], TranslatorArtifact] = {}


def load_artifact(path: PathLike, task: bool = False, runtime: str = "torch") -> TranslatorArtifact:
    """The artifact at `path`, loaded once per process and runtime (DataLoader workers each load their own).

    A translator unless ``task``: then the task network written by ``cyclecmda export --task``.
    ``runtime``: ``"torch"`` runs ``model.pt2`` (or a legacy ``model.ts``); ``"onnxruntime"`` runs
    ``model.onnx`` in ONNX Runtime on the CPU.
    """
    key = (os.getpid(), str(Path(path).resolve()), check_runtime(runtime))
    if key not in _CACHE:
        _CACHE[key] = TranslatorArtifact(path, runtime)
    artifact = _CACHE[key]
    if bool(artifact.task) != task:
        if task:
            raise ArtifactError(f"'{path}' is a translator, not a task network (export one with 'cyclecmda export CKPT --task').")
        raise ArtifactError(
            f"'{path}' is a task network ({artifact.task['kind']} logits over {len(artifact.classes)} classes), "  # type: ignore[index]
            "not a translator; use the a2b or b2a folder of the export."
        )
    return artifact


def unit_mapping(dtype: Union[np.dtype, torch.dtype], side: Dict) -> Tuple[float, float]:
    """(lo, hi) raw values that map to 0 and 1 for images of this dtype entering this side."""
    name = str(dtype).replace("torch.", "")
    if name.startswith("float"):
        return 0.0, 1.0
    if name == "uint8":
        return tuple(side["value_range"]) if side["bit_depth"] == 8 else (0.0, 255.0)
    if name == "uint16":
        return tuple(side["value_range"]) if side["bit_depth"] == 16 else (0.0, 65535.0)
    raise ArtifactError(f"images of dtype {name} are not supported; use uint8, uint16 or float32 in [0, 1].")


def translate_unit(
    artifact: TranslatorArtifact, unit: torch.Tensor, strength: torch.Tensor, keep_input_channels: bool = True
) -> torch.Tensor:
    """Translate (B, C, H, W) unit images and blend with the input by per-sample `strength` (B,).

    With every strength 0 the network is not run: the input comes back with the output's channels.
    """
    channels = unit.shape[1] if keep_input_channels else artifact.out_channels
    base = _with_channels(unit, channels, unit)
    s = strength.to(device=unit.device, dtype=base.dtype).view(-1, 1, 1, 1)
    if bool((s <= 0).all()):
        return base
    fake = from_model(artifact(to_model(convert_channels(unit, artifact.in_channels))))
    fake = _with_channels(fake, channels, unit)
    if bool((s >= 1).all()):
        return fake
    return base + s * (fake - base)


def _with_channels(x: torch.Tensor, channels: int, alpha_from: torch.Tensor) -> torch.Tensor:
    """`x` with `channels` channels (1, 3, or 4 keeping the alpha of `alpha_from`; others become 3)."""
    out = convert_channels(x, channels if channels in (1, 3) else 3)
    if channels == 4:
        out = torch.cat([out, alpha_from[:, 3:4]], dim=1)
    return out


UNITS = ("input", "target")


def check_units(units: str) -> str:
    """`units` if it is one of UNITS, else ValueError."""
    if units not in UNITS:
        raise ValueError(
            f"units must be 'input' (the input image's dtype and range) or 'target' (the target domain's "
            f"dtype and raw range, as trained), got {units!r}."
        )
    return units


def output_units(artifact: TranslatorArtifact, dtype: torch.dtype, units: str) -> Tuple[torch.dtype, float, float]:
    """(dtype, lo, hi) of translations of `dtype` images: the input's own units, or the target domain's.

    The target domain's are its training dtype (uint16 for 16-bit, else uint8) and raw value range.
    """
    if check_units(units) == "input":
        lo, hi = unit_mapping(dtype, artifact.meta["input"])
        return dtype, lo, hi
    side = artifact.meta["output"]
    lo, hi = side["value_range"]
    return (torch.uint16 if side["bit_depth"] == 16 else torch.uint8), float(lo), float(hi)


def translate_raw(
    artifact: TranslatorArtifact,
    x: torch.Tensor,
    translate: Callable[[torch.Tensor], torch.Tensor],
    units: str = "input",
) -> torch.Tensor:
    """(B, C, H, W) uint8/uint16/float images -> unit scale -> `translate` -> images in `units`."""
    lo, hi = unit_mapping(x.dtype, artifact.meta["input"])
    dtype, out_lo, out_hi = output_units(artifact, x.dtype, units)
    return from_unit(translate(to_unit(x, lo, hi)), out_lo, out_hi, dtype)


def to_unit(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return ((x.float() - lo) / (hi - lo)).clamp_(0, 1)


def from_unit(unit: torch.Tensor, lo: float, hi: float, dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return unit.to(dtype)
    return (unit * (hi - lo) + lo).round_().clamp_(0, torch.iinfo(dtype).max).to(dtype)

