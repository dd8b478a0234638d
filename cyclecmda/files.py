"""Output locations: checked before any work, so a command that cannot write fails first."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Optional, Union

from cyclecmda.errors import CycleCMDAError

PathLike = Union[str, Path]

__all__ = ["OutputError", "atomic_write", "ensure_writable_dir", "output_error", "write_failure"]


class OutputError(CycleCMDAError):
    """An output folder or file cannot be created or written."""


def ensure_writable_dir(path: PathLike, what: str) -> Path:
    """Create folder ``path`` if needed and check that a file can be created in it.

    ``what`` says which setting or argument named the folder. Raises :class:`OutputError` with
    one line naming the path and the operating system's reason.
    """
    folder = Path(path)
    probe = folder / f".cyclecmda-write-check.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise output_error(exc, folder, what) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return folder


def output_error(exc: OSError, path: PathLike, what: str = "") -> OutputError:
    """One line for a failed write: the path the system names (else `path`), `what` it is, and the cause."""
    where = exc.filename if isinstance(exc.filename, str) and exc.filename else str(path)
    # mkdir(exist_ok=True) says "File exists" when a file stands where the folder should be
    cause = "a file is in the way of the folder" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
    label = f" ({what})" if what else ""
    return OutputError(f"cannot write to '{where}'{label}: {cause}.")


def sha256_of(path: Union[str, Path]) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_failure(exc: BaseException) -> str:
    """The operating system's reason for a failed write (torch's writers wrap it in a RuntimeError)."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], object],
                 error: Optional[Callable[[Path, str], Exception]] = None) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` writes a temporary file beside it (same
    suffix), which is flushed to disk and renamed over ``path``. A crash at any moment leaves the
    previous file or the new one, never a partial one. A failed write (disk full, read-only file
    system) leaves the previous file as it was and raises ``error(path, reason)``, by default
    :class:`OutputError` naming the file and the operating system's reason; other exceptions of
    ``write`` pass through."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except (OSError, RuntimeError) as exc:
        reason = write_failure(exc)
        raise (error or _output_error)(path, reason) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def _output_error(path: Path, reason: str) -> OutputError:
    return OutputError(f"cannot write to '{path}': {reason}.")
