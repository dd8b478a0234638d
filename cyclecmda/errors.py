"""Exceptions raised for bad user input; the CLI prints their message without a traceback."""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Optional


class CycleCMDAError(Exception):
    """Base class for errors caused by user input (config, data, files)."""


class ConfigError(CycleCMDAError, ValueError):
    """A config key, type or value is invalid."""


class DataError(CycleCMDAError, ValueError):
    """An image file or dataset location cannot be used."""


class CheckpointError(CycleCMDAError):
    """A checkpoint file is missing, unreadable, or not a cyclecmda checkpoint."""


def short_reason(exc: BaseException) -> str:
    """An exception's first sentence: the reason without the paragraphs of advice torch appends."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".").strip()


def unknown(what: str, value: str, valid: Iterable[str], error: Optional[Callable[[str], Exception]] = None,
            also: str = "", key: str = "") -> Exception:
    """``[<key>: ]unknown <what> '<value>'; valid: <valid>[, <also>].`` and the closest valid name, as
    ``error`` (ConfigError unless given): the one wording of every registry's and option's refusal."""
    names = [str(v) for v in valid]
    listed = ", ".join(names + ([also] if also else []))
    where = f"{key}: " if key else ""
    return (error or ConfigError)(f"{where}unknown {what} '{value}'; valid: {listed}." + did_you_mean(value, names))


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""
