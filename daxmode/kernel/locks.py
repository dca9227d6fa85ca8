"""Locks that keep concurrent daxmode runs apart, in a directory no other user can touch.

* the **region lock** (``region<N>.lock``, outermost) serialises sub-device changes of a
  dynamic region (two creates would otherwise claim the same seed);
* the **device lock** (``<dev>.lock``) serialises runs on one device;
* the **bus lock** (``bus.lock``) covers the windows that touch state shared by every device:
  a ``new_id``/``bind`` (driver_attach binds any matching unbound device) and the hold of
  ``auto_online_blocks``.  Lock order: region, device, bus (innermost), and no
  device lock is ever taken while holding it.

Both are ``flock``\\ s on files in ``run/daxmode/`` under the Sysfs root (so simulated roots
have their own), re-entrant within a thread and exclusive across threads and processes; the
kernel drops them when a process dies, so a lock can never outlive its holder.  The
directory is created 0700 and checked on every use (a real directory, not a symlink, owned
by us, no group/other access) and files in it are opened relative to it with
``O_NOFOLLOW``: a user who prepared the path first cannot make root create or truncate files
elsewhere, or hold the locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator

from daxmode.errors import DeviceBusy, UnsafePath
from daxmode.kernel.paths import RUN_DIR
from daxmode.sysfs import Sysfs

_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth
_held_guard = threading.Lock()


def _check_dir(fd: int, shown: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{shown} is not a directory; remove it (daxmode keeps its locks there)")
    if st.st_uid != os.geteuid():
        raise UnsafePath(
            f"{shown} is owned by uid {st.st_uid}, not {os.geteuid()}; someone else created it: remove it"
        )
    if st.st_mode & 0o077:
        raise UnsafePath(f"{shown} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 (chmod 0700 it)")


_checked: dict[str, tuple[int, int, int]] = {}  # run dir path -> (fd, st_dev, st_ino), checked


def open_run_dir(sysfs: Sysfs, create: bool = True) -> int:
    """A descriptor of the checked run directory (the caller closes it).

    The first use in a process creates and checks the directory; later uses only confirm, with
    one lstat, that the path still names the same directory (a transition opens it a dozen
    times, and each open, mkdir and check is a slow syscall in a TCG guest)."""
    path = sysfs.fspath(RUN_DIR)
    known = _checked.get(path)
    if known is not None:
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == known[1:] and stat.S_ISDIR(st.st_mode):
            return os.dup(known[0])
        _checked.pop(path, None)
        os.close(known[0])
    shown = sysfs.shown(RUN_DIR)
    if create:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{shown} is a symlink or not a directory; remove it") from None
        raise
    try:
        _check_dir(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    st = os.fstat(fd)
    _checked[path] = (os.dup(fd), st.st_dev, st.st_ino)
    return fd


def open_in_run_dir(sysfs: Sysfs, name: str, flags: int, mode: int = 0o600) -> int:
    """Open ``run/daxmode/<name>`` without following symlinks, relative to the checked directory."""
    dfd = open_run_dir(sysfs, create=bool(flags & os.O_CREAT))
    try:
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(f"{sysfs.shown(RUN_DIR)}/{name} is a symlink; remove it") from None
            raise
    finally:
        os.close(dfd)


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
