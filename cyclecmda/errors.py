"""Exceptions raised for bad user input; the CLI prints their message without a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


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


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""
