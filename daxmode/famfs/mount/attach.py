"""A FUSE mount attached to a mount point held by handle, and the throw-away INIT probe.

Mounting takes the options a privileged libfuse passes (libfuse ``lib/mount.c`` ``fuse_mount_sys``:
``fd=,rootmode=,user_id=,group_id=``), directly through the kernel: no fusermount, no ``mount(8)``
(which may exec a ``mount.fuse*`` helper).  The mount is attached to a mount point held by handle
(:mod:`daxmode.kernel.mountpoint`) with the new mount API, so the directory checked is the
directory mounted on.  The kernel queues INIT when the mount is created; the mount is usable once
INIT is answered on the /dev/fuse fd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass

from daxmode.fuse import proto as P
from daxmode.fuse.kernel import InitProbe, fstype, mount_options, open_dev_fuse, read_request
from daxmode.kernel.mountpoint import (
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MountPoint,
    attach,
    detach,
    open_mountpoint,
)


@dataclass
class Connection:
    """A mounted FUSE connection before INIT: the /dev/fuse fd, the mount point it was attached to
    (held by handle) and the mount's own descriptor (``mount_fd``, -1 once released)."""

    fd: int
    mountpoint: MountPoint
    source: str
    fs_type: str
    mount_fd: int = -1

    def placed(self) -> bool:
        """After INIT: the mount point's name still leads to this mount (not to a directory or a
        symlink swapped in before the attach).  Asks the server for the root's attributes."""
        assert self.mount_fd >= 0
        try:
            self.mountpoint.settle()
            return self.mountpoint.entry().st_dev == os.fstat(self.mount_fd).st_dev
        except OSError:
            return False

    def release_mount_fd(self) -> None:
        """Drop the mount's descriptor (it keeps the mount busy for a non-lazy unmount)."""
        if self.mount_fd >= 0:
            os.close(self.mount_fd)
            self.mount_fd = -1


def mount_fuse(
    source: str,
    mountpoint: MountPoint,
    subtype: str,
    *,
    uid: int = 0,
    gid: int = 0,
    attrs: int = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    allow_other: bool = True,
    default_permissions: bool = True,
) -> Connection:
    """Open /dev/fuse and attach a fuse mount on the held ``mountpoint`` (fsopen/fsmount/move_mount:
    the directory checked is the one mounted on); INIT is waiting on the returned fd.  The same
    options as the ``data`` string of mount(2) (``fuse_parse_param``), given one by one."""
    rootmode = os.fstat(mountpoint.fd).st_mode
    fd = open_dev_fuse()
    try:
        opts = mount_options(
            fd, rootmode, uid, gid, allow_other=allow_other, default_permissions=default_permissions
        )
        params: list[tuple[str, str | None]] = [("source", source)]
        if subtype:
            params.append(("subtype", subtype))
        for o in opts.split(","):
            k, eq, v = o.partition("=")
            params.append((k, v if eq else None))
        mnt = attach("fuse", params, attrs, mountpoint)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.ENOSYS:
            raise OSError(e.errno, f"{e.strerror}: the new mount API (Linux >= 5.4) is missing") from None
        raise
    except BaseException:
        os.close(fd)
        raise
    return Connection(fd, mountpoint, source, fstype(subtype), mnt)


def probe_init(workdir: str, timeout: float = 10.0) -> InitProbe:
    """Mount a throw-away fuse file system under ``workdir``, read its INIT, refuse it, unmount.

    The famfs flag (``FUSE_DAX_FMAP``) is offered only by a famfs kernel and only to a mounter with
    CAP_SYS_RAWIO (V10 02/04), so this answers exactly "can this process mount with the dax path".
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(workdir, 0o700)  # its parent is the caller's (checked) run directory
    mnt = os.path.join(workdir, f"probe-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(mnt, 0o700)
    try:
        with open_mountpoint(mnt) as held:
            init = _probe_on(held, timeout)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mnt)
    return InitProbe(init.minor, init.flags, init.max_readahead)


def _probe_on(held: MountPoint, timeout: float) -> P.InitIn:
    conn = mount_fuse("daxmode-probe", held, "daxmode-probe", allow_other=False)
    try:
        raw = read_request(conn.fd, timeout=timeout)
        h = P.parse_in_header(raw)
        if h.opcode != P.INIT:
            raise OSError(errno.EPROTO, f"first request was opcode {h.opcode}, not INIT")
        init = P.parse_init_in(memoryview(raw)[P.IN_HEADER.size :])
        with contextlib.suppress(OSError):
            os.write(conn.fd, P.reply_error(h.unique, errno.EPROTO))
    finally:
        with contextlib.suppress(OSError):
            detach(conn.mount_fd)
        conn.release_mount_fd()
        os.close(conn.fd)
    return init
