"""Stopping on request: SIGINT or SIGTERM ends a run after its current step, with a checkpoint.

Cluster schedulers (``timeout``, SLURM, Kubernetes, ``docker stop``) send SIGTERM to every
process of a job, DataLoader workers included, and Ctrl-C sends SIGINT to the whole foreground
process group. The training process records the request and stops at the next step boundary;
its workers must live until then, so they ignore SIGINT and the first SIGTERM (the training
process shuts them down itself, and a second SIGTERM still ends a worker).
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType, TracebackType
from typing import Any, Dict, Iterator, Optional, Type

__all__ = ["StopRequest", "blocked_stop_signals", "shield_worker"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While active, SIGINT and SIGTERM set :attr:`reason` (the signal's name) instead of interrupting."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def blocked_stop_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while DataLoader workers start: a worker inherits the block
    and takes the signals only once :func:`shield_worker` has installed its handlers."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _first_sigterm(signum: int, _frame: Optional[FrameType]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one ends the worker


def shield_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGINT and the first SIGTERM, then take signals."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _first_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
