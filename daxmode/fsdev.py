"""Device access for famfs on fsdev devices: map a dax device (or an image file) as one buffer.

A devdax device is mapped with ``MAP_SHARED`` over its whole size, which is a multiple of its
``align`` (device_dax refuses mappings whose ends are not aligned).  An fsdev-mode device has no
mmap at all (its char device only opens and closes), so for the duration of the operation it is
switched to devdax and back through the mode manager, under its lock and with its rollback.
A device that is mounted is refused: switching it would pull the memory out from under famfs.

Image files stand in for devices in tests and for offline preparation of a famfs image.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from daxmode import cacheflush
from daxmode.cacheflush import CacheSync
from daxmode.errors import BadMode, DeviceBusy, FamfsError, InvalidArgument
from daxmode.famfs.media.lock import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from daxmode.famfs.media.lock import volume_lock
from daxmode.kernel.devices import get_device, is_name, node_path, resolve_name
from daxmode.kernel.mounts import mounts_using
from daxmode.sysfs import Sysfs


@dataclass
class Mapping:
    """A whole device or image mapped shared and writable; the famfs ``Medium``."""

    buf: mmap.mmap
    size: int
    daxdev: str
    sync: CacheSync
    fd: int
    kind: str  # "devdax" or "image"
    notes: list[str] = field(default_factory=list)
    switched: bool = False
    """The device was switched from fsdev for this mapping and goes back when it closes."""

    def lock(self, timeout: float | None = DEFAULT_LOCK_TIMEOUT) -> contextlib.AbstractContextManager[None]:
        """The volume lock: an exclusive flock on the device node's or image's inode, shared by
        every process on this host (:mod:`daxmode.famfs.media.lock`); DeviceBusy after ``timeout``."""
        return volume_lock(self.fd, self.daxdev, timeout)

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
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


@contextlib.contextmanager
def map_image(path: str | os.PathLike[str], *, writable: bool = True) -> Iterator[Mapping]:
    """Map an image file shared; the page cache is coherent, so no cache flushing is needed."""
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InvalidArgument(f"{path}: empty image")
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


def _our_mount(sysfs: Sysfs, name: str, where: list[str]) -> str | None:
    """The mount point if every mount of ``name`` is one live daxmode famfs mount, else None."""
    from daxmode.famfs.mount import records as mountstate

    if len(where) != 1:
        return None
    for r in mountstate.for_device(sysfs, name):
        if r.mountpoint == where[0] and r.phase == "live" and mountstate.server_alive(r):
            return r.mountpoint
    return None


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


@contextlib.contextmanager
def map_device(sysfs: Sysfs, name: str, *, writable: bool = True) -> Iterator[Mapping]:
    """Map dax device ``name``; an fsdev device is switched to devdax for the duration and back.

    Refuses a device mounted by anything but a live daxmode famfs mount (DeviceBusy), a system-ram
    device and an unbound one (BadMode).  The mode is read under the device lock: another process's
    session may be switching the device between fsdev and devdax right now (a real-kernel run caught
    a writer reading "no driver" in that window).  A devdax device's lock is released once it is
    mapped; an fsdev device keeps it for the whole session, through the switch and back.  While
    daxmode's FUSE server has the device mounted, a devdax device (copy data path) is mapped as
    usual and an fsdev one (dax data path) is reached through the mount (famfs.viamount)."""
    from daxmode.kernel.locks import device_lock

    name = resolve_name(sysfs, name)
    with contextlib.ExitStack() as held:
        held.enter_context(device_lock(sysfs, name))
        info = dax_info(sysfs, name)
        where = mounted_at(sysfs, name)
        via = _our_mount(sysfs, name, where) if where else None
        if where and via is None:
            at = ", ".join(where)
            raise DeviceBusy(f"{name} is mounted at {at}; unmount it first (daxmode famfs umount)")
        if via is not None and info.mode == "fsdev":  # dax data path: only the mount reaches it
            from daxmode.famfs.mount.metamap import open_via_mount

            vm = open_via_mount(via, f"/dev/{name}", info.size, writable=writable)
            held.close()
            try:
                yield vm  # type: ignore[misc]
            finally:
                vm.close()
            return
        if via is not None and info.mode != "devdax":
            raise DeviceBusy(f"{name} is mounted at {via} but in {info.mode} mode; unmount it first")
        if info.mode == "devdax":
            m = _map_devdax(sysfs, info, writable)
            if via is not None:  # copy data path: the server maps the device too
                m.notes.append(f"{name} is mounted at {via} (copy data path); the mount sees these changes")
            held.close()
            try:
                yield m
            finally:
                m.close()
            return
        if info.mode == "fsdev":
            from daxmode.modes import Mode, temporary_mode

            held.enter_context(temporary_mode(sysfs, name, Mode.DEVDAX))
            m = _map_devdax(sysfs, dax_info(sysfs, name), writable)
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
def open_medium(sysfs: Sysfs, target: str, *, writable: bool = True) -> Iterator[Mapping]:
    """A dax device by name (``dax0.0``, ``/dev/dax0.0``) or an image file by path."""
    if os.path.isfile(target) and not looks_like_device(target):
        with map_image(target, writable=writable) as m:
            yield m
        return
    if not looks_like_device(target):
        raise InvalidArgument(f"{target}: neither a dax device (daxX.Y) nor an image file")
    with map_device(sysfs, target, writable=writable) as m:
        yield m
