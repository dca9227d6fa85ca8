"""A famfs medium reached through a mounted famfs (DAX data path), for a device in fsdev mode.

An fsdev-mode device has no read, write or mmap (dax V10 3/8), so while it is mounted the only
way to its memory is the mount itself, as famfs's own tools do: ``.meta/.superblock`` is the
device's first 2 MiB, ``.meta/.log`` the log, and every file is mapped by DAX onto its extents.

:class:`MountMapping` stitches those into one buffer laid out like the device: a reservation of
the device's size (private, anonymous, ``MAP_NORESERVE``: it costs no memory) over which the
superblock and log files are mapped with ``MAP_FIXED`` at offsets 0 and 2 MiB.  A file's data is
mapped at its extents' device offsets the first time the volume asks for its segments
(:meth:`MountMapping.prepare_file`, called by :meth:`daxmode.famfs.media.volume.Volume.segments`), so
the :class:`~daxmode.famfs.media.volume.Volume` code runs unchanged on it.  Untouched parts of the
reservation read as zeros and are never handed out.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass, field

from daxmode import cacheflush
from daxmode.cacheflush import CacheSync
from daxmode.errors import FamfsError
from daxmode.famfs.media import layout as L

PAGE = mmap.PAGESIZE
MAP_FIXED = 0x10
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc_mmap():
    from daxmode.kernel.mountpoint import libc

    fn = libc().mmap
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    return fn


def _address(buf: mmap.mmap) -> int:
    ref = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(ref)
    finally:
        del ref  # drop the export, or the mmap can never be closed


@dataclass
class MountMapping:
    """The famfs ``Medium`` of a DAX-mounted volume (see the module docstring)."""

    mountpoint: str
    buf: mmap.mmap
    size: int
    daxdev: str
    sync: CacheSync
    fd: int
    """.meta/.log, open: flocked by :meth:`lock` like famfs flocks it."""
    writable: bool
    kind: str = "mount"
    notes: list[str] = field(default_factory=list)
    data_mapped: bool = False
    """Only files reach data here (each mapped once its entry is played), not ``buf`` as a whole."""
    switched: bool = False
    _base: int = 0
    _mapped: set[int] = field(default_factory=set)

    def _map(self, path: str, dev_off: int, file_off: int, length: int) -> None:
        length = -(-length // PAGE) * PAGE
        if dev_off % PAGE or file_off % PAGE or dev_off + length > self.size:
            raise FamfsError(f"{path}: cannot map {length:#x} bytes at device offset {dev_off:#x}")
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as e:
            raise FamfsError(f"{path}: {e.strerror}") from None
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
            addr = _libc_mmap()(self._base + dev_off, length, prot, mmap.MAP_SHARED | MAP_FIXED, fd, file_off)
            if addr in (None, _MAP_FAILED):
                raise FamfsError(f"mmap of {path} failed: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def prepare_file(self, meta: L.FileMeta) -> None:
        """Map ``meta``'s data (through its file in the mount) at its device offsets, once."""
        if meta.index in self._mapped:
            return
        path = os.path.join(self.mountpoint, meta.path)
        end = -(-meta.size // PAGE) * PAGE
        if meta.interleaved:
            pos = 0
            offs = [e[1] for e in meta.extents]
            while pos < end:
                n = min(meta.chunk_size - pos % meta.chunk_size, end - pos)
                dev = L.interleave_offset(pos, meta.nstrips, meta.chunk_size, offs)
                self._map(path, dev, pos, n)
                pos += n
        else:
            pos = 0
            for _d, off, ln in meta.extents:
                n = min(ln, end - pos)
                if n <= 0:
                    break
                self._map(path, off, pos, n)
                pos += ln
        self._mapped.add(meta.index)

    @property
    def lock_fd(self) -> int:
        """.meta/.log (famfs's tools flock that file too): every process on this host reaching the
        volume through the mount shares its inode."""
        return self.fd

    @property
    def lock_name(self) -> str:
        return f"{self.mountpoint}/.meta/.log"

    def close(self) -> None:
        try:
            if not self.buf.closed:
                self.buf.close()
        finally:
            os.close(self.fd)


def read_superblock_via_mount(mountpoint: str, device_size: int) -> tuple[bytes, L.Superblock]:
    """The checked superblock of the famfs mounted at ``mountpoint``, read from ``.meta/.superblock``."""
    try:
        with open(os.path.join(mountpoint, ".meta", ".superblock"), "rb") as f:
            head = f.read(L.SB_SIZE)
    except OSError as e:
        raise FamfsError(f"{mountpoint}: cannot read .meta/.superblock: {e.strerror}") from None
    problems = L.superblock_problems(head, device_size)
    if problems:
        raise FamfsError(f"{mountpoint}/.meta/.superblock: {problems[0]}")
    return head, L.unpack_superblock(head)


def open_via_mount(mountpoint: str, daxdev: str, device_size: int, *, writable: bool) -> MountMapping:
    """Map ``.meta/.superblock`` and ``.meta/.log`` of the famfs mounted at ``mountpoint``."""
    meta = os.path.join(mountpoint, ".meta")
    _head, sb = read_superblock_via_mount(mountpoint, device_size)
    total = L.LOG_OFFSET + sb.log_len
    size = max(device_size, total)
    buf = mmap.mmap(
        -1,
        size,
        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
    )
    log = os.path.join(meta, ".log")
    try:
        fd = os.open(log, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as e:
        buf.close()
        raise FamfsError(f"{log}: {e.strerror}") from None
    m = MountMapping(mountpoint, buf, size, daxdev, cacheflush.get(), fd, writable)
    m._base = _address(buf)
    try:
        m._map(os.path.join(meta, ".superblock"), 0, 0, L.SUPERBLOCK_REGION)
        m._map(log, L.LOG_OFFSET, 0, sb.log_len)
    except BaseException:
        m.close()
        raise
    m.notes.append(
        f"{daxdev} is mounted at {mountpoint} (fsdev, DAX): metadata and data go through the mount"
    )
    return m


class MountLog:
    """The log as the mount server reads it: ``pread`` of ``.meta/.log`` into a private copy.

    The server never faults on a mapping of its own mount: on a page-cache (non-DAX) kernel such a
    fault would need a READ answered by a worker thread that cannot run while the faulting thread
    holds Python's GIL.  ``invalidate`` (the :class:`~daxmode.cacheflush.CacheSync` call the
    namespace makes before it reads) re-reads the range; with a native cache syncer it first
    invalidates the CPU cache lines through a read-only mapping that is never read, so on a DAX
    mount another host's appends are seen on non-coherent memory too.
    """

    def __init__(self, path: str, log_len: int, sync: CacheSync) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.buf = bytearray(log_len)
        self.view = memoryview(self.buf)
        self.flush: CacheSync | None = None
        self.map: mmap.mmap | None = None
        if isinstance(sync, cacheflush.NativeSync):
            self.map = mmap.mmap(self.fd, log_len, mmap.MAP_SHARED, mmap.PROT_READ)
            self.flush = sync
        self.name = f"pread of {path}" + (f" after {sync.name}" if self.flush else "")

    def invalidate(self, buf: object, off: int, length: int) -> None:
        if self.flush is not None and self.map is not None:
            self.flush.invalidate(self.map, off, length)
        got = os.preadv(self.fd, [self.view[off : off + length]], off)
        if got != length:
            raise FamfsError(f"short read of the log through the mount ({got} of {length} bytes at {off})")

    def writeback(self, buf: object, off: int, length: int) -> None:
        raise FamfsError("the mount server never writes the log")

    def fence(self) -> None:
        return None

    def close(self) -> None:
        self.view.release()
        if self.map is not None:
            self.map.close()
        os.close(self.fd)
