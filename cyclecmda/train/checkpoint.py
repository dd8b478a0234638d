"""Self-describing checkpoints, written atomically and loaded without unpickling code."""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import numpy as np
import torch

from cyclecmda import __version__
from cyclecmda.errors import CheckpointError, short_reason
from cyclecmda.files import atomic_write

FORMAT = "cyclecmda.checkpoint"
FORMAT_VERSION = 2  # 2: progress counted in samples; no scheduler states
PathLike = Union[str, Path]


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (the previous one is kept)."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through :func:`cyclecmda.files.atomic_write`: a crash leaves the previous file
    or the new one. A failed write raises :class:`CheckpointWriteError` naming the file and the cause."""
    return atomic_write(path, lambda tmp: save_to(obj, tmp), _write_error)


def save_to(obj: Any, path: Path) -> None:
    """``torch.save`` through a file of ours: a failed write raises the system's own error."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _write_error(path: Path, reason: str) -> CheckpointWriteError:
    return CheckpointWriteError(f"cannot write '{path}': {reason}")


WANTED = "checkpoints are the .pt files that 'cyclecmda train' writes (latest.pt, step_<N>.pt, best.pt)"
# What torch.save writes: a zip archive (or, before torch 1.6, a pickle stream).
_TORCH_STARTS = (b"PK\x03\x04", b"\x80")
# Leading bytes of files that surely are something else.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
)


def _not_torch(head: bytes) -> Optional[str]:
    """What a file is, from its first bytes, when it surely is not a torch file; None when it may be one."""
    if not head:
        return "empty, not a cyclecmda checkpoint"
    if head.startswith(_TORCH_STARTS):
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"{what}, not a cyclecmda checkpoint"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image, not a cyclecmda checkpoint"
    try:
        head.decode("utf-8")
        text = b"\x00" not in head
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample still counts as text
        text = exc.start >= len(head) - 3 and b"\x00" not in head
    return "a text file, not a cyclecmda checkpoint" if text else "not a PyTorch file, so not a cyclecmda checkpoint"


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` and check that it is one of ours.

    Whatever the file is instead (empty, an image, text, Python objects, damaged), the
    :class:`CheckpointError` says so in one line.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file; {WANTED}.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist.")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {exc.strerror or exc}.") from None
    what = _not_torch(head)
    if what is not None:
        raise CheckpointError(f"'{path}' is {what}; {WANTED}.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(_load_failure(path, exc)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is a PyTorch file but not a cyclecmda checkpoint (it has no '{FORMAT}' format marker); {WANTED}."
        )
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {ckpt['format_version']}, newer than this "
            f"cyclecmda ({__version__}) reads ({FORMAT_VERSION}); upgrade cyclecmda."
        )
    return ckpt


def _load_failure(path: Path, exc: Exception) -> str:
    """One line for torch.load's refusal, never its advice to load with ``weights_only=False``."""
    text = str(exc)
    # torch names the class or function the pickle would call: "Unsupported global: GLOBAL x was not an
    # allowed global" or, for modules it blocks (os, subprocess, ...), "unsupported GLOBAL x whose module is blocked"
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
    if found or isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in text:
        what = f" ({found.group(1)})" if found else ""
        return (
            f"'{path}' holds Python objects beyond tensors and plain values{what}, which cyclecmda never "
            f"unpickles because they can run code; {WANTED}."
        )
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    reason = short_reason(RuntimeError(unpickler.group(1))) if unpickler else short_reason(exc)
    return f"'{path}' is damaged or truncated, or not a PyTorch file ({reason}); {WANTED}."


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states as plain values and tensors (weights_only-safe)."""
    np_state = cast(Tuple[Any, ...], np.random.get_state())  # the legacy tuple form
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate needs tuples where a round trip may have produced lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def step_checkpoints(run_dir: PathLike) -> List[Path]:
    """The run's ``step_<N>.pt`` files, oldest step first."""
    found = [(checkpoint_step(p), p) for p in Path(run_dir).glob("step_*.pt")]
    return [p for n, p in sorted((n, p) for n, p in found if n is not None)]


def prune_step_checkpoints(run_dir: PathLike, keep_last: int, keep: Optional[Path] = None) -> None:
    """Delete all but the newest ``keep_last`` step files, and never ``keep``."""
    files = step_checkpoints(run_dir)
    for p in files[:-keep_last] if keep_last > 0 else files:
        if keep is None or p != keep:
            p.unlink(missing_ok=True)


def point_latest(target: Path, latest: Path) -> Path:
    """Make ``latest`` the same file as ``target`` (a hard link, or a copy), atomically."""
    def write(tmp: Path) -> None:
        try:
            os.link(target, tmp)
        except OSError:
            shutil.copyfile(target, tmp)

    return atomic_write(latest, write, _write_error)


def checkpoint_step(path: Path) -> Optional[int]:
    """N of a ``step_<N>.pt`` file name (None for other names)."""
    m = re.fullmatch(r"step_(\d+)\.pt", path.name)
    return int(m.group(1)) if m else None


# What atomic_torch_save and save_config leave behind when a process dies mid-write.
_TEMPORARY = re.compile(r"\.(latest|best|step_\d+)\.pt\.(\d+)\.tmp|config\.yaml\.tmp")


def remove_stale_temporaries(run_dir: PathLike) -> List[Path]:
    """Delete the temporary files that interrupted saves left in a run folder; return them.

    Only this package's own names are touched, and not those of another process still running.
    """
    removed: List[Path] = []
    folder = Path(run_dir)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMPORARY.fullmatch(p.name)
        if not m or not p.is_file():
            continue
        pid = int(m.group(2)) if m.group(2) else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
