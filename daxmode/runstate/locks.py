"""Locks that keep concurrent daxmode runs apart, in a directory no other user can touch.

* the **region lock** (``region<N>.lock``, outermost) serialises sub-device changes of a
  dynamic region (two creates would otherwise claim the same seed);
* the **device lock** (``<dev>.lock``) serialises runs on one device;
* the **bus lock** (``bus.lock``) covers the windows that touch state shared by every device:
  a ``new_id``/``bind`` (driver_attach binds any matching unbound device) and the hold of
  ``auto_online_blocks``.  Lock order: region, device, bus (innermost), and no
  device lock is ever taken while holding it.

Both are ``flock``\\ s on files in the run-state directory (:mod:`daxmode.runstate`: root-only,
checked on every use, files opened relative to it with ``O_NOFOLLOW``, so a user who prepared
the path first cannot make root create or truncate files elsewhere, or hold the locks), under
the Sysfs root (so simulated roots have their own); re-entrant within a thread and exclusive
across threads and processes.  The kernel drops them when a process dies, so a lock can never
outlive its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator

from daxmode.errors import DeviceBusy, UnsafePath
from daxmode.runstate import RUN_DIR, open_in_run_dir, open_run_dir
from daxmode.sysfs import Sysfs

__all__ = [
    "bus_lock",
    "device_lock",
    "flock_until",
    "is_held_elsewhere",
    "open_in_run_dir",  # the old home of the run directory's functions (kernel.locks), kept for callers
    "open_run_dir",
    "region_lock",
]

_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth
_held_guard = threading.Lock()


def flock_until(fd: int, deadline: float | None, first: float, cap: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, polling with a doubling delay (``first`` up to
    ``cap`` seconds) until the monotonic ``deadline`` (None: for ever); False on timeout.

    Polling rather than a blocking ``flock``, which cannot time out."""
    delay = first
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, cap)


@contextlib.contextmanager
def _flock(sysfs: Sysfs, file: str, what: str, timeout: float | None) -> Iterator[None]:
    key = (sysfs.fspath(f"{RUN_DIR}/{file}"), threading.get_ident())
    with _held_guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    fd = open_in_run_dir(sysfs, file, os.O_RDWR | os.O_CREAT)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{sysfs.shown(RUN_DIR)}/{file} is not a regular file; remove it")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not flock_until(fd, deadline, first=0.002, cap=0.05):
            raise DeviceBusy(f"{what}: another daxmode run holds its lock (waited {timeout:g} s)")
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def device_lock(
    sysfs: Sysfs, name: str, timeout: float | None = 60.0
) -> contextlib.AbstractContextManager[None]:
    """Hold ``name``'s lock; DeviceBusy if another run keeps it past ``timeout``."""
    return _flock(sysfs, f"{name}.lock", name, timeout)


def region_lock(
    sysfs: Sysfs, region_id: int, timeout: float | None = 60.0
) -> contextlib.AbstractContextManager[None]:
    """Hold a dynamic region's lock (outermost): sub-device create/destroy/resize."""
    return _flock(sysfs, f"region{region_id}.lock", f"region{region_id}", timeout)


def bus_lock(sysfs: Sysfs, timeout: float | None = 60.0) -> contextlib.AbstractContextManager[None]:
    """Hold the dax bus lock (innermost; see the module docstring)."""
    return _flock(sysfs, "bus.lock", "the dax bus", timeout)


def is_held_elsewhere(sysfs: Sysfs, file: str) -> bool:
    """True if another process (or thread) holds ``run/daxmode/<file>`` now; never blocks."""
    key = (sysfs.fspath(f"{RUN_DIR}/{file}"), threading.get_ident())
    with _held_guard:
        if _held.get(key):
            return False
    try:
        fd = open_in_run_dir(sysfs, file, os.O_RDONLY)
    except (OSError, UnsafePath):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
