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

A daxmode mount is recognised by the ``user.daxmode.stats`` attribute its root lists.  The lock
file descriptors are kept by the caller (one per mount, reused by nested calls, which the volume
lock counts as re-entry).
"""

from __future__ import annotations

import contextlib
import os
import stat
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


@contextlib.contextmanager
def host_volume_lock(
    fd: int, what: str, timeout: float | None, meta_fds: dict[str, int]
) -> Iterator[list[str]]:
    """Hold the volume lock the way famfs's writers and daxmode's exclude each other (module
    docstring); yields the mount points whose ``.meta/.log`` is held.  ``meta_fds`` caches the
    open ``.meta/.log`` of each mount for the caller (it closes them)."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    mounts = famfs_mounts_of(fd)
    if not mounts:
        with volume_lock(fd, what, timeout):
            yield []
        return
    with contextlib.ExitStack() as held:
        for mp, _ours in mounts:
            lfd = meta_fds.get(mp)
            if lfd is None:
                lfd = meta_fds[mp] = os.open(os.path.join(mp, ".meta", ".log"), os.O_RDONLY | os.O_CLOEXEC)
            held.enter_context(volume_lock(lfd, f"{mp}/.meta/.log", left()))
        if not any(ours for _mp, ours in mounts):
            held.enter_context(volume_lock(fd, what, left()))
        yield [mp for mp, _ in mounts]
