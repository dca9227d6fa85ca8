"""Per-device locks so concurrent ``daxmode set`` runs on one device serialize.

The lock is an ``flock`` on ``run/lock/daxmode/<dev>.lock`` under the Sysfs root, so
simulated roots have their own locks.  It is re-entrant within one thread (a
``temporary_mode`` body may call ``set_mode`` on the same device) and exclusive
across threads and processes (flock conflicts between open file descriptions).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from daxmode.errors import DeviceBusy
from daxmode.sysfs import Sysfs

LOCK_DIR = "run/lock/daxmode"
_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth
_held_guard = threading.Lock()


def lock_path(sysfs: Sysfs, name: str) -> str:
    return str(sysfs.path(f"{LOCK_DIR}/{name}.lock"))


@contextmanager
def device_lock(sysfs: Sysfs, name: str, timeout: float | None = 60.0) -> Iterator[None]:
    """Hold the device's lock; DeviceBusy if another holder keeps it past ``timeout``."""
    path = lock_path(sysfs, name)
    key = (path, threading.get_ident())
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeviceBusy(
                        f"{name}: another daxmode holds {path} (waited {timeout:.0f} s)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
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
