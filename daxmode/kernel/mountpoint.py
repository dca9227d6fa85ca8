"""Mount points held by handle, so a path swapped under root cannot steer a mount or an unmount.

A mount point given by name is looked up twice if it is checked and then passed to ``mount(2)``;
a user who controls a directory on the path can swap it in between (a symlink to ``/etc``, say)
and redirect root's mount.  Here a mount point is opened once (``O_PATH|O_NOFOLLOW``), checked
through that descriptor, and mounted on with the new mount API: ``fsopen``/``fsconfig``/
``fsmount`` build a detached mount and ``move_mount`` attaches it to the held directory
(Linux >= 5.2; fuse takes its options through ``fsconfig`` since 5.4, fs/fuse/inode.c
``fuse_parse_param``).  The path must be the directory's own name: a symlink as its last
component or anywhere before it is refused (``/proc/self/fd/N`` shows what the handle resolved
to).  The server unmounts through the directory it holds (``umount2`` of ``/proc/self/fd/N``
reaches the mount on top of it); a command without that handle goes through the held parent and
the name with ``UMOUNT_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
from dataclasses import dataclass

from daxmode.errors import InvalidArgument, UnsafePath
from daxmode.kernel.mounts import mount_at
from daxmode.kernel.paths import fd_path
from daxmode.sysfs import Sysfs

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
# Syscall numbers of the new mount API: one table for every architecture but alpha
# (include/uapi/asm-generic/unistd.h, arch/x86/entry/syscalls/syscall_64.tbl: 428-432).
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
# include/uapi/linux/mount.h

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """The C library with errno kept (ctypes), shared with the server's own mmap calls."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def _sys(what: str, nr: int, *args: object) -> int:
    rc = libc().syscall(ctypes.c_long(nr), *args)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return int(rc)


@dataclass
class MountPoint:
    """A directory held by handle: ``fd`` is the directory (-1 if only the parent is held),
    ``parent`` its parent, ``name`` its entry there; ``path`` is the canonical absolute path."""

    path: str
    parent: int
    name: str
    fd: int

    def close(self) -> None:
        for fd in (self.fd, self.parent):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.parent = -1

    def __enter__(self) -> MountPoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entry(self) -> os.stat_result:
        """lstat of ``name`` in the held parent (a mount's root once something is mounted there)."""
        return os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)

    def inside(self, rel: str) -> str:
        """A path to ``rel`` under the held directory's name (what is mounted there, once it is),
        reached through the held parent: no component above can be swapped."""
        return f"{fd_path(self.parent)}/{self.name}/{rel}"

    def umount(self, flags: int = 0) -> None:
        """umount2 of what is mounted on the held directory; OSError with the errno (EBUSY while
        files are open, EINVAL if nothing is mounted there).

        With the directory held (``fd``), through ``/proc/self/fd/N``: the kernel follows the magic
        link to the directory and on into the mount on top of it, wherever the directory has been
        renamed to, without a reference that would make the mount busy.  With only the parent held,
        the name in it, never following a symlink."""
        if self.fd >= 0:
            target, flags = fd_path(self.fd), flags & ~UMOUNT_NOFOLLOW
        else:
            target, flags = f"{fd_path(self.parent)}/{self.name}", flags | UMOUNT_NOFOLLOW
        if libc().umount2(target.encode(), flags) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"umount {self.path}: {os.strerror(e)}")

    def settle(self) -> None:
        """Wait for any rename in the parent that is in flight.  ``rename(2)`` checks that neither
        name is a mount point and swaps them under the parent's lock, while a mount locks only the
        directory mounted on: a rename that passed its check just before the mount completes after
        it.  Looking up a name the dentry cache cannot know takes the parent's lock, so it returns
        only after such a rename; any later one sees the mount point and fails with EBUSY."""
        with contextlib.suppress(FileNotFoundError):
            os.stat(f".daxmode-settle-{os.urandom(8).hex()}", dir_fd=self.parent, follow_symlinks=False)


def open_mountpoint(path: str, what: str = "mount point", *, entry: bool = True) -> MountPoint:
    """Hold ``path``, which must be reached through no symlink, and (``entry``) the directory itself.

    UnsafePath for a symlink (its last component or on the way), InvalidArgument if it is missing
    or not a directory.  ``entry=False`` holds only the parent and checks the name without asking
    the file system mounted there anything (an unmount must not wait on a stuck FUSE server):
    ``readlinkat`` tells a symlink from anything else from the dentry alone."""
    ap = os.path.abspath(path)
    parent_path, name = os.path.split(ap)
    if not name:
        raise InvalidArgument(f"{what} {ap}: not a directory one can mount on")
    try:
        parent = os.open(parent_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidArgument(f"{what} {ap}: {e.strerror}") from None
    mp = MountPoint(ap, parent, name, -1)
    try:
        real = os.readlink(fd_path(parent))
        if real != parent_path:
            shown = os.path.join(real, name)
            raise UnsafePath(f"{what} {ap} is reached through a symlink (it is {shown}); name {shown} itself")
        try:
            target = os.readlink(name, dir_fd=parent)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise InvalidArgument(f"{what} {ap} does not exist") from None
            if e.errno != errno.EINVAL:  # EINVAL: not a symlink
                raise InvalidArgument(f"{what} {ap}: {e.strerror}") from None
        else:
            raise UnsafePath(f"{what} {ap} is a symlink (to {target}); name the directory itself")
        if entry:
            try:
                mp.fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                st = os.fstat(mp.fd)
            except OSError as e:
                raise InvalidArgument(f"{what} {ap}: {e.strerror}") from None
            if stat.S_ISLNK(st.st_mode):  # swapped in since the readlinkat
                raise UnsafePath(f"{what} {ap} is a symlink; name the directory itself")
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"{what} {ap} is not a directory")
    except BaseException:
        mp.close()
        raise
    return mp


def is_mount_root(mp: MountPoint) -> bool:
    """Whether something is mounted on the held directory (its device differs from its parent's;
    a bind mount of the same file system is caught by the caller's mountinfo check)."""
    return os.fstat(mp.fd).st_dev != os.fstat(mp.parent).st_dev


def is_empty(mp: MountPoint) -> bool:
    dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mp.fd)
    try:
        return not os.listdir(dfd)
    finally:
        os.close(dfd)


def hold_mountpoint(sysfs: Sysfs, path: str) -> MountPoint:
    """The mount point held by handle and checked through it: a directory reached through no
    symlink (UnsafePath), with nothing mounted on it, empty (InvalidArgument)."""
    mp = open_mountpoint(path)
    try:
        m = mount_at(sysfs, mp.path)
        if m is not None or is_mount_root(mp):
            what = f" ({m.fstype} from {m.source})" if m else ""
            raise InvalidArgument(f"{mp.path} is already a mount point{what}")
        try:
            empty = is_empty(mp)
        except OSError as e:
            raise InvalidArgument(f"mount point {mp.path}: {e.strerror}") from None
        if not empty:
            raise InvalidArgument(f"mount point {mp.path} is not empty")
    except BaseException:
        mp.close()
        raise
    return mp


def attach(fs_type: str, options: list[tuple[str, str | None]], attrs: int, mp: MountPoint) -> int:
    """Create a ``fs_type`` mount from ``options`` (key, string value or None for a flag), attach it
    on the held directory, and return the mount's descriptor (it keeps the mount busy: close it
    before a non-lazy unmount; :func:`detach` undoes the attach through it)."""
    fs = _sys(f"fsopen {fs_type}", SYS_FSOPEN, fs_type.encode(), FSOPEN_CLOEXEC)
    try:
        for key, value in options:
            cmd, v = (FSCONFIG_SET_FLAG, None) if value is None else (FSCONFIG_SET_STRING, value.encode())
            _sys(f"fsconfig {key}", SYS_FSCONFIG, fs, cmd, key.encode(), v, 0)
        _sys("fsconfig create", SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0)
        mnt = _sys("fsmount", SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs)
    try:
        flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
        _sys(f"move_mount to {mp.path}", SYS_MOVE_MOUNT, mnt, b"", mp.fd, b"", flags)
    except BaseException:
        os.close(mnt)
        raise
    return mnt


def detach(mnt: int) -> None:
    """Lazily unmount exactly the mount ``mnt`` holds (the magic link is followed to its root)."""
    if libc().umount2(fd_path(mnt).encode(), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"detaching the mount: {os.strerror(e)}")
