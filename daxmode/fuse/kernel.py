"""The kernel edges of a FUSE mount: ``/dev/fuse``, the mount on a held directory, the INIT probe.

Mounting takes the options a privileged libfuse passes (``lib/mount.c`` ``fuse_mount_sys``), directly
through the kernel: no fusermount, no ``mount(8)`` (which may exec a ``mount.fuse*``
helper).  The mount is attached to a mount point held by handle (:mod:`daxmode.kernel.mountpoint`)
with the new mount API, so the directory checked is the directory mounted on.  The kernel queues
INIT when the mount is created; the mount is usable once INIT is answered on the /dev/fuse fd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import time
from dataclasses import dataclass

from daxmode.fuse import proto as P
from daxmode.kernel.mountpoint import (
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MountPoint,
    attach,
    detach,
    open_mountpoint,
)

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
