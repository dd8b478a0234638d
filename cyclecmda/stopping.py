"""Stopping on request: SIGINT or SIGTERM ends a run after its current step, with a checkpoint.

Cluster schedulers (``timeout``, SLURM, Kubernetes, ``docker stop``) send SIGTERM to every
process of a job, DataLoader workers included, and Ctrl-C sends SIGINT to the whole foreground
process group. The training process records the request and stops at the next step boundary;
its workers must live until then, so they ignore SIGINT, and SIGTERM unless the training
process itself sends it (as it does to shut down a worker that does not stop by itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
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


def _exit_on_parent_sigterm() -> None:
    """Take this process's SIGTERMs; end it on one sent by its parent, drop the others."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == os.getppid():
            os._exit(0)


def shield_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGINT, and SIGTERM unless the parent sends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # Linux and most Unixes: tell who sent a SIGTERM
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the thread below inherits it
        threading.Thread(target=_exit_on_parent_sigterm, name="sigterm", daemon=True).start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    else:  # a SIGTERM ends the worker as before
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
