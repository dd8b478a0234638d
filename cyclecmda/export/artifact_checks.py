"""What an exported artifact must be before any of it is loaded: ``meta.json`` and ``model.pt2``.

Artifacts are shared and downloaded, so nothing in one may run code when it is loaded.
``meta.json`` is checked against a small schema (every field the loaders read, with its type and
valid values). A ``model.pt2`` is a zip archive that ``torch.export.load`` reads; some of its
entries may be pickles, which that function unpickles without restriction (weights or constants
stored with ``use_pickle``, custom objects, legacy weight files, and sample inputs, for which it
falls back to a full unpickle), and some may be compiled native code (AOTInductor). The archive is
read into memory once, every such entry is refused, and the same bytes are what torch then loads.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

from cyclecmda.errors import CycleCMDAError
from cyclecmda.models.task import TASK_KINDS

FORMAT = "cyclecmda.export"
FORMAT_VERSION = 1  # the newest meta.json layout this package reads
SIDES = ("a", "b")

# Archive entries that hold native code or formats torch.export.load would run unchecked.
_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_TENSOR_CONSTANT_PREFIX = "tensor_"


class ArtifactError(CycleCMDAError):
    """An exported translator folder is missing, incomplete, unsafe or not ours."""


# --- meta.json ----------------------------------------------------------------------------------


def check_meta(meta: Any, where: Path) -> Dict[str, Any]:
    """``meta`` if it is a cyclecmda export's meta.json that this package can use, else ArtifactError
    naming ``where``, the field, what it holds and what would be valid."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{where} is not a cyclecmda export (format {found!r}, expected {FORMAT!r}).")
    version = _field(meta, "format_version", int, where)
    if not 1 <= version <= FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format_version {version} is not one this cyclecmda reads ({_versions()}); it was written "
            "by another version: upgrade cyclecmda, or re-export the checkpoint with this one."
        )
    _field(meta, "direction", str, where)
    task = meta.get("task")
    if task is not None:
        _check_task(task, where)
    _check_side(meta, "input", where, raw=True)
    _check_side(meta, "output", where, raw=task is None)
    if task is not None and meta["output"]["channels"] != len(task["classes"]):
        raise ArtifactError(f"{where}: output.channels is {meta['output']['channels']} but task.classes names "
                            f"{len(task['classes'])} classes; they must agree (re-export it with 'cyclecmda export --task').")
    _positive(meta, "size_multiple", where)
    for key in ("min_input_size", "onnx_min_input_size"):
        if key in meta:
            _positive(meta, key, where)
    files = _field(meta, "files", dict, where)
    for kind, name in files.items():
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"{where}: files.{kind} must be a file name inside the artifact folder, got {name!r}.")
    _field(meta, "config", dict, where)
    return meta


def _versions() -> str:
    return "1" if FORMAT_VERSION == 1 else f"1 to {FORMAT_VERSION}"


def _field(mapping: Mapping[str, Any], key: str, kind: type, where: Path, prefix: str = "") -> Any:
    """``mapping[key]``, which must exist and be of type ``kind`` (an int is never a bool)."""
    name = f"{prefix}{key}"
    if key not in mapping:
        raise ArtifactError(f"{where}: the field '{name}' is missing; re-export it with 'cyclecmda export'.")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(f"{where}: '{name}' must be {_KIND_NAMES[kind]}, got {value!r}; "
                            "re-export it with 'cyclecmda export'.")
    return value


_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _positive(mapping: Mapping[str, Any], key: str, where: Path, prefix: str = "", most: int = 1 << 20) -> int:
    value = _field(mapping, key, int, where, prefix)
    if not 1 <= value <= most:
        raise ArtifactError(f"{where}: '{prefix}{key}' must be an integer from 1 to {most}, got {value}.")
    return value


def _check_side(meta: Mapping[str, Any], key: str, where: Path, raw: bool) -> None:
    """One side's entry: channels, and for raw images its domain, bit depth and value range."""
    side = _field(meta, key, dict, where)
    prefix = f"{key}."
    if not raw:  # a task network's logits
        _positive(side, "channels", where, prefix, most=65536)
        return
    channels = _positive(side, "channels", where, prefix)
    if channels > 4:
        raise ArtifactError(f"{where}: '{prefix}channels' must be 1 to 4 (image channels), got {channels}.")
    domain = _field(side, "domain", str, where, prefix)
    if domain not in SIDES:
        raise ArtifactError(f"{where}: '{prefix}domain' must be 'a' or 'b', got {domain!r}.")
    bits = _field(side, "bit_depth", int, where, prefix)
    if bits not in (8, 16):
        raise ArtifactError(f"{where}: '{prefix}bit_depth' must be 8 or 16, got {bits}.")
    lo_hi = _field(side, "value_range", list, where, prefix)
    numbers = len(lo_hi) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi)
    if not numbers or not all(math.isfinite(v) for v in lo_hi) or not lo_hi[0] < lo_hi[1]:
        raise ArtifactError(
            f"{where}: '{prefix}value_range' must be [lo, hi], two finite numbers with lo < hi, got {lo_hi!r} "
            "(a range of width zero maps every image to one value); re-export it with 'cyclecmda export'."
        )


def _check_task(task: Any, where: Path) -> None:
    if not isinstance(task, dict):
        raise ArtifactError(f"{where}: 'task' must be an object (kind, classes), got {task!r}.")
    kind = _field(task, "kind", str, where, "task.")
    if kind not in TASK_KINDS:
        raise ArtifactError(f"{where}: 'task.kind' must be one of {', '.join(TASK_KINDS)}, got {kind!r}.")
    classes = _field(task, "classes", list, where, "task.")
    if not classes or not all(isinstance(c, str) for c in classes):
        raise ArtifactError(f"{where}: 'task.classes' must be a non-empty list of class names, got {classes!r}.")


# --- model.pt2 ----------------------------------------------------------------------------------


def read_pt2(file: Path) -> io.BytesIO:
    """The bytes of ``file`` once it is shown to be a .pt2 archive whose loading unpickles nothing
    and loads no compiled code; ArtifactError otherwise. Load these bytes, not the file again."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read '{file}': {exc.strerror or exc}.") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        _check_entries(archive, file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{file}' is not a loadable exported program ({_reason(exc)}); "
                            "re-export it with 'cyclecmda export'.") from None
    return io.BytesIO(data)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"it has no entry {exc.args[0]!r}" if exc.args else "an entry is missing"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _entries(archive: zipfile.ZipFile) -> Dict[str, zipfile.ZipInfo]:
    """The archive's entries by their name below its single top-level folder, as torch reads them."""
    infos = archive.infolist()
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if not infos or len(roots) != 1 or any("/" not in info.filename for info in infos):
        raise ValueError("not laid out as torch.export.save writes a .pt2 archive")
    return {info.filename.split("/", 1)[1]: info for info in infos}


def _unsafe(file: Path, what: str) -> ArtifactError:
    return ArtifactError(
        f"'{file}' holds {what}, which loading would run as code; it was not loaded. Use only "
        "artifacts written by 'cyclecmda export', or re-export from a checkpoint you trust."
    )


def _check_entries(archive: zipfile.ZipFile, file: Path) -> None:
    entries = _entries(archive)
    read = lambda name: archive.read(entries[name])  # noqa: E731  (KeyError: a required entry is missing)
    if read("archive_format").decode().strip() != "pt2":
        raise ValueError("its archive_format is not 'pt2'")
    for name in entries:
        if name.startswith(_CODE_DIRS):
            raise _unsafe(file, f"compiled code ('{name}')")
    models = [n[len("models/"):-len(".json")] for n in entries if n.startswith("models/") and n.endswith(".json")]
    if not models:
        raise ValueError("it holds no exported program (models/*.json)")
    for model in models:
        for legacy in (f"data/weights/{model}.pt", f"data/constants/{model}.pt"):
            if legacy in entries:
                raise _unsafe(file, f"a pickled file of Python objects ('{legacy}')")
        for config_name, kind in ((f"data/weights/{model}_weights_config.json", "weight"),
                                  (f"data/constants/{model}_constants_config.json", "constant")):
            for fqn, payload in _payloads(json.loads(read(config_name)), config_name):
                if payload.get("use_pickle") is not False:
                    raise _unsafe(file, f"a pickled {kind} ('{fqn}', a Python object rather than raw tensor data)")
                if kind == "constant" and not str(payload.get("path_name", "")).startswith(_TENSOR_CONSTANT_PREFIX):
                    raise _unsafe(file, f"a constant that is a Python object ('{fqn}')")
        inputs = f"data/sample_inputs/{model}.pt"
        if inputs in entries and entries[inputs].file_size:
            try:
                torch.load(io.BytesIO(read(inputs)), weights_only=True)
            except Exception:  # torch.export.load would retry this entry as a full unpickle
                raise _unsafe(file, f"sample inputs that are Python objects ('{inputs}')") from None


def _payloads(config: Any, name: str) -> List[tuple]:
    table = config.get("config") if isinstance(config, dict) else None
    if not isinstance(table, dict) or not all(isinstance(p, dict) for p in table.values()):
        raise ValueError(f"{name} is not a payload table")
    return list(table.items())


def program_channels(program: Any) -> tuple:
    """(input channels, output channels) of an ExportedProgram's single image input and output."""
    inputs = set(program.graph_signature.user_inputs)
    shapes_in = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs]
    output = next(n for n in program.graph.nodes if n.op == "output")
    shapes_out = [a.meta["val"].shape for a in output.args[0] if hasattr(a, "meta") and "val" in a.meta]
    return (int(shapes_in[0][1]) if len(shapes_in) == 1 and len(shapes_in[0]) == 4 else None,
            int(shapes_out[0][1]) if len(shapes_out) == 1 and len(shapes_out[0]) >= 2 else None)
