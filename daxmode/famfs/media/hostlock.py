"""One lock for famfs's CLI and daxmode on a host: the volume lock plus ``.meta/.log`` of each mount.

famfs's writers serialise on ``flock(MNT/.meta/.log)`` inside a mount (famfs
``__famfs_init_locked_log``, ``src/famfs_lib.c:3379-3530``); daxmode's writers on a flock of the
device node's or image file's inode (daxmode.famfs.media.lock).  A daxmode writer therefore takes,
in this order:

1. ``flock(LOCK_EX)`` of ``.meta/.log`` in every famfs mount of this volume on this host (found in
   /proc/self/mountinfo by the mount source's inode, or device number for a dax device), sorted by
   mount point so two daxmode writers never take them in opposite orders;
2. the volume lock on the inode, unless one of those mounts is daxmode's own: its server turns a
   flock on ``.meta/.log`` into the volume lock for that lock owner (daxmode.famfs.mount.flocks), so
   step 1 already holds it, and taking it again would wait on the server forever.

A daxmode mount is recognised by the ``user.daxmode.stats`` attribute its root lists.  Nested locks
of one volume in one process reuse one open ``.meta/.log`` per mount (the volume lock counts
re-entry per open file).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator

from daxmode.famfs.media.lock import volume_lock
from daxmode.kernel.mounts import this_process_mounts

DAXMODE_XATTR = "user.daxmode.stats"
"""Listed on the root of every daxmode famfs mount (daxmode.famfs.mount.handlers.STATS_XATTR)."""


def _same_volume(a: os.stat_result, b: os.stat_result) -> bool:
    if stat.S_ISCHR(a.st_mode) and stat.S_ISCHR(b.st_mode):
        return a.st_rdev == b.st_rdev
    return (
        stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    )


def famfs_mounts_of(fd: int) -> list[tuple[str, bool]]:
    """(mount point, served by daxmode) of every famfs mount on this host whose source is the volume
    open as ``fd`` and which shows ``.meta/.log``."""
    me = os.fstat(fd)
    out: list[tuple[str, bool]] = []
    for m in this_process_mounts():
        if "famfs" not in m.fstype and not m.fstype.startswith("fuse"):
            continue
        if not m.source.startswith("/"):
            continue
        try:
            if not _same_volume(os.stat(m.source), me):
                continue
            if not os.path.isfile(os.path.join(m.mount_point, ".meta", ".log")):
                continue
        except OSError:
            continue
        try:
            ours = DAXMODE_XATTR in os.listxattr(m.mount_point)
        except OSError:
            ours = False
        out.append((m.mount_point, ours))
    return sorted(set(out))


_guard = threading.Lock()
_meta: dict[tuple[int, int, str], list[int]] = {}
"""(inode of the volume, mount point) -> [open fd of its .meta/.log, users]: nested locks of one
volume reuse one open file (the volume lock counts re-entry per open file)."""


def _forget_after_fork() -> None:
    global _guard
    _guard = threading.Lock()
    _meta.clear()  # a child must not share its parent's open files (flock belongs to them)


os.register_at_fork(after_in_child=_forget_after_fork)


@contextlib.contextmanager
def _meta_log(vol: os.stat_result, mp: str) -> Iterator[int]:
    key = (vol.st_dev, vol.st_ino, mp)
    with _guard:
        ent = _meta.get(key)
        if ent is None:
            ent = _meta[key] = [os.open(os.path.join(mp, ".meta", ".log"), os.O_RDONLY | os.O_CLOEXEC), 0]
        ent[1] += 1
    try:
        yield ent[0]
    finally:
        with _guard:
            ent[1] -= 1
            if ent[1] == 0:
                os.close(ent[0])
                _meta.pop(key, None)


@contextlib.contextmanager
def host_volume_lock(fd: int, what: str, timeout: float | None) -> Iterator[list[str]]:
    """Hold the volume lock the way famfs's writers and daxmode's exclude each other (module
    docstring); yields the mount points whose ``.meta/.log`` is held."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    mounts = famfs_mounts_of(fd)
    if not mounts:
        with volume_lock(fd, what, timeout):
            yield []
        return
    me = os.fstat(fd)
    with contextlib.ExitStack() as held:
        for mp, _ours in mounts:
            lfd = held.enter_context(_meta_log(me, mp))
            held.enter_context(volume_lock(lfd, f"{mp}/.meta/.log", left()))
        if not any(ours for _mp, ours in mounts):
            held.enter_context(volume_lock(fd, what, left()))
        yield [mp for mp, _ in mounts]
