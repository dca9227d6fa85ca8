"""The kernel edges of a FUSE mount: ``/dev/fuse``, the mount on a held directory, the INIT probe.

Mounting takes the options a privileged libfuse passes (libfuse ``lib/mount.c`` ``fuse_mount_sys``:
``fd=,rootmode=,user_id=,group_id=``), directly
through the kernel: no fusermount, no ``mount(8)`` (which may exec a ``mount.fuse*``
helper).  The mount is attached to a mount point held by handle (:mod:`daxmode.kernel.mountpoint`)
with the new mount API, so the directory checked is the directory mounted on.  The kernel queues
INIT when the mount is created; the mount is usable once INIT is answered on the /dev/fuse fd.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from dataclasses import dataclass

from daxmode.fuse import proto as P

DEV_FUSE = "/dev/fuse"


def mount_options(
    fd: int,
    rootmode: int,
    uid: int = 0,
    gid: int = 0,
    *,
    allow_other: bool = True,
    default_permissions: bool = True,
    max_read: int | None = None,
) -> str:
    """The fuse ``data`` string: ``fd``, ``rootmode`` (octal file type), ``user_id``, ``group_id`` are
    required; ``allow_other`` lets every user in and ``default_permissions`` has the kernel enforce
    the modes the server reports.  No famfs option exists in V4+ kernels (``shadow=`` is RFC..V3)."""
    opts = [f"fd={fd}", f"rootmode={stat.S_IFMT(rootmode):o}", f"user_id={uid}", f"group_id={gid}"]
    if allow_other:
        opts.append("allow_other")
    if default_permissions:
        opts.append("default_permissions")
    if max_read:
        opts.append(f"max_read={max_read}")
    return ",".join(opts)


def fstype(subtype: str) -> str:
    return f"fuse.{subtype}" if subtype else "fuse"


def open_dev_fuse() -> int:
    """Open ``/dev/fuse`` read-write, close-on-exec."""
    try:
        return os.open(DEV_FUSE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"{DEV_FUSE}: {os.strerror(e.errno or errno.EIO)}") from None


def read_request(fd: int, size: int = 1 << 17, timeout: float | None = None) -> bytes:
    """One request from /dev/fuse (the INIT probe and tests; the server reads into its own buffers)."""
    if timeout is not None:
        r, _w, _x = select.select([fd], [], [], timeout)
        if not r:
            raise TimeoutError("no request from the kernel")
    return os.read(fd, max(size, P.MIN_READ_BUFFER))


@dataclass(frozen=True)
class InitProbe:
    """What the kernel offers at INIT on this machine, learnt from a throw-away mount."""

    minor: int
    flags: int
    max_readahead: int

    @property
    def dax_fmap(self) -> bool:
        return bool(self.flags & P.DAX_FMAP)

    @property
    def direct_io_allow_mmap(self) -> bool:
        return bool(self.flags & P.DIRECT_IO_ALLOW_MMAP)


def connection_id(mountpoint: str) -> int | None:
    """The fuse connection number (/sys/fs/fuse/connections/N) = the mount's minor device number."""
    try:
        return os.minor(os.stat(mountpoint).st_dev)
    except OSError:
        return None


def abort_connection(conn_id: int, sys_root: str = "/sys") -> bool:
    """Abort a fuse connection whose server is stuck; every pending request fails with ENOTCONN."""
    try:
        with open(os.path.join(sys_root, f"fs/fuse/connections/{conn_id}/abort"), "w") as f:
            f.write("1")
        return True
    except OSError:
        return False
