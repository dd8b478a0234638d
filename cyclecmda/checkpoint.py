"""Self-describing checkpoints, written atomically and loaded without unpickling code."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from cyclecmda import __version__
from cyclecmda.errors import CycleCMDAError

FORMAT = "cyclecmda.checkpoint"
FORMAT_VERSION = 1
PathLike = Union[str, Path]


class CheckpointError(CycleCMDAError):
    """A checkpoint file is missing, unreadable, or not a cyclecmda checkpoint."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """Write to a temporary file beside `path`, flush, fsync, then rename over `path`.

    A crash at any moment leaves either the previous file or the new one, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


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
    found = []
    for p in Path(run_dir).glob("step_*.pt"):
        m = re.fullmatch(r"step_(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def prune_step_checkpoints(run_dir: PathLike, keep_last: int) -> None:
    for p in step_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else step_checkpoints(run_dir):
        p.unlink(missing_ok=True)
