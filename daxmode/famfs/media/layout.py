"""The famfs on-media format: superblock, log header and log entries as pure functions over bytes.

Byte compatibility with famfs's C tools is the point of this module, so every offset is spelled
out with explicit little-endian ``struct`` formats instead of being derived from a C ABI.  Facts
(offsets, magics, CRC coverage) come from famfs (github.com/cxl-micron-reskit/famfs at 5d0919f)
``src/famfs_meta.h`` (constants :27-59, ``struct famfs_superblock`` :77-91, ``struct famfs_log_entry``
:218-227, ``struct famfs_log`` :243-251) and ``src/famfs_lib.c``; the code is our own.

Nothing here touches a file: callers pass ``bytes``/``bytearray``/``memoryview``/``mmap`` and get
plain values back.  Decoders never raise on garbage except :class:`FormatError`, a FamfsError
naming the field that is wrong.
"""

from __future__ import annotations

import mmap
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple, cast
from uuid import UUID

from daxmode.errors import FamfsError, InvalidArgument

# --- device layout (famfs_meta.h) -------------------------------------------------------------
SUPERBLOCK_MAGIC = 0x87B282FF
LOG_MAGIC = 0xBADCAFEF00D
SUPERBLOCK_REGION = 0x200000
"""The superblock occupies the first 2 MiB; only its first 200 bytes are used."""
LOG_OFFSET = 0x200000
ALLOC_UNIT = 0x200000
ALLOC_UNIT_4K = 4096
"""famfs_check_super also accepts a 4 KiB allocation unit, though mkfs never writes it."""
DEFAULT_LOG_LEN = 0x800000
MIN_LOG_LEN = 0x800000
FAMFS_MIN_DEVICE = 4 << 30
"""famfs's mkfs refuses devices below 4 GiB; we only warn (docs/famfs.md)."""

VERSION_47 = 47
VERSION_48 = 48
SUPPORTED_VERSIONS = (VERSION_47, VERSION_48)
DEFAULT_VERSION = VERSION_48
OMF_MAJOR = 2
OMF_MINOR_BY_VERSION = {VERSION_47: 1, VERSION_48: 2}

MAX_PATHLEN = 80
"""Bytes of the relpath field: at most 79 path bytes plus a NUL."""
MAX_RELPATH = MAX_PATHLEN - 1
MAX_SIMPLE_EXTENTS = 16
MAX_INTERLEAVED_EXTENTS = 1
MAX_STRIPS = 16
MAX_NBUCKETS = 64
DEVNAME_LEN = 64

SB_PRIMARY = 1
SB_SECONDARY = 2

# log entry types
ENTRY_FILE = 0
ENTRY_MKDIR = 1
ENTRY_DELETE = 2
ENTRY_ADD_DAXDEV = 3
ENTRY_INVALID = 4
ENTRY_TYPE_NAMES = {
    ENTRY_FILE: "file",
    ENTRY_MKDIR: "mkdir",
    ENTRY_DELETE: "delete",
    ENTRY_ADD_DAXDEV: "add_daxdev",
    ENTRY_INVALID: "invalid",
}

EXT_SIMPLE = 0
EXT_INTERLEAVE = 1

FM_ALL_HOSTS_RO = 1
FM_ALL_HOSTS_RW = 2
"""famfs hard-codes this flag on every file it creates."""

# --- struct formats -------------------------------------------------------------------------
# superblock: magic version log_offset log_len alloc_unit | omf_major omf_minor | uuid dev_uuid
# system_uuid | crc | sb_flags pad | dd_size dd_uuid dd_daxdev
SB_FMT = struct.Struct("<5Q2I16s16s16sQI4xQ16s64s")
SB_SIZE = SB_FMT.size  # 200
SB_CRC_OFF = 96
SB_CRC_COVER = 96
SB_DD_SIZE_OFF = 112

LOG_HDR_FMT = struct.Struct("<6Q")  # magic len last_index crc next_seqnum next_index
LOG_HDR_SIZE = LOG_HDR_FMT.size  # 48
LOG_HDR_CRC_COVER = 24
LOG_HDR_COUNTERS_OFF = 32
COUNTERS_FMT = struct.Struct("<2Q")

ENTRY_SIZE = 544
ENTRY_CRC_OFF = 536
ENTRY_HEAD_FMT = struct.Struct("<QI")  # seqnum, type
ENTRY_CRC_FMT = struct.Struct("<Q")
FILE_FMT = struct.Struct("<QIIII80sI4xI4x")  # @16: size flags uid gid mode relpath ext_type nextents
FILE_OFF = 16
EXT_OFF = 136
EXT_FMT = struct.Struct("<3Q")  # devindex offset len
IEXT_HDR_FMT = struct.Struct("<2Q")  # nstrips chunk_size @136
STRIPS_OFF = 152
MKDIR_FMT = struct.Struct("<III80s")  # @16: uid gid mode relpath
DAXDEV_FMT = struct.Struct("<Q16sI")  # @16: dd_size dd_uuid dd_index

assert SB_SIZE == 200 and LOG_HDR_SIZE == 48
assert FILE_OFF + FILE_FMT.size == EXT_OFF
assert EXT_OFF + MAX_SIMPLE_EXTENTS * EXT_FMT.size == 520  # simple extents leave 16 bytes of the union unused
assert STRIPS_OFF + MAX_STRIPS * EXT_FMT.size == ENTRY_CRC_OFF


class FormatError(FamfsError):
    """famfs metadata that does not parse; the message names the field."""


# --- small helpers --------------------------------------------------------------------------
def last_index_for(log_len: int) -> int:
    """The inclusive index of the last entry slot in a log of ``log_len`` bytes."""
    return (log_len - LOG_HDR_SIZE) // ENTRY_SIZE - 1


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def data_start(log_len: int) -> int:
    """Device offset of the first allocation unit after the superblock and the log."""
    return round_up(LOG_OFFSET + log_len, ALLOC_UNIT)


def encode_relpath(path: str | bytes, what: str = "path") -> bytes:
    """The NUL-padded 80-byte relpath field; longer paths are refused, never truncated (famfs truncates).
    A bad path is the user's input, so InvalidArgument (exit 11), not a format error."""
    raw = path.encode("utf-8") if isinstance(path, str) else bytes(path)
    if not raw:
        raise InvalidArgument(f"{what}: empty path")
    if raw.startswith(b"/"):
        raise InvalidArgument(f"{what} {raw.decode(errors='replace')!r}: must be relative to the mount point")
    if b"\0" in raw:
        raise InvalidArgument(f"{what}: contains a NUL byte")
    if len(raw) > MAX_RELPATH:
        raise InvalidArgument(
            f"{what} {raw.decode(errors='replace')!r} is {len(raw)} bytes; famfs allows at most {MAX_RELPATH}"
        )
    parts = raw.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise InvalidArgument(f"{what} {raw.decode(errors='replace')!r}: empty, '.' or '..' component")
    return raw.ljust(MAX_PATHLEN, b"\0")


def decode_relpath(field_bytes: bytes) -> tuple[str, bool]:
    """(path, terminated): the text before the first NUL, and whether a NUL was found in 80 bytes."""
    end = field_bytes.find(b"\0")
    terminated = end >= 0
    raw = field_bytes if end < 0 else field_bytes[:end]
    return raw.decode("utf-8", errors="surrogateescape"), terminated


_BAD_PATH = re.compile(r"^/|//|(?:^|/)\.\.?(?:/|$)|/$")


def check_relpath(path: str, terminated: bool) -> str | None:
    """Why ``path`` (decoded from an entry) is not a valid famfs relpath, or None."""
    if not terminated:
        return "path is not NUL-terminated within 80 bytes"
    if not path:
        return "empty path"
    if _BAD_PATH.search(path) is None:
        if path.isascii():
            return None
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "path is not valid UTF-8"
        return None
    if path.startswith("/"):
        return "path is absolute"
    return "path has an empty, '.' or '..' component"


# --- superblock -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Superblock:
    version: int
    log_len: int
    uuid: UUID  # (the field shadows the module inside the class body: hence UUID)
    dev_uuid: UUID
    system_uuid: UUID
    dd_size: int
    daxdev: str
    magic: int = SUPERBLOCK_MAGIC
    log_offset: int = LOG_OFFSET
    alloc_unit: int = ALLOC_UNIT
    omf_major: int = OMF_MAJOR
    omf_minor: int = 2
    crc: int = 0
    sb_flags: int = 0
    dd_uuid: UUID = field(default=UUID(int=0))

    def to_dict(self) -> dict[str, object]:
        return {
            "magic": hex(self.magic),
            "version": self.version,
            "log_offset": self.log_offset,
            "log_len": self.log_len,
            "alloc_unit": self.alloc_unit,
            "omf_version": f"{self.omf_major}.{self.omf_minor}",
            "uuid": str(self.uuid),
            "dev_uuid": str(self.dev_uuid),
            "system_uuid": str(self.system_uuid),
            "crc": hex(self.crc),
            "sb_flags": self.sb_flags,
            "dd_size": self.dd_size,
            "daxdev": self.daxdev,
        }


def superblock_crc(buf: bytes | bytearray | memoryview) -> int:
    """zlib crc32 over bytes 0..95 (magic through system_uuid), as famfs_gen_superblock_crc does."""
    return zlib.crc32(memoryview(buf)[:SB_CRC_COVER])


def pack_superblock(sb: Superblock) -> bytes:
    """The 200 superblock bytes with a freshly computed CRC (``sb.crc`` is ignored)."""
    daxdev = sb.daxdev.encode()[: DEVNAME_LEN - 1]
    raw = bytearray(
        SB_FMT.pack(
            sb.magic,
            sb.version,
            sb.log_offset,
            sb.log_len,
            sb.alloc_unit,
            sb.omf_major,
            sb.omf_minor,
            sb.uuid.bytes,
            sb.dev_uuid.bytes,
            sb.system_uuid.bytes,
            0,
            sb.sb_flags,
            sb.dd_size,
            sb.dd_uuid.bytes,
            daxdev,
        )
    )
    struct.pack_into("<Q", raw, SB_CRC_OFF, superblock_crc(raw))
    return bytes(raw)


def new_superblock(
    *,
    dd_size: int,
    daxdev: str,
    system_uuid: uuid.UUID,
    log_len: int = DEFAULT_LOG_LEN,
    version: int = DEFAULT_VERSION,
    fs_uuid: uuid.UUID | None = None,
    dev_uuid: uuid.UUID | None = None,
) -> Superblock:
    """What mkfs writes: a v47/v48 superblock with 2 MiB allocation units and fresh UUIDs."""
    check_version(version)
    return Superblock(
        version=version,
        log_len=log_len,
        uuid=fs_uuid or uuid.uuid4(),
        dev_uuid=dev_uuid or uuid.uuid4(),
        system_uuid=system_uuid,
        dd_size=dd_size,
        daxdev=daxdev,
        omf_minor=OMF_MINOR_BY_VERSION[version],
    )


def check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"superblock field ts_version={version}: this tool reads and writes famfs versions 47 and 48 only"
        )


def unpack_superblock(buf: bytes | bytearray | memoryview) -> Superblock:
    """Decode the first 200 bytes without judging them (see :func:`superblock_problems`)."""
    if len(buf) < SB_SIZE:
        raise FormatError(f"superblock: {len(buf)} bytes, need {SB_SIZE}")
    (
        magic,
        version,
        log_offset,
        log_len,
        alloc_unit,
        omf_major,
        omf_minor,
        fs_uuid,
        dev_uuid,
        sys_uuid,
        crc,
        sb_flags,
        dd_size,
        dd_uuid,
        daxdev,
    ) = SB_FMT.unpack_from(buf, 0)
    return Superblock(
        magic=magic,
        version=version,
        log_offset=log_offset,
        log_len=log_len,
        alloc_unit=alloc_unit,
        omf_major=omf_major,
        omf_minor=omf_minor,
        uuid=uuid.UUID(bytes=fs_uuid),
        dev_uuid=uuid.UUID(bytes=dev_uuid),
        system_uuid=uuid.UUID(bytes=sys_uuid),
        crc=crc,
        sb_flags=sb_flags,
        dd_size=dd_size,
        dd_uuid=uuid.UUID(bytes=dd_uuid),
        daxdev=daxdev.split(b"\0", 1)[0].decode("utf-8", errors="replace"),
    )


def superblock_problems(buf: bytes | bytearray | memoryview, device_size: int | None = None) -> list[str]:
    """Every reason the superblock at ``buf`` is unusable, each naming its field; [] if it is good.

    Covers famfs_check_super (magic, exact version, CRC, alloc unit) plus what it skips: OMF major
    version, log placement and length, and ``dd_size`` (outside the CRC) against the real device.
    """
    if len(buf) < SB_SIZE:
        return [f"superblock: only {len(buf)} bytes available, need {SB_SIZE}"]
    sb = unpack_superblock(buf)
    if sb.magic != SUPERBLOCK_MAGIC:
        return [
            f"superblock field ts_magic={sb.magic:#x}: not a famfs superblock (want {SUPERBLOCK_MAGIC:#x})"
        ]
    out: list[str] = []
    if sb.version not in SUPPORTED_VERSIONS:
        out.append(f"superblock field ts_version={sb.version}: only famfs versions 47 and 48 are supported")
    want = superblock_crc(buf)
    if sb.crc != want:
        out.append(f"superblock field ts_crc={sb.crc:#x}: CRC mismatch (computed {want:#x})")
    if sb.alloc_unit not in (ALLOC_UNIT, ALLOC_UNIT_4K):
        out.append(f"superblock field ts_alloc_unit={sb.alloc_unit}: must be 4096 or 2097152")
    if sb.omf_major != OMF_MAJOR:
        out.append(
            f"superblock field ts_omf_ver_major={sb.omf_major}: layout major version {OMF_MAJOR} expected"
        )
    if sb.log_offset != LOG_OFFSET:
        out.append(f"superblock field ts_log_offset={sb.log_offset:#x}: must be {LOG_OFFSET:#x}")
    if not is_pow2(sb.log_len) or sb.log_len < MIN_LOG_LEN:
        out.append(f"superblock field ts_log_len={sb.log_len:#x}: must be a power of 2 and at least 8 MiB")
    elif sb.dd_size and LOG_OFFSET + sb.log_len > sb.dd_size:
        out.append(f"superblock field ts_log_len={sb.log_len:#x}: log ends past dd_size={sb.dd_size}")
    if device_size is not None and sb.dd_size > device_size:
        out.append(
            f"superblock field dd_size={sb.dd_size}: larger than the device ({device_size} bytes); "
            "dd_size is not covered by the CRC"
        )
    if sb.dd_size == 0:
        out.append("superblock field dd_size=0: device size missing")
    return out


def superblock_notes(sb: Superblock) -> list[str]:
    """Oddities that famfs accepts and so do we, reported by fsck as notes."""
    out = []
    want_minor = OMF_MINOR_BY_VERSION.get(sb.version)
    if want_minor is not None and sb.omf_minor != want_minor:
        out.append(
            f"superblock: version {sb.version} normally carries OMF minor {want_minor}, found {sb.omf_minor}"
        )
    if sb.alloc_unit == ALLOC_UNIT_4K:
        out.append("superblock: 4 KiB allocation unit (famfs's mkfs always writes 2 MiB)")
    return out


# --- log header -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogHeader:
    magic: int
    log_len: int
    last_index: int
    crc: int
    next_seqnum: int
    next_index: int

    def to_dict(self) -> dict[str, object]:
        return {
            "magic": hex(self.magic),
            "log_len": self.log_len,
            "last_index": self.last_index,
            "crc": hex(self.crc),
            "next_seqnum": self.next_seqnum,
            "next_index": self.next_index,
        }


def log_header_crc(buf: bytes | bytearray | memoryview) -> int:
    """crc32 over magic, len and last_index only; the counters are outside it (famfs_lib.c)."""
    return zlib.crc32(memoryview(buf)[:LOG_HDR_CRC_COVER])


def pack_log_header(log_len: int, next_index: int = 0) -> bytes:
    head = struct.pack("<3Q", LOG_MAGIC, log_len, last_index_for(log_len))
    return head + struct.pack("<3Q", zlib.crc32(head), next_index, next_index)


def unpack_log_header(buf: bytes | bytearray | memoryview) -> LogHeader:
    if len(buf) < LOG_HDR_SIZE:
        raise FormatError(f"log header: {len(buf)} bytes, need {LOG_HDR_SIZE}")
    return LogHeader(*LOG_HDR_FMT.unpack_from(buf, 0))


def log_header_problems(buf: bytes | bytearray | memoryview, sb_log_len: int) -> list[str]:
    """Problems with the log header, each naming its field; famfs skips these on the raw-device path."""
    if len(buf) < LOG_HDR_SIZE:
        return [f"log header: only {len(buf)} bytes available"]
    h = unpack_log_header(buf)
    if h.magic != LOG_MAGIC:
        return [f"log header field famfs_log_magic={h.magic:#x}: not a famfs log (want {LOG_MAGIC:#x})"]
    out = []
    want = log_header_crc(buf)
    if h.crc != want:
        out.append(f"log header field famfs_log_crc={h.crc:#x}: CRC mismatch (computed {want:#x})")
    if h.log_len != sb_log_len:
        out.append(f"log header field famfs_log_len={h.log_len:#x}: superblock says {sb_log_len:#x}")
    want_last = last_index_for(h.log_len)
    if h.last_index != want_last:
        out.append(
            f"log header field famfs_log_last_index={h.last_index}: a {h.log_len:#x}-byte log of "
            f"{ENTRY_SIZE}-byte entries ends at {want_last} (incompatible entry layout?)"
        )
    if h.next_index != h.next_seqnum:
        out.append(
            f"log header fields famfs_log_next_index={h.next_index} and next_seqnum={h.next_seqnum} differ"
        )
    if h.next_index > want_last + 1:
        out.append(
            f"log header field famfs_log_next_index={h.next_index}: beyond the last slot ({want_last})"
        )
    return out


def log_capacity(log_len: int) -> int:
    """Entry slots in a log of ``log_len`` bytes (15,420 for 8 MiB)."""
    return last_index_for(log_len) + 1


# --- log entries ----------------------------------------------------------------------------
Extent = tuple[int, int, int]
Bytes = bytes | bytearray | memoryview | mmap.mmap
"""What the medium's metadata is read from: a whole device or image mapping, or a copy of part."""
"""(devindex, offset, length) of one simple extent, in bytes."""


def _seal(entry: bytearray, seqnum: int) -> bytes:
    struct.pack_into("<Q", entry, 0, seqnum)
    struct.pack_into("<Q", entry, ENTRY_CRC_OFF, zlib.crc32(memoryview(entry)[:ENTRY_CRC_OFF]))
    return bytes(entry)


def pack_file_entry(
    seqnum: int,
    relpath: str | bytes,
    size: int,
    extents: list[Extent],
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    flags: int = FM_ALL_HOSTS_RW,
) -> bytes:
    """A FILE entry with simple extents (zero-filled, seqnum stamped, CRC over bytes 0..535)."""
    if not 1 <= len(extents) <= MAX_SIMPLE_EXTENTS:
        raise FormatError(f"file entry: {len(extents)} extents; famfs allows 1..{MAX_SIMPLE_EXTENTS}")
    _check_mode(mode)
    e = bytearray(ENTRY_SIZE)
    struct.pack_into("<I", e, 8, ENTRY_FILE)
    FILE_FMT.pack_into(
        e, FILE_OFF, size, flags, uid, gid, mode, encode_relpath(relpath), EXT_SIMPLE, len(extents)
    )
    for i, (dev, off, ln) in enumerate(extents):
        EXT_FMT.pack_into(e, EXT_OFF + i * EXT_FMT.size, dev, off, ln)
    return _seal(e, seqnum)


def pack_interleaved_entry(
    seqnum: int,
    relpath: str | bytes,
    size: int,
    chunk_size: int,
    strips: list[Extent],
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    flags: int = FM_ALL_HOSTS_RW,
) -> bytes:
    """A FILE entry with one interleaved extent of ``len(strips)`` strips."""
    if not 1 <= len(strips) <= MAX_STRIPS:
        raise FormatError(f"interleaved file entry: {len(strips)} strips; famfs allows 1..{MAX_STRIPS}")
    _check_mode(mode)
    e = bytearray(ENTRY_SIZE)
    struct.pack_into("<I", e, 8, ENTRY_FILE)
    FILE_FMT.pack_into(e, FILE_OFF, size, flags, uid, gid, mode, encode_relpath(relpath), EXT_INTERLEAVE, 1)
    IEXT_HDR_FMT.pack_into(e, EXT_OFF, len(strips), chunk_size)
    for i, (dev, off, ln) in enumerate(strips):
        EXT_FMT.pack_into(e, STRIPS_OFF + i * EXT_FMT.size, dev, off, ln)
    return _seal(e, seqnum)


def pack_mkdir_entry(
    seqnum: int, relpath: str | bytes, *, mode: int = 0o755, uid: int = 0, gid: int = 0
) -> bytes:
    """A MKDIR entry; famfs records the mode exactly as given (sticky/setgid bits kept)."""
    _check_mode(mode)
    e = bytearray(ENTRY_SIZE)
    struct.pack_into("<I", e, 8, ENTRY_MKDIR)
    MKDIR_FMT.pack_into(e, FILE_OFF, uid, gid, mode, encode_relpath(relpath))
    return _seal(e, seqnum)


def pack_add_daxdev_entry(seqnum: int, dd_size: int, dd_uuid: uuid.UUID, dd_index: int) -> bytes:
    """An ADD_DAXDEV entry (version 48 only; famfs writes it from unit tests so far)."""
    e = bytearray(ENTRY_SIZE)
    struct.pack_into("<I", e, 8, ENTRY_ADD_DAXDEV)
    DAXDEV_FMT.pack_into(e, FILE_OFF, dd_size, dd_uuid.bytes, dd_index)
    return _seal(e, seqnum)


def _check_mode(mode: int) -> None:
    if mode < 0 or mode & ~0o7777:
        raise FormatError(f"mode {mode:#o}: only permission bits (0..0o7777) are stored")


class FileMeta(NamedTuple):
    """A decoded FILE entry; ``extents`` holds the strips of an interleaved file.

    A NamedTuple, not a dataclass: playing a full log builds 15,420 of these, and tuples are
    several times cheaper to construct than frozen dataclasses."""

    index: int  # type: ignore[assignment]  # famfs's log index: shadows tuple.index, never called
    path: str
    size: int
    flags: int
    uid: int
    gid: int
    mode: int
    ext_type: int
    extents: tuple[Extent, ...]
    nstrips: int = 0
    chunk_size: int = 0
    path_ok: bool = True

    @property
    def interleaved(self) -> bool:
        return self.ext_type == EXT_INTERLEAVE

    @property
    def allocated(self) -> int:
        return sum(e[2] for e in self.extents)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "type": "file",
            "path": self.path,
            "size": self.size,
            "flags": self.flags,
            "mode": f"0{self.mode:o}",
            "uid": self.uid,
            "gid": self.gid,
            "index": self.index,
        }
        if self.interleaved:
            d["interleave"] = {
                "nstrips": self.nstrips,
                "chunk_size": self.chunk_size,
                "strips": [{"devindex": x, "offset": o, "length": n} for x, o, n in self.extents],
            }
        else:
            d["extents"] = [{"devindex": x, "offset": o, "length": n} for x, o, n in self.extents]
        return d


class DirMeta(NamedTuple):
    index: int  # type: ignore[assignment]  # famfs's log index: shadows tuple.index, never called
    path: str
    uid: int
    gid: int
    mode: int
    path_ok: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "type": "dir",
            "path": self.path,
            "mode": f"0{self.mode:o}",
            "uid": self.uid,
            "gid": self.gid,
            "index": self.index,
        }


class DaxdevMeta(NamedTuple):
    index: int  # type: ignore[assignment]  # famfs's log index: shadows tuple.index, never called
    dd_size: int
    dd_uuid: uuid.UUID
    dd_index: int

    def to_dict(self) -> dict[str, object]:
        return {
            "type": "add_daxdev",
            "dd_size": self.dd_size,
            "dd_uuid": str(self.dd_uuid),
            "dd_index": self.dd_index,
            "index": self.index,
        }


Record = FileMeta | DirMeta | DaxdevMeta

_file_unpack = FILE_FMT.unpack_from
_EXTS = [struct.Struct("<" + "3Q" * n).unpack_from for n in range(MAX_STRIPS + 1)]


def _extents(buf: bytes | bytearray | memoryview, off: int, n: int) -> tuple[Extent, ...]:
    flat = _EXTS[n](buf, off)
    if n == 1:
        return (cast(Extent, flat),)  # one strip: unpack_from's 3-tuple is the extent itself
    it = iter(flat)
    return tuple(zip(it, it, it, strict=True))


_mkdir_unpack = MKDIR_FMT.unpack_from


def decode_entry(buf: bytes | bytearray | memoryview, off: int, index: int) -> Record:
    """Decode the entry at ``off`` whose CRC and seqnum the caller has already checked.

    Raises FormatError for a structurally impossible entry (unknown type, bad extent count)."""
    etype = struct.unpack_from("<I", buf, off + 8)[0]
    if etype == ENTRY_FILE:
        size, flags, uid, gid, mode, rp, ext_type, n = _file_unpack(buf, off + FILE_OFF)
        path, terminated = decode_relpath(rp)
        ok = check_relpath(path, terminated) is None
        if ext_type == EXT_SIMPLE:
            if not 1 <= n <= MAX_SIMPLE_EXTENTS:
                raise FormatError(f"entry {index} field fmap_nextents={n}: must be 1..{MAX_SIMPLE_EXTENTS}")
            exts = _extents(buf, off + EXT_OFF, n)
            return FileMeta(index, path, size, flags, uid, gid, mode, EXT_SIMPLE, exts, path_ok=ok)
        if ext_type == EXT_INTERLEAVE:
            if n != MAX_INTERLEAVED_EXTENTS:
                raise FormatError(f"entry {index} field fmap_niext={n}: must be 1")
            nstrips, chunk = IEXT_HDR_FMT.unpack_from(buf, off + EXT_OFF)
            if not 1 <= nstrips <= MAX_STRIPS:
                raise FormatError(f"entry {index} field ie_nstrips={nstrips}: must be 1..{MAX_STRIPS}")
            if chunk == 0:
                raise FormatError(f"entry {index} field ie_chunk_size=0")
            strips = _extents(buf, off + STRIPS_OFF, nstrips)
            return FileMeta(
                index, path, size, flags, uid, gid, mode, EXT_INTERLEAVE, strips, nstrips, chunk, path_ok=ok
            )
        raise FormatError(f"entry {index} field fmap_ext_type={ext_type}: unknown extent type")
    if etype == ENTRY_MKDIR:
        uid, gid, mode, rp = _mkdir_unpack(buf, off + FILE_OFF)
        path, terminated = decode_relpath(rp)
        return DirMeta(index, path, uid, gid, mode, check_relpath(path, terminated) is None)
    if etype == ENTRY_ADD_DAXDEV:
        dd_size, dd_uuid, dd_index = DAXDEV_FMT.unpack_from(buf, off + FILE_OFF)
        return DaxdevMeta(index, dd_size, uuid.UUID(bytes=dd_uuid), dd_index)
    raise FormatError(f"entry {index} field famfs_log_entry_type={etype}: unknown entry type")


# --- interleave address math ----------------------------------------------------------------
def interleave_offset(file_off: int, nstrips: int, chunk_size: int, strip_offsets: list[int] | tuple) -> int:
    """Device offset of byte ``file_off`` of an interleaved file (the kernel's famfs mapping).

    chunk = off / chunk_size; strip = chunk % nstrips; stripe = chunk / nstrips;
    dev = strips[strip] + stripe * chunk_size + off % chunk_size.
    """
    chunk, within = divmod(file_off, chunk_size)
    stripe, strip = divmod(chunk, nstrips)
    return strip_offsets[strip] + stripe * chunk_size + within


def file_segments(meta: FileMeta, start: int = 0, length: int | None = None) -> list[tuple[int, int]]:
    """(device offset, length) runs covering file bytes [start, start+length), clipped to fm_size."""
    end = meta.size if length is None else min(meta.size, start + length)
    out: list[tuple[int, int]] = []
    if start >= end:
        return out
    if meta.interleaved:
        cs, ns = meta.chunk_size, meta.nstrips
        offs = [e[1] for e in meta.extents]
        pos = start
        while pos < end:
            within = pos % cs
            n = min(cs - within, end - pos)
            dev = interleave_offset(pos, ns, cs, offs)
            if out and out[-1][0] + out[-1][1] == dev:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((dev, n))
            pos += n
        return out
    pos = 0
    for _dev, off, ln in meta.extents:
        lo, hi = max(start, pos), min(end, pos + ln)
        if lo < hi:
            out.append((off + lo - pos, hi - lo))
        pos += ln
        if pos >= end:
            break
    return out
