"""The kernel edges of a FUSE mount: ``/dev/fuse``, ``mount(2)``, ``umount2(2)``, the INIT probe.

Mounting is done the way a privileged libfuse does it (libfuse ``lib/mount.c`` ``fuse_mount_sys``:
the ``fd=,rootmode=,user_id=,group_id=`` mount data), directly through libc with ctypes: no
fusermount, no ``mount(8)`` (which may exec a ``mount.fuse*`` helper). ``mount(2)`` returns after
the kernel has queued INIT; the mount is usable once INIT is answered on the returned file
descriptor."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import stat
import time
from dataclasses import dataclass

from daxmode.fuse import proto as P

DEV_FUSE = "/dev/fuse"
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOATIME = 1024
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


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


def mount(source: str, target: str, fs_type: str, flags: int, data: str) -> None:
    """mount(2); raises OSError with the errno."""
    rc = libc().mount(source.encode(), target.encode(), fs_type.encode(), flags, data.encode())
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2); raises OSError (EBUSY while files are open, EINVAL if not a mount point)."""
    rc = libc().umount2(target.encode(), flags | UMOUNT_NOFOLLOW)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


@dataclass
class Connection:
    """A mounted FUSE connection before INIT: the /dev/fuse fd and where it is mounted."""

    fd: int
    mountpoint: str
    source: str
    fs_type: str


def mount_fuse(
    source: str,
    mountpoint: str,
    subtype: str,
    *,
    uid: int = 0,
    gid: int = 0,
    flags: int = MS_NOSUID | MS_NODEV,
    allow_other: bool = True,
    default_permissions: bool = True,
) -> Connection:
    """Open /dev/fuse and mount it on ``mountpoint``; INIT is waiting on the returned fd."""
    st = os.stat(mountpoint)
    fd = open_dev_fuse()
    try:
        data = mount_options(
            fd, st.st_mode, uid, gid, allow_other=allow_other, default_permissions=default_permissions
        )
        mount(source, mountpoint, fstype(subtype), flags, data)
    except BaseException:
        os.close(fd)
        raise
    return Connection(fd, mountpoint, source, fstype(subtype))


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
        conn = mount_fuse("daxmode-probe", mnt, "daxmode-probe", allow_other=False)
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
                umount(mnt, MNT_DETACH)
            os.close(conn.fd)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mnt)
    return InitProbe(init.minor, init.flags, init.max_readahead)


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
