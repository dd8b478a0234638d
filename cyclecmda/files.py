"""Output locations: checked before any work, so a command that cannot write fails first."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Union

from cyclecmda.errors import CycleCMDAError

PathLike = Union[str, Path]

__all__ = ["OutputError", "ensure_writable_dir", "output_error"]


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
