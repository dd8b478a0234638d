"""Self-describing checkpoints, written atomically and loaded without unpickling code."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from cyclecmda import __version__
from cyclecmda.errors import CycleCMDAError

FORMAT = "cyclecmda.checkpoint"
FORMAT_VERSION = 2  # 2: progress counted in samples; no scheduler states
PathLike = Union[str, Path]


class CheckpointError(CycleCMDAError):
    """A checkpoint file is missing, unreadable, or not a cyclecmda checkpoint."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (the previous one is kept)."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """Write to a temporary file beside `path`, flush, fsync, then rename over `path`.

    A crash at any moment leaves either the previous file or the new one, never a partial one.
    A failed write (disk full, read-only file system) raises :class:`CheckpointWriteError`
    naming the file and the cause, and leaves the previous file as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as exc:
        raise CheckpointWriteError(f"cannot write '{path}': {_write_failure(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def _write_failure(exc: BaseException) -> str:
    """The operating system's reason for a failed write (torch wraps it in its own RuntimeError)."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint '{path}' cannot be loaded: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a cyclecmda checkpoint (no '{FORMAT}' format marker).")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {ckpt['format_version']}, newer than this "
            f"cyclecmda ({__version__}) reads ({FORMAT_VERSION}); upgrade cyclecmda."
        )
    return ckpt


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states as plain values and tensors (weights_only-safe)."""
    np_state = np.random.get_state()
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
    tmp = latest.with_name(f".{latest.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(target, tmp)
        except OSError:
            shutil.copyfile(target, tmp)
        os.replace(tmp, latest)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot write '{latest}': {_write_failure(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return latest


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
    removed = []
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
