r"""Device access for famfs on fsdev devices: map a dax device (or an image file) as one buffer.

A devdax device is mapped with ``MAP_SHARED`` over its whole size, which is a multiple of its
``align`` (device_dax refuses mappings whose ends are not aligned).  An fsdev-mode device has no
mmap at all (its char device only opens and closes), so for the duration of the operation it is
switched to devdax and back through the mode manager, under its lock and with its rollback.
A device that is mounted is refused unless the caller names the mount that shares it: switching
it would pull the memory out from under the mount.

This layer knows nothing of famfs: it hands out :class:`Mapping`\ s, which satisfy famfs's
``Medium`` protocol; which medium a famfs command opens (this mapping or, for a device a daxmode
mount holds in fsdev mode, the mount's own) is famfs's choice (:mod:`daxmode.famfs.medium`).

Image files stand in for devices in tests and for offline preparation of a famfs image.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from daxmode import cacheflush
from daxmode.cacheflush import CacheSync
from daxmode.errors import BadMode, DeviceBusy, FamfsError, InvalidArgument, UnsafePath
from daxmode.kernel.devices import get_device, is_name, node_path, resolve_name
from daxmode.kernel.mounts import mounts_using
from daxmode.kernel.paths import fd_path
from daxmode.sysfs import Sysfs


@dataclass
class Mapping:
    """A whole device or image mapped shared (writable unless asked otherwise)."""

    buf: mmap.mmap
    size: int
    daxdev: str
    sync: CacheSync
    fd: int
    kind: str  # "devdax" or "image"
    notes: list[str] = field(default_factory=list)
    switched: bool = False
    """The device was switched from fsdev for this mapping and goes back when it closes."""
    data_mapped: bool = True
    """Every byte of the device is in ``buf``: file data can be written before its entry exists."""

    @property
    def lock_fd(self) -> int:
        """The device node's or image's inode is what every process on this host shares for it."""
        return self.fd

    @property
    def lock_name(self) -> str:
        return self.daxdev

    def prepare_file(self, meta: object) -> None:
        """Nothing to do: the whole device is mapped."""

    def close(self) -> None:
        if self.kind == "image" and not self.buf.closed:
            with contextlib.suppress(OSError, ValueError):
                self.buf.flush()
        try:
            if not self.buf.closed:
                self.buf.close()
        except BufferError:
            # Views handed out are still alive (a loop variable, say); the mapping is unmapped when
            # they go.  Harmless while the device stays in devdax, but a device switched back to
            # fsdev loses its mapping under them, so that case is an error.
            if self.switched:
                os.close(self.fd)
                raise FamfsError(
                    f"{self.daxdev}: views of the mapping are still in use while the device goes back to "
                    "fsdev; release them inside the with block"
                ) from None
        os.close(self.fd)


def looks_like_device(arg: str) -> bool:
    """``dax0.0`` or ``/dev/dax0.0`` (anything else is taken as an image file path)."""
    return is_name(arg) or (arg.startswith("/dev/") and is_name(arg[5:]))


# --- image files ----------------------------------------------------------------------------
def create_image(path: str | os.PathLike[str], size: int) -> None:
    """A sparse image of ``size`` bytes (multiple of 2 MiB), like a fresh device."""
    if size <= 0 or size % (2 << 20):
        raise InvalidArgument(f"image size {size}: must be a positive multiple of 2 MiB")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def open_image(path: str | os.PathLike[str], *, writable: bool) -> int:
    """A descriptor of the image file ``path``, for root as for anyone: a regular file named by its
    own path (UnsafePath for a symlink, as its last component or on the way), nothing else
    (InvalidArgument; a device node or FIFO is never even opened).  ``lstat`` first, then
    ``O_NOFOLLOW`` and the same inode, then the path the descriptor really has."""
    shown = os.fspath(path)
    try:
        st = os.lstat(path)
    except OSError as e:
        raise InvalidArgument(f"{shown}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{shown} is a symlink (to {os.readlink(path)}); name the image file itself")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{shown} is not a regular file: an image must be one (or use a dax device)")
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"{shown} is a symlink; name the image file itself") from None
        raise InvalidArgument(f"{shown}: {e.strerror}") from None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            raise UnsafePath(f"{shown} was replaced while it was opened; try again")
        real = os.readlink(fd_path(fd))
        if real != os.path.abspath(path):
            raise UnsafePath(f"{shown} is reached through a symlink (it is {real}); name {real} itself")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def map_image(path: str | os.PathLike[str], *, writable: bool = True) -> Iterator[Mapping]:
    """Map an image file shared (:func:`open_image` decides what may be one); the page cache is
    coherent, so no cache flushing is needed."""
    fd = open_image(path, writable=writable)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InvalidArgument(f"{os.fspath(path)}: empty image")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        buf = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    except BaseException:
        os.close(fd)
        raise
    m = Mapping(
        buf, size, os.fspath(path), cacheflush.NoSync("image file: page cache is coherent"), fd, "image"
    )
    try:
        yield m
    finally:
        m.close()


# --- dax devices ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DaxInfo:
    name: str
    size: int
    align: int
    mode: str | None  # devdax, fsdev, system-ram, None (unbound) or the driver name


def dax_info(sysfs: Sysfs, name: str) -> DaxInfo:
    dev = get_device(sysfs, name)
    if dev.legacy:
        raise BadMode(f"{name} uses the legacy /sys/class/dax model; famfs needs a dax-bus device")
    mode = dev.mode.value if dev.mode is not None else dev.driver
    return DaxInfo(dev.name, dev.size, dev.align or 4096, mode)


def mounted_at(sysfs: Sysfs, name: str) -> list[str]:
    """Mount points using ``/dev/<name>`` (famfs v1 and fuse mounts both name the device)."""
    return [m.mount_point for m in mounts_using(sysfs, name)]


def _map_devdax(sysfs: Sysfs, info: DaxInfo, writable: bool) -> Mapping:
    path = node_path(sysfs, info.name)
    shown = f"/dev/{info.name}"
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as e:
        raise FamfsError(f"cannot open {shown}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        length = info.size - info.size % info.align
        if sysfs.is_real and not stat.S_ISCHR(st.st_mode):
            raise UnsafePath(f"{shown} is not a character device; refusing to treat it as {info.name}")
        if stat.S_ISREG(st.st_mode):  # simulated tree: the "device node" is a file holding the memory
            if st.st_size < length:
                raise FamfsError(f"{shown}: simulated device file is too small")
            sync: CacheSync = cacheflush.NoSync("simulated device file")
        else:
            sync = cacheflush.get()
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            buf = mmap.mmap(fd, length, mmap.MAP_SHARED, prot)
        except OSError as e:
            raise FamfsError(
                f"mmap of /dev/{info.name} ({length} bytes, align {info.align}) failed: {e.strerror}"
            ) from None
    except BaseException:
        os.close(fd)
        raise
    notes = [] if isinstance(sync, cacheflush.NativeSync) else [f"cache flushing: {sync.name}"]
    return Mapping(buf, length, f"/dev/{info.name}", sync, fd, "devdax", notes)


@dataclass
class Claim:
    """A device held under its lock, with what a caller decides by: its mode and its mounts."""

    sysfs: Sysfs
    info: DaxInfo
    mounts: list[str]
    """Mount points using ``/dev/<name>``."""
    held: contextlib.ExitStack

    @property
    def name(self) -> str:
        return self.info.name

    def release(self) -> None:
        """Let go of the device lock now (the mapping, if any, stays)."""
        self.held.close()


@contextlib.contextmanager
def claim_device(sysfs: Sysfs, name: str) -> Iterator[Claim]:
    """Hold ``name``'s device lock and read its mode and mounts under it: another process's
    session may be switching the device between fsdev and devdax right now (a real-kernel run
    caught a writer reading "no driver" in that window)."""
    from daxmode.runstate.locks import device_lock

    name = resolve_name(sysfs, name)
    with contextlib.ExitStack() as held:
        held.enter_context(device_lock(sysfs, name))
        yield Claim(sysfs, dax_info(sysfs, name), mounted_at(sysfs, name), held)


@contextlib.contextmanager
def map_claimed(c: Claim, *, writable: bool = True, shared_with: str | None = None) -> Iterator[Mapping]:
    """Map a claimed device; an fsdev device is switched to devdax for the duration and back.

    Refuses a mounted device (DeviceBusy) unless ``shared_with`` names its one mount, which then
    must keep the device in devdax mode (daxmode's server on the copy data path maps it too); a
    system-ram device and an unbound one (BadMode).  A devdax device's lock is released once it
    is mapped; an fsdev device keeps it for the whole session, through the switch and back."""
    name, info = c.name, c.info
    if c.mounts and shared_with is None:
        raise DeviceBusy(
            f"{name} is mounted at {', '.join(c.mounts)}; unmount it first (daxmode famfs umount)"
        )
    if shared_with is not None and info.mode != "devdax":
        raise DeviceBusy(f"{name} is mounted at {shared_with} but in {info.mode} mode; unmount it first")
    if info.mode == "devdax":
        m = _map_devdax(c.sysfs, info, writable)
        if shared_with is not None:
            m.notes.append(
                f"{name} is mounted at {shared_with} (copy data path); the mount sees these changes"
            )
        c.release()
        try:
            yield m
        finally:
            m.close()
        return
    if info.mode == "fsdev":
        from daxmode.modes import Mode, temporary_mode

        with temporary_mode(c.sysfs, name, Mode.DEVDAX):
            m = _map_devdax(c.sysfs, dax_info(c.sysfs, name), writable)
            m.notes.append(f"{name} was switched from fsdev to devdax for this operation and back")
            m.switched = True
            try:
                yield m
            finally:
                m.close()
        return
    if info.mode is None:
        raise BadMode(f"{name} has no driver bound; bind it first (daxmode set {name} devdax)")
    raise BadMode(
        f"{name} is in {info.mode} mode; famfs needs devdax or fsdev "
        f"(daxmode set {name} devdax, with --force if its memory is online)"
    )


@contextlib.contextmanager
def map_device(sysfs: Sysfs, name: str, *, writable: bool = True) -> Iterator[Mapping]:
    """Map dax device ``name`` (:func:`claim_device`, :func:`map_claimed`); any mount refuses it."""
    with claim_device(sysfs, name) as c, map_claimed(c, writable=writable) as m:
        yield m
