"""famfs GET_FMAP and GET_DAXDEV replies in the V10 wire format (V5 = V7 = V8 = V9 = V10).

Source of the layouts and limits: the V10 fuse series, patches 02-05 (``include/uapi/linux/fuse.h``)
and 04/06 (``famfs_fuse_meta_alloc`` and the iomap code), posted 2026-03-31 (cover Message-ID
``20260331123702.35052-1-john@jagalactic.com``; 03 "Plumb the GET_FMAP message/response", 05
"GET_DAXDEV message and daxdev_table"). A V10 kernel sends GET_FMAP (no body) once per in-core
regular-file inode right after a successful OPEN, and any failure fails the open(2); it sends
GET_DAXDEV with the device index in ``nodeid`` for each index an fmap references that its table
lacks.

GET_FMAP reply = ``fuse_famfs_fmap_header`` (32 bytes) followed by, for SIMPLE, ``nextents`` x
``fuse_famfs_simple_ext`` (24), or for INTERLEAVE, ``nextents`` x (``fuse_famfs_iext`` (24) +
``ie_nstrips`` x simple_ext).  The kernel's reply buffer is one page (``FMAP_BUFSIZE``), so a reply
over 4096 bytes cannot be delivered.  :func:`kernel_problems` re-checks an encoded map the way the
V10 kernel does, independently of the encoder, so tests can hold one against the other.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import NamedTuple

# header: file_type reserved fmap_version ext_type nextents reserved0 file_size reserved1
HEADER = struct.Struct("<BBHIIIQQ")
SIMPLE_EXT = struct.Struct("<IIQQ")  # se_devindex reserved se_offset se_len
IEXT = struct.Struct("<IIQQ")  # ie_nstrips ie_chunk_size ie_nbytes reserved
DAXDEV_OUT = struct.Struct("<HHIQQ256s")  # index reserved reserved2 reserved3 reserved4 name
assert HEADER.size == 32 and SIMPLE_EXT.size == 24 and IEXT.size == 24 and DAXDEV_OUT.size == 280

FMAP_VERSION = 1
FILE_REG, FILE_SUPERBLOCK, FILE_LOG = 0, 1, 2
EXT_SIMPLE, EXT_INTERLEAVE = 0, 1
MAX_EXTENTS = 32  # FUSE_FAMFS_MAX_EXTENTS
MAX_STRIPS = 32  # FUSE_FAMFS_MAX_STRIPS
FMAP_BUFSIZE = 4096  # V10: the kernel's reply buffer is PAGE_SIZE (FAMFS_FMAP_MAX 32768 is unused)
PMD = 2 << 20  # every extent/strip offset and length must be PMD aligned
MAX_DAXDEVS = 24
DAXDEV_NAME_MAX = 256
DAXDEV_OUT_SIZE = DAXDEV_OUT.size

SimpleExt = tuple[int, int, int]
"""(devindex, offset, length) in bytes."""


class FmapError(ValueError):
    """A file whose map a V10 kernel would reject; ``errno`` is what the open(2) should fail with."""

    def __init__(self, why: str, err: int = errno.EINVAL) -> None:
        super().__init__(why)
        self.errno = err


class Interleave(NamedTuple):
    chunk_size: int
    nbytes: int
    strips: Sequence[SimpleExt]


def _check_ext(what: str, dev: int, off: int, length: int) -> None:
    if dev != 0:
        raise FmapError(f"{what}: device index {dev}; V10 kernels accept only index 0")
    if length <= 0:
        raise FmapError(f"{what}: length {length}")
    if off % PMD or length % PMD:
        raise FmapError(f"{what}: offset {off:#x} / length {length:#x} not 2 MiB aligned")
    if off < 0 or off + length > 1 << 64:
        raise FmapError(f"{what}: offset {off:#x} out of range")


def _fits(n: int) -> None:
    if n > FMAP_BUFSIZE:
        raise FmapError(
            f"fmap of {n} bytes exceeds the kernel's {FMAP_BUFSIZE}-byte GET_FMAP buffer", errno.E2BIG
        )


def encode_simple(file_size: int, extents: Sequence[SimpleExt], file_type: int = FILE_REG) -> bytes:
    """A SIMPLE fmap; refuses what the V10 kernel would refuse (count, alignment, size, index)."""
    n = len(extents)
    if not 1 <= n <= MAX_EXTENTS:
        raise FmapError(f"{n} extents; the kernel takes 1..{MAX_EXTENTS}")
    total = 0
    parts = [HEADER.pack(file_type, 0, FMAP_VERSION, EXT_SIMPLE, n, 0, file_size, 0)]
    for i, (dev, off, ln) in enumerate(extents):
        _check_ext(f"extent {i}", dev, off, ln)
        total += ln
        parts.append(SIMPLE_EXT.pack(dev, 0, off, ln))
    if file_size > total:
        raise FmapError(f"file size {file_size} exceeds its {total} allocated bytes")
    _fits(HEADER.size + n * SIMPLE_EXT.size)
    return b"".join(parts)


def encode_interleaved(file_size: int, iexts: Sequence[Interleave], file_type: int = FILE_REG) -> bytes:
    """An INTERLEAVE fmap of ``len(iexts)`` interleaved extents, each followed by its strips."""
    n = len(iexts)
    if not 1 <= n <= MAX_EXTENTS:
        raise FmapError(f"{n} interleaved extents; the kernel takes 1..{MAX_EXTENTS}")
    size = HEADER.size + sum(IEXT.size + len(ie.strips) * SIMPLE_EXT.size for ie in iexts)
    _fits(size)
    parts = [HEADER.pack(file_type, 0, FMAP_VERSION, EXT_INTERLEAVE, n, 0, file_size, 0)]
    covered = 0
    for i, ie in enumerate(iexts):
        ns = len(ie.strips)
        if not 1 <= ns <= MAX_STRIPS:
            raise FmapError(f"interleaved extent {i}: {ns} strips; the kernel takes 1..{MAX_STRIPS}")
        if ie.chunk_size <= 0 or ie.chunk_size % PMD or ie.chunk_size > 0xFFFFFFFF:
            raise FmapError(
                f"interleaved extent {i}: chunk size {ie.chunk_size:#x} must be a 2 MiB multiple below 4 GiB"
            )
        if ie.nbytes <= 0:
            raise FmapError(f"interleaved extent {i}: covers {ie.nbytes} bytes")
        parts.append(IEXT.pack(ns, ie.chunk_size, ie.nbytes, 0))
        strip_total = 0
        for j, (dev, off, ln) in enumerate(ie.strips):
            _check_ext(f"interleaved extent {i} strip {j}", dev, off, ln)
            strip_total += ln
            parts.append(SIMPLE_EXT.pack(dev, 0, off, ln))
        if strip_total < min(ie.nbytes, file_size - covered):
            raise FmapError(f"interleaved extent {i}: strips hold {strip_total} bytes, less than it covers")
        covered += ie.nbytes
    if file_size > covered:
        raise FmapError(f"file size {file_size} exceeds the {covered} bytes its interleaved extents cover")
    return b"".join(parts)


def encode_region(file_size: int, offset: int, length: int, file_type: int = FILE_REG) -> bytes:
    """One extent of device 0: the meta files (.meta/.superblock = (0, 2 MiB), .meta/.log)."""
    return encode_simple(file_size, [(0, offset, length)], file_type)


# --- the kernel's side, independently: decode and validate like famfs_fuse_meta_alloc -------------
class Fmap(NamedTuple):
    file_type: int
    version: int
    ext_type: int
    file_size: int
    extents: list[SimpleExt]
    """SIMPLE: the extents.  INTERLEAVE: empty; see ``interleaved``."""
    interleaved: list[Interleave]


def decode(buf: bytes | memoryview) -> Fmap:
    """Parse a GET_FMAP reply; raises FmapError where the kernel would fail with EINVAL."""
    if len(buf) < HEADER.size:
        raise FmapError(f"reply of {len(buf)} bytes is shorter than the fmap header")
    ftype, _r, ver, ext_type, n, _r0, fsize, _r1 = HEADER.unpack_from(buf, 0)
    pos = HEADER.size

    def take(st: struct.Struct) -> tuple[int, ...]:
        nonlocal pos
        if pos + st.size > len(buf):
            raise FmapError(f"reply ends at {len(buf)} inside a record at {pos}")
        v = st.unpack_from(buf, pos)
        pos += st.size
        return v

    if not 1 <= n <= MAX_EXTENTS:
        raise FmapError(f"nextents {n}")
    if ext_type == EXT_SIMPLE:
        exts = [(d, o, ln) for d, _r, o, ln in (take(SIMPLE_EXT) for _ in range(n))]
        return Fmap(ftype, ver, ext_type, fsize, exts, [])
    if ext_type == EXT_INTERLEAVE:
        ies = []
        for _ in range(n):
            ns, cs, nbytes, _r = take(IEXT)
            if not 1 <= ns <= MAX_STRIPS:
                raise FmapError(f"ie_nstrips {ns}")
            strips = [(d, o, ln) for d, _r, o, ln in (take(SIMPLE_EXT) for _ in range(ns))]
            ies.append(Interleave(cs, nbytes, strips))
        return Fmap(ftype, ver, ext_type, fsize, [], ies)
    raise FmapError(f"unknown ext_type {ext_type}")


def kernel_problems(buf: bytes | memoryview) -> list[str]:
    """Everything a V10 kernel would reject in this reply; [] if it would install the map."""
    if len(buf) > FMAP_BUFSIZE:
        return [f"{len(buf)} bytes do not fit the kernel's {FMAP_BUFSIZE}-byte buffer"]
    try:
        fm = decode(buf)
    except FmapError as e:
        return [str(e)]
    out = []
    exts = fm.extents or [s for ie in fm.interleaved for s in ie.strips]
    for d, o, ln in exts:
        if d != 0:
            out.append(f"devindex {d} != 0")
        if o % PMD or ln % PMD or ln == 0:
            out.append(f"extent ({o:#x}, {ln:#x}) not PMD aligned")
    if fm.ext_type == EXT_SIMPLE:
        if sum(e[2] for e in fm.extents) < fm.file_size:
            out.append("extents smaller than file_size")
    else:
        for ie in fm.interleaved:
            if ie.chunk_size == 0 or ie.chunk_size % PMD:
                out.append(f"chunk_size {ie.chunk_size:#x} not PMD aligned")
            if ie.nbytes == 0:
                out.append("ie_nbytes 0")
        if sum(s[2] for ie in fm.interleaved for s in ie.strips) < fm.file_size:
            out.append("strips smaller than file_size")
    return out


def resolve(fm: Fmap, file_off: int) -> int:
    """Device offset of file byte ``file_off`` (the kernel's famfs fileofs -> daxofs mapping)."""
    if fm.ext_type == EXT_SIMPLE:
        pos = 0
        for _d, off, ln in fm.extents:
            if file_off < pos + ln:
                return off + file_off - pos
            pos += ln
        raise FmapError(f"offset {file_off} past the map")
    base = 0
    for ie in fm.interleaved:
        if file_off < base + ie.nbytes:
            rel = file_off - base
            chunk, within = divmod(rel, ie.chunk_size)
            stripe, strip = divmod(chunk, len(ie.strips))
            return ie.strips[strip][1] + stripe * ie.chunk_size + within
        base += ie.nbytes
    raise FmapError(f"offset {file_off} past the map")


# --- GET_DAXDEV ---------------------------------------------------------------------------------
def pack_daxdev_out(index: int, name: str) -> bytes:
    """The fixed 280-byte ``fuse_daxdev_out``: ``name`` is the character device's path, NUL-terminated."""
    raw = name.encode()
    if not raw or len(raw) >= DAXDEV_NAME_MAX or b"\0" in raw:
        raise FmapError(f"daxdev name {name!r}: 1..{DAXDEV_NAME_MAX - 1} bytes, no NUL")
    return DAXDEV_OUT.pack(index, 0, 0, 0, 0, raw)


def unpack_daxdev_out(buf: bytes | memoryview) -> tuple[int, str]:
    if len(buf) != DAXDEV_OUT.size:
        raise FmapError(f"daxdev reply of {len(buf)} bytes; the kernel takes exactly {DAXDEV_OUT.size}")
    index, *_r, name = DAXDEV_OUT.unpack_from(buf, 0)
    return index, name.split(b"\0", 1)[0].decode()
