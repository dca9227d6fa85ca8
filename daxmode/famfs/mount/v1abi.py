"""The standalone famfs kernel's ioctl ABI, as pure functions over bytes (the famfs-v1 data path).

The standalone famfs module (``fs/famfs`` + the ``dev_dax_iomap`` patches: "Introduce the famfs
shared-memory file system", RFC v2, John Groves, 2024-04-29, nvdimm list; the ABI is patch 12/12,
``include/uapi/linux/famfs_ioctl.h``) is a ramfs-like file system whose regular files become DAX
files once user space hands each its extent list with ``FAMFSIOC_MAP_CREATE``.  Facts taken from
that header and from ``famfs_file_init_dax()`` in ``fs/famfs/famfs_file.c`` of the same patch:

- ``struct famfs_ioc_map`` = ``{u32 extent_type; u32 file_type; u64 file_size; u64 ext_list_count;
  struct famfs_extent {u64 offset; u64 len;} ext_list[FAMFS_MAX_EXTENTS = 2]}`` (56 bytes; the two
  enums are ints on x86-64);
- ``FAMFSIOC_MAP_CREATE = _IOW('u', 0x50, famfs_ioc_map)``, ``MAP_GET = _IOR('u', 0x51, ...)``
  (type, size and count only), ``MAP_GETEXT = _IOR('u', 0x52, struct famfs_extent)`` (copies
  ``count`` extents to the buffer), ``NOP = _IO('u', 0x53)``; module parameter
  ``famfs_kabi_version`` = 42;
- the kernel refuses a map with 0 extents (ENOSPC), more than 2 (E2BIG), an extent at offset 0
  unless the file is the superblock, an offset that is not 2 MiB aligned, a length other than
  the last that is not 2 MiB aligned, or a size beyond the extents' total (EINVAL), and a second
  map for the same file (EEXIST).  There is no interleaved extent type.

Nothing here does I/O; :mod:`daxmode.famfs.mount.v1` issues the ioctls.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from daxmode.famfs.media import layout as L

KABI_VERSION = 42
MAX_EXTENTS = 2
PMD_SIZE = 0x200000
SIMPLE_DAX_EXTENT = 0
FILE_REG, FILE_SUPERBLOCK, FILE_LOG = 0, 1, 2
FILE_TYPE_NAMES = {FILE_REG: "regular", FILE_SUPERBLOCK: "superblock", FILE_LOG: "log"}
FSTYPE = "famfs"
"""The fstype the module registers (``/proc/filesystems``, mountinfo)."""
SUPER_MAGIC = 0x87B282FF
"""``FAMFS_SUPER_MAGIC`` in ``include/uapi/linux/magic.h`` of the series (statfs f_type)."""

MAP = struct.Struct("<IIQQ" + "QQ" * MAX_EXTENTS)
EXTENT = struct.Struct("<QQ")

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
_MAGIC = ord("u")


def _ioc(direction: int, nr: int, size: int) -> int:
    """asm-generic/ioctl.h: dir<<30 | size<<16 | type<<8 | nr."""
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


MAP_CREATE = _ioc(_IOC_WRITE, 0x50, MAP.size)
MAP_GET = _ioc(_IOC_READ, 0x51, MAP.size)
MAP_GETEXT = _ioc(_IOC_READ, 0x52, EXTENT.size)
NOP = _ioc(_IOC_NONE, 0x53, 0)


@dataclass(frozen=True)
class V1Map:
    """One file's map as the module holds it: type, size and (device offset, length) extents."""

    file_type: int
    size: int
    extents: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "file_type": FILE_TYPE_NAMES.get(self.file_type, str(self.file_type)),
            "size": self.size,
            "extents": [{"offset": o, "length": n} for o, n in self.extents],
        }


def pack_map(m: V1Map) -> bytes:
    """The ``famfs_ioc_map`` bytes for MAP_CREATE (unused extent slots zero)."""
    if not 1 <= len(m.extents) <= MAX_EXTENTS:
        raise ValueError(f"{len(m.extents)} extents: the famfs-v1 ABI carries 1..{MAX_EXTENTS}")
    flat: list[int] = []
    for off, ln in m.extents:
        flat += [off, ln]
    flat += [0, 0] * (MAX_EXTENTS - len(m.extents))
    return MAP.pack(SIMPLE_DAX_EXTENT, m.file_type, m.size, len(m.extents), *flat)


def unpack_map_header(buf: bytes | bytearray) -> tuple[int, int, int]:
    """(extent_type, file size, extent count) of a MAP_GET answer; the kernel leaves the type of
    file and the extents zero there."""
    ext_type, _ftype, size, count, *_ = MAP.unpack_from(buf)
    return ext_type, size, count


def getext_buffer(count: int) -> bytearray:
    """A buffer MAP_GETEXT may fill: the kernel copies ``count`` extents, more than the 16 bytes
    the ioctl number declares, so the buffer must hold them all."""
    return bytearray(EXTENT.size * max(count, 1))


def unpack_extents(buf: bytes | bytearray, count: int) -> tuple[tuple[int, int], ...]:
    return tuple(EXTENT.unpack_from(buf, i * EXTENT.size) for i in range(count))


def map_problems(m: V1Map) -> list[str]:
    """The module's own refusals for this map ([] if it would accept it): checked here so that a
    map it would refuse is never sent."""
    out: list[str] = []
    n = len(m.extents)
    if not 1 <= n <= MAX_EXTENTS:
        out.append(f"{n} extents; the famfs-v1 kernel takes 1..{MAX_EXTENTS}")
    for i, (off, ln) in enumerate(m.extents):
        if off == 0 and m.file_type != FILE_SUPERBLOCK:
            out.append(f"extent {i} at offset 0 (only the superblock may start there)")
        if off % PMD_SIZE:
            out.append(f"extent {i} offset {off:#x} is not 2 MiB aligned")
        if i < n - 1 and ln % PMD_SIZE:
            out.append(f"extent {i} length {ln:#x} is not 2 MiB aligned (only the last may be)")
    total = sum(ln for _o, ln in m.extents)
    if m.size > total:
        out.append(f"size {m.size} exceeds the {total} bytes of its extents")
    return out


def _coalesce(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, ln in runs:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + ln)
        else:
            out.append((off, ln))
    return out


def plan_file(meta: L.FileMeta) -> V1Map | str:
    """The v1 map for a log FILE entry, or why the v1 ABI cannot express it.

    Simple extents are sent as logged, with physically adjacent ones merged.  An interleaved file
    is unrolled into its chunks in file order (the device runs :func:`L.file_segments` gives),
    merged where adjacent: the v1 module has no interleave, so this works only when the result
    is at most two extents (a file within two chunks, or strips laid out back to back)."""
    if any(dev != 0 for dev, _o, _n in meta.extents):
        return "extents on a device other than device 0 (a famfs-v1 mount has one device)"
    if meta.interleaved:
        if meta.chunk_size <= 0 or meta.nstrips <= 0:
            return "interleaved entry without a chunk size or strips"
        runs = _coalesce(L.file_segments(meta, 0, meta.size))
        what = f"interleaved ({meta.nstrips} strips, chunk {meta.chunk_size:#x})"
    else:
        runs = _coalesce([(off, ln) for _d, off, ln in meta.extents])
        what = "simple"
    if len(runs) > MAX_EXTENTS:
        return (
            f"{what} file needs {len(runs)} extents after merging adjacent ones; "
            f"the famfs-v1 kernel holds at most {MAX_EXTENTS} per file"
        )
    m = V1Map(FILE_REG, meta.size, tuple(runs))
    bad = map_problems(m)
    return "; ".join(bad) if bad else m


def meta_maps(sb: L.Superblock) -> dict[str, V1Map]:
    """The maps of ``.meta/.superblock`` (the first 2 MiB) and ``.meta/.log`` (``log_len`` at
    2 MiB), as famfs's own user space creates them on a v1 mount."""
    return {
        ".superblock": V1Map(FILE_SUPERBLOCK, L.SUPERBLOCK_REGION, ((0, L.SUPERBLOCK_REGION),)),
        ".log": V1Map(FILE_LOG, sb.log_len, ((L.LOG_OFFSET, sb.log_len),)),
    }
