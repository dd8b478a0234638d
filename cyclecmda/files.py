"""Output locations: checked before any work, so a command that cannot write fails first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from cyclecmda.errors import CycleCMDAError

PathLike = Union[str, Path]

__all__ = ["OutputError", "ensure_writable_dir"]


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
        where = exc.filename if isinstance(exc.filename, str) and exc.filename else str(folder)
        raise OutputError(f"cannot write to '{where}' ({what}): {exc.strerror or exc}.") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return folder
