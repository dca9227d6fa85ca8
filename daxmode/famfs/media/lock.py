"""The volume lock: one mutating famfs session at a time per device or image file on this host.

What every process on a host shares for one volume is the inode of its device node (``/dev/daxX.Y``:
devtmpfs keeps the node for as long as the dax device is registered, whichever driver is bound) or
of its image file.  So the lock is an exclusive ``flock`` on that inode, taken through the
session's own open file description: daxmode CLI processes, a daxmode FUSE server and library
users all meet there, and the kernel drops a dead holder's lock when its files close (SIGKILL
included).  No lock file is needed, so there is no directory to trust: the lock lives on the
object being changed, and only those who can open that object can take it.  (A user who can
read an image file can hold its lock; writers then time out with the holder's pid named.)

``flock`` does not separate threads sharing one open file, so a per-inode thread lock is taken
first.  A thread holding the lock may take it again through the same open file (re-entrant);
through a second open file of the same inode it would wait for itself, so that is refused.

The lock reaches no other host.  Across hosts famfs's rule holds: only the master (the host
whose system UUID is in the superblock) changes the log, and that check is repeated under the
lock.  famfs's own tools lock ``.meta/.log`` inside a mount instead; daxmode refuses to open a
mounted device, so the two never append to one log from the same host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

from daxmode.errors import DeviceBusy, FamfsError
from daxmode.kernel.procs import flock_holders
from daxmode.runstate.locks import flock_until

DEFAULT_TIMEOUT = 60.0
"""Seconds a writer waits for another session on the same volume (mutations take milliseconds)."""

_guard = threading.Lock()
_thread_locks: dict[tuple[int, int], threading.Lock] = {}
_held: dict[tuple[int, int], list[int]] = {}  # inode -> [thread id, fd, depth]


def _forget_after_fork() -> None:
    """A forked child holds no thread's locks (a parent thread may have held them at the fork).
    An open file it inherited shares the parent's flock: open the volume again in the child."""
    global _guard
    _guard = threading.Lock()
    _thread_locks.clear()
    _held.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _thread_lock(key: tuple[int, int]) -> threading.Lock:
    with _guard:
        lk = _thread_locks.get(key)
        if lk is None:
            lk = _thread_locks[key] = threading.Lock()
        return lk


@contextlib.contextmanager
def volume_lock(fd: int, what: str, timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive volume lock on the file open as ``fd``; DeviceBusy after ``timeout`` s."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    me = threading.get_ident()
    with _guard:
        held = _held.get(key)
    if held is not None and held[0] == me:
        if held[1] != fd:
            raise FamfsError(f"{what}: this thread already holds its famfs lock through another open file")
        held[2] += 1
        try:
            yield
        finally:
            held[2] -= 1
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    tlock = _thread_lock(key)
    if not tlock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
        raise DeviceBusy(
            f"{what}: another thread of this process keeps its famfs lock (waited {timeout:g} s)"
        )
    try:
        if not flock_until(fd, deadline, first=0.0005, cap=0.02):
            pids = [p for p in flock_holders(st) if p != os.getpid()]
            who = f" (held by pid {', '.join(map(str, pids))})" if pids else ""
            raise DeviceBusy(f"{what}: another famfs writer holds the volume lock{who}; waited {timeout:g} s")
        with _guard:
            _held[key] = [me, fd, 1]
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        tlock.release()
