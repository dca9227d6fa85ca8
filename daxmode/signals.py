"""SIGINT, SIGTERM and SIGHUP during a transition: deferred to safe points, then rolled back.

A handler that raised in the middle of a step could leave a write done but unrecorded.  So
while a transition runs (:func:`deferred`), these signals only record themselves; the
executor and the kernel layer's waits call :func:`checkpoint` between writes, which raises
:class:`Interrupted` there, and the rollback runs :func:`shielded` so a second Ctrl-C cannot
cut it short.  Outside :func:`deferred` the default behaviour applies.  Handlers can only be
installed in the main thread; other threads run undeferred (their caller owns signals).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from daxmode.errors import DaxmodeError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(DaxmodeError):
    """A signal stopped the operation (exit 130, as shells report SIGINT)."""

    exit_code = 130

    def __init__(self, signum: int, msg: str | None = None) -> None:
        self.signum = signum
        super().__init__(msg or f"interrupted by {signal.Signals(signum).name}")


_pending: int | None = None
_depth = 0
_shield = 0
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""What ``signal.signal`` takes and gives back."""
_saved: dict[int, _Handler] = {}


def _record(signum: int, _frame: object) -> None:
    global _pending
    _pending = signum


def pending() -> int | None:
    return _pending


def clear() -> int | None:
    """Forget a recorded signal (after the caller has acted on it); returns it."""
    global _pending
    sig, _pending = _pending, None
    return sig


def checkpoint() -> None:
    """Raise :class:`Interrupted` here if a signal arrived (unless shielded)."""
    sig = _pending
    if sig is not None and _shield == 0:
        clear()
        raise Interrupted(sig)


@contextmanager
def deferred() -> Iterator[None]:
    """Record SIGINT/SIGTERM/SIGHUP instead of acting on them; re-entrant."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        clear()
        for s in SIGNALS:
            _saved[s] = signal.signal(s, _record)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for s in SIGNALS:
                signal.signal(s, _saved.pop(s))


@contextmanager
def shielded() -> Iterator[None]:
    """Let a rollback finish: checkpoints inside do not raise."""
    global _shield
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def raising() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` like SIGINT raises KeyboardInterrupt, so
    ``finally`` blocks (restoring a device's mode) run before the process ends.  A
    :func:`deferred` section inside takes over and gives these handlers back afterwards."""
    if threading.current_thread() is not threading.main_thread() or _depth:
        yield
        return
    saved = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
