"""flock(2) on a daxmode famfs mount, and ``.meta/.log``'s flock as the volume lock.

famfs's writers serialise on ``flock(LOCK_EX)`` of ``MNT/.meta/.log`` (famfs
``__famfs_init_locked_log``, ``src/famfs_lib.c:3379-3530``); daxmode's writers serialise on a flock
of the device node's or image file's inode (daxmode.famfs.media.lock).  The mount asks the kernel
for ``FUSE_FLOCK_LOCKS`` at INIT, so every flock on the mount reaches the server as SETLK/SETLKW
with ``FUSE_LK_FLOCK`` (fs/fuse/file.c ``fuse_file_flock``), and:

* a flock on ``.meta/.log`` is granted only once the server holds the volume lock for that lock
  owner (an open file description of the volume, flocked the same way), so famfs's CLI and
  daxmode's writers exclude each other on this host; before the grant the kernel's cached pages
  of ``.meta/.log`` are dropped (FUSE_NOTIFY_INVAL_INODE), so the holder reads the current log;
* on unlock (``flock(LOCK_UN)``, or the last close: RELEASE with ``FUSE_RELEASE_FLOCK_UNLOCK``)
  the holder's dirty pages — famfs appends through a shared mapping and never msyncs — are
  written back first (an invalidate launders them through WRITE), the log is re-played and
  provisional names that never got an entry are dropped, and only then is the volume lock let go;
* a flock on any other file is kept in a table here with flock's semantics (shared/exclusive per
  open file description).

A blocking request waits in its worker thread; the server is asked for a spare worker first, so
the holder's own requests (its WRITEs, its unlock) are still served.  An INTERRUPT (the waiter got
a signal) ends the wait with EINTR.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable

from daxmode.famfs.mount.namespace import LOG_ID
from daxmode.fuse import proto as P
from daxmode.fuse.server import FuseError

LK_IN = struct.Struct("<QQQQIII4x")  # fh owner | lk: start end type pid | lk_flags (fuse_lk_in)
RELEASE_IN = struct.Struct("<QIIQ")  # fh flags release_flags lock_owner (fuse_release_in)
NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")  # ino off len
LK_FLOCK = 1 << 0
RELEASE_FLOCK_UNLOCK = 1 << 1
F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2


def notify_inval_inode(fuse_fd: int, nodeid: int) -> None:
    """Drop the kernel's cached pages of ``nodeid`` (dirty ones are written back through WRITE
    first, which another worker answers); a node the kernel does not hold is no error."""
    body = NOTIFY_INVAL_INODE_OUT.pack(nodeid, 0, -1)
    with contextlib.suppress(FileNotFoundError):
        os.write(fuse_fd, P.OUT_HEADER.pack(P.OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE, 0) + body)


class ClientLocks:
    """The flocks clients hold on one mount (see the module docstring)."""

    def __init__(
        self,
        volume: str,
        *,
        fuse_fd: Callable[[], int | None],
        writer_done: Callable[[], None],
        spare_worker: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.volume = volume
        self.fuse_fd = fuse_fd
        self.writer_done = writer_done
        self.spare_worker = spare_worker
        self.log = log
        self._vol: dict[int, int] = {}  # lock owner -> fd of the volume it flocks
        self._table: dict[int, dict[int, int]] = {}  # nodeid -> {owner: F_RDLCK|F_WRLCK}
        self._cond = threading.Condition()
        self._vlock = threading.Lock()
        self._interrupted: collections.deque[int] = collections.deque(maxlen=4096)
        self.grants = 0

    # --- FUSE handlers ------------------------------------------------------------------------
    def handlers(self) -> dict[int, Callable[[P.InHeader, memoryview], None]]:
        return {
            P.SETLK: self.setlk,
            P.SETLKW: self.setlkw,
            P.INTERRUPT: self.interrupt,
            P.RELEASE: self.release,
        }

    def interrupt(self, h: P.InHeader, body: memoryview) -> None:
        self._interrupted.append(P.parse_interrupt(body))
        with self._cond:
            self._cond.notify_all()

    def setlk(self, h: P.InHeader, body: memoryview) -> None:
        self._set(h, body, block=False)

    def setlkw(self, h: P.InHeader, body: memoryview) -> None:
        self._set(h, body, block=True)

    def release(self, h: P.InHeader, body: memoryview) -> None:
        if len(body) < RELEASE_IN.size:
            return None
        _fh, _flags, rflags, owner = RELEASE_IN.unpack_from(body, 0)
        if rflags & RELEASE_FLOCK_UNLOCK:
            self._unlock(h.nodeid, owner)
        return None

    def _set(self, h: P.InHeader, body: memoryview, block: bool) -> None:
        if len(body) < LK_IN.size:
            raise FuseError(errno.EINVAL, "short SETLK")
        _fh, owner, _start, _end, typ, _pid, flags = LK_IN.unpack_from(body, 0)
        if not flags & LK_FLOCK:
            raise FuseError(errno.ENOLCK, "only flock locks are served (POSIX locks stay in the kernel)")
        if typ == F_UNLCK:
            self._unlock(h.nodeid, owner)
        elif typ in (F_RDLCK, F_WRLCK):
            if h.nodeid == LOG_ID:
                self._lock_volume(owner, typ, block, h.unique)
            else:
                self._lock_node(h.nodeid, owner, typ, block, h.unique)
        else:
            raise FuseError(errno.EINVAL, f"lock type {typ}")

    def _unlock(self, nodeid: int, owner: int) -> None:
        if nodeid == LOG_ID:
            self._unlock_volume(owner)
            return
        with self._cond:
            held = self._table.get(nodeid)
            if held is not None and held.pop(owner, None) is not None:
                if not held:
                    del self._table[nodeid]
                self._cond.notify_all()

    # --- .meta/.log: the volume lock -----------------------------------------------------------
    def _lock_volume(self, owner: int, typ: int, block: bool, unique: int) -> None:
        op = fcntl.LOCK_EX if typ == F_WRLCK else fcntl.LOCK_SH
        with self._vlock:
            fd = self._vol.get(owner)
            new = fd is None
            if fd is None:
                try:
                    fd = os.open(self.volume, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise FuseError(
                        errno.ENOLCK, f"cannot open {self.volume} to lock it: {e.strerror}"
                    ) from None
        assert fd is not None
        delay, spared = 0.0005, False
        try:
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not block:
                        raise FuseError(errno.EAGAIN) from None
                if unique in self._interrupted:
                    raise FuseError(errno.EINTR)
                if not spared:
                    self.spare_worker()
                    spared = True
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        except BaseException:
            if new:
                os.close(fd)
            raise
        with self._vlock:
            self._vol[owner] = fd
            self.grants += 1
        ffd = self.fuse_fd()
        if ffd is not None:
            notify_inval_inode(ffd, LOG_ID)

    def _unlock_volume(self, owner: int) -> None:
        with self._vlock:
            fd = self._vol.pop(owner, None)
        if fd is None:
            return
        try:
            self.writer_done()
        except Exception as e:  # the lock is released whatever happened while settling
            self.log(f"settling after a writer released the volume lock failed: {e!r}")
        finally:
            os.close(fd)

    # --- any other file: flock semantics kept here ------------------------------------------------
    def _lock_node(self, nodeid: int, owner: int, typ: int, block: bool, unique: int) -> None:
        spared = False
        with self._cond:
            while True:
                held = self._table.setdefault(nodeid, {})
                others = [t for o, t in held.items() if o != owner]
                if not others or (typ == F_RDLCK and F_WRLCK not in others):
                    held[owner] = typ
                    return
                if not held:
                    del self._table[nodeid]
                if not block:
                    raise FuseError(errno.EAGAIN)
                if unique in self._interrupted:
                    raise FuseError(errno.EINTR)
                if not spared:
                    self.spare_worker()
                    spared = True
                self._cond.wait(0.05)

    def holders(self) -> int:
        with self._vlock:
            return len(self._vol)
