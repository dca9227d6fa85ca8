"""The FUSE wire protocol as pure functions over bytes.

Every struct is little-endian and 8-byte padded by design (``include/uapi/linux/fuse.h``, protocol
7.45, ``FUSE_KERNEL_MINOR_VERSION 45``; the offsets are that header's struct layouts). Decoders take
the request body (a ``memoryview`` after the 40-byte ``fuse_in_header``) and return plain tuples;
encoders return the bytes of a whole reply, ``fuse_out_header`` included, ready for one
``write(2)``. A READ reply is the exception: its data is passed to ``writev(2)`` as a separate
buffer (the device mapping itself), so :func:`reply_header` gives only the 16 header bytes."""

from __future__ import annotations

import struct
from typing import NamedTuple

# --- versions and limits ---------------------------------------------------------------------
KERNEL_VERSION = 7
KERNEL_MINOR = 45
"""The highest minor this codec implements; INIT replies min(kernel's, this)."""
ROOT_ID = 1
MIN_READ_BUFFER = 8192
"""fs/fuse/dev.c refuses read(2) buffers smaller than this (and than 40 + 40 + max_write)."""

# --- opcodes (enum fuse_opcode) -------------------------------------------------------------
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
BATCH_FORGET = 42
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47
SETUPMAPPING = 48
REMOVEMAPPING = 49
SYNCFS = 50
TMPFILE = 51
STATX = 52
COPY_FILE_RANGE_64 = 53
# famfs V10 (patches 03 and 05; not in mainline)
GET_FMAP = 54
GET_DAXDEV = 55

OPCODE_NAMES = {
    LOOKUP: "LOOKUP",
    FORGET: "FORGET",
    GETATTR: "GETATTR",
    SETATTR: "SETATTR",
    READLINK: "READLINK",
    SYMLINK: "SYMLINK",
    MKNOD: "MKNOD",
    MKDIR: "MKDIR",
    UNLINK: "UNLINK",
    RMDIR: "RMDIR",
    RENAME: "RENAME",
    LINK: "LINK",
    OPEN: "OPEN",
    READ: "READ",
    WRITE: "WRITE",
    STATFS: "STATFS",
    RELEASE: "RELEASE",
    FSYNC: "FSYNC",
    SETXATTR: "SETXATTR",
    GETXATTR: "GETXATTR",
    LISTXATTR: "LISTXATTR",
    REMOVEXATTR: "REMOVEXATTR",
    FLUSH: "FLUSH",
    INIT: "INIT",
    OPENDIR: "OPENDIR",
    READDIR: "READDIR",
    RELEASEDIR: "RELEASEDIR",
    FSYNCDIR: "FSYNCDIR",
    GETLK: "GETLK",
    SETLK: "SETLK",
    SETLKW: "SETLKW",
    ACCESS: "ACCESS",
    CREATE: "CREATE",
    INTERRUPT: "INTERRUPT",
    BMAP: "BMAP",
    DESTROY: "DESTROY",
    IOCTL: "IOCTL",
    POLL: "POLL",
    BATCH_FORGET: "BATCH_FORGET",
    FALLOCATE: "FALLOCATE",
    READDIRPLUS: "READDIRPLUS",
    RENAME2: "RENAME2",
    LSEEK: "LSEEK",
    COPY_FILE_RANGE: "COPY_FILE_RANGE",
    SETUPMAPPING: "SETUPMAPPING",
    REMOVEMAPPING: "REMOVEMAPPING",
    SYNCFS: "SYNCFS",
    TMPFILE: "TMPFILE",
    STATX: "STATX",
    COPY_FILE_RANGE_64: "COPY_FILE_RANGE_64",
    GET_FMAP: "GET_FMAP",
    GET_DAXDEV: "GET_DAXDEV",
}

NO_REPLY = frozenset({FORGET, BATCH_FORGET, INTERRUPT})
"""Requests the kernel never waits on: answering them is a protocol error."""

# --- INIT flags (64 bits: flags | flags2 << 32) ----------------------------------------------
ASYNC_READ = 1 << 0
POSIX_LOCKS = 1 << 1
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
SPLICE_WRITE = 1 << 7
SPLICE_MOVE = 1 << 8
SPLICE_READ = 1 << 9
FLOCK_LOCKS = 1 << 10
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
PARALLEL_DIROPS = 1 << 18
HANDLE_KILLPRIV = 1 << 19
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
DIRECT_IO_ALLOW_MMAP = 1 << 36
PASSTHROUGH = 1 << 37
REQUEST_TIMEOUT = 1 << 42
DAX_FMAP = 1 << 43
"""famfs V3..V10: the kernel can take GET_FMAP maps (collides with fuse-iomap's FUSE_IOMAP; see fmap)."""

# --- open reply flags (FOPEN_*) ----------------------------------------------------------------
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6

# --- setattr valid bits (FATTR_*) --------------------------------------------------------------
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10
FATTR_KILL_SUIDGID = 1 << 11

WRITE_CACHE = 1 << 0
"""fuse_write_in.write_flags: a delayed write from the page cache (shared mmap writeback)."""

# --- structs ------------------------------------------------------------------------------------
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # 88
ENTRY_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid *_nsec
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
INIT_IN = struct.Struct("<IIIII")  # major minor max_readahead flags flags2 (+ unused[11])
INIT_OUT = struct.Struct("<IIIIHHIIHHII H22x")  # 64 bytes
GETATTR_IN = struct.Struct("<IIQ")
OPEN_IN = struct.Struct("<II")
OPEN_OUT = struct.Struct("<QIi")
CREATE_IN = struct.Struct("<IIII")
READ_IN = struct.Struct("<QQIIQII")  # fh offset size flags lock_owner flags padding (40)
WRITE_OUT = struct.Struct("<II")
RELEASE_IN = struct.Struct("<QIIQ")
FLUSH_IN = struct.Struct("<QIIQ")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
INTERRUPT_IN = struct.Struct("<Q")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")  # fuse_kstatfs, 80
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # 88
GETXATTR_IN = struct.Struct("<II")
GETXATTR_OUT = struct.Struct("<II")
ACCESS_IN = struct.Struct("<II")
FSYNC_IN = struct.Struct("<QII")
DIRENT_HEAD = struct.Struct("<QQII")  # ino off namelen type

assert IN_HEADER.size == 40 and OUT_HEADER.size == 16 and ATTR.size == 88
assert ENTRY_HEAD.size + ATTR.size == 128 and ATTR_OUT_HEAD.size + ATTR.size == 104
assert INIT_OUT.size == 64 and READ_IN.size == 40 and STATFS_OUT.size == 80 and SETATTR_IN.size == 88
assert RELEASE_IN.size == 24 and OPEN_OUT.size == 16 and DIRENT_HEAD.size == 24
ENTRY_OUT_SIZE = 128
ATTR_OUT_SIZE = 104
INIT_IN_SIZE = 64
WRITE_IN_SIZE = 40

DT_DIR = 4
DT_REG = 8


class ProtocolError(ValueError):
    """A request that does not parse (short body, bad length); answered with EINVAL or EIO."""


# --- requests ---------------------------------------------------------------------------------
class InHeader(NamedTuple):
    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int


def parse_in_header(buf: bytes | bytearray | memoryview, n: int | None = None) -> InHeader:
    """The 40-byte request header; ``n`` is how many bytes read(2) returned (must equal ``len``)."""
    got = len(buf) if n is None else n
    if got < IN_HEADER.size:
        raise ProtocolError(f"request of {got} bytes is shorter than fuse_in_header")
    h = InHeader(*IN_HEADER.unpack_from(buf, 0)[:8])
    if h.len != got:
        raise ProtocolError(f"request header says {h.len} bytes, read returned {got}")
    return h


def pack_in_header(
    opcode: int, unique: int, nodeid: int, body_len: int, uid: int = 0, gid: int = 0, pid: int = 0
) -> bytes:
    """The header the kernel would send (tests and the INIT probe's self-checks use it)."""
    return IN_HEADER.pack(IN_HEADER.size + body_len, opcode, unique, nodeid, uid, gid, pid, 0, 0)


def _need(body: memoryview | bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise ProtocolError(f"{what}: body of {len(body)} bytes, need {size}")


def name_arg(body: memoryview | bytes) -> bytes:
    """A NUL-terminated name (LOOKUP, UNLINK, ...): the bytes before the first NUL."""
    raw = bytes(body)
    end = raw.find(b"\0")
    if end < 0:
        raise ProtocolError("name argument is not NUL-terminated")
    return raw[:end]


class InitIn(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int
    """All 64 flag bits: flags | flags2 << 32 (flags2 is only meaningful with INIT_EXT)."""


def parse_init_in(body: memoryview | bytes) -> InitIn:
    # Kernels before 7.36 send a shorter fuse_init_in without flags2.
    _need(body, 16, "INIT")
    major, minor, ra, flags = struct.unpack_from("<IIII", body, 0)
    flags2 = struct.unpack_from("<I", body, 16)[0] if len(body) >= 20 and flags & INIT_EXT else 0
    return InitIn(major, minor, ra, flags | flags2 << 32)


def pack_init_in(minor: int, max_readahead: int, flags: int, major: int = KERNEL_VERSION) -> bytes:
    raw = INIT_IN.pack(major, minor, max_readahead, flags & 0xFFFFFFFF, flags >> 32)
    return raw.ljust(INIT_IN_SIZE, b"\0")


class InitOut(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int
    max_background: int
    congestion_threshold: int
    max_write: int
    time_gran: int
    max_pages: int
    map_alignment: int = 0
    max_stack_depth: int = 0
    request_timeout: int = 0


def pack_init_out(unique: int, o: InitOut) -> bytes:
    body = INIT_OUT.pack(
        o.major,
        o.minor,
        o.max_readahead,
        o.flags & 0xFFFFFFFF,
        o.max_background,
        o.congestion_threshold,
        o.max_write,
        o.time_gran,
        o.max_pages,
        o.map_alignment,
        o.flags >> 32,
        o.max_stack_depth,
        o.request_timeout,
    )
    return reply(unique, body)


def parse_init_out(body: bytes | memoryview) -> InitOut:
    v = INIT_OUT.unpack_from(body, 0)
    return InitOut(v[0], v[1], v[2], v[3] | v[10] << 32, v[4], v[5], v[6], v[7], v[8], v[9], v[11], v[12])


class ReadIn(NamedTuple):
    fh: int
    offset: int
    size: int
    flags: int


def parse_read_in(body: memoryview | bytes) -> ReadIn:
    """READ and READDIR(PLUS) bodies (same struct); also the head of a WRITE."""
    _need(body, READ_IN.size, "READ")
    fh, off, size, rflags, _lo, _flags, _p = READ_IN.unpack_from(body, 0)
    return ReadIn(fh, off, size, rflags)


def pack_read_in(fh: int, offset: int, size: int, flags: int = 0) -> bytes:
    return READ_IN.pack(fh, offset, size, flags, 0, 0, 0)


class WriteIn(NamedTuple):
    fh: int
    offset: int
    size: int
    write_flags: int
    data: memoryview


def parse_write_in(body: memoryview) -> WriteIn:
    _need(body, WRITE_IN_SIZE, "WRITE")
    fh, off, size, wflags, _lo, _flags, _p = READ_IN.unpack_from(body, 0)
    data = body[WRITE_IN_SIZE : WRITE_IN_SIZE + size]
    if len(data) != size:
        raise ProtocolError(f"WRITE of {size} bytes carries {len(data)}")
    return WriteIn(fh, off, size, wflags, data)


class OpenIn(NamedTuple):
    flags: int
    open_flags: int


def parse_open_in(body: memoryview | bytes) -> OpenIn:
    _need(body, OPEN_IN.size, "OPEN")
    return OpenIn(*OPEN_IN.unpack_from(body, 0))


class ReleaseIn(NamedTuple):
    fh: int
    flags: int
    release_flags: int


def parse_release_in(body: memoryview | bytes) -> ReleaseIn:
    _need(body, RELEASE_IN.size, "RELEASE")
    return ReleaseIn(*RELEASE_IN.unpack_from(body, 0)[:3])


def parse_flush_in(body: memoryview | bytes) -> int:
    """The file handle being flushed."""
    _need(body, FLUSH_IN.size, "FLUSH")
    return FLUSH_IN.unpack_from(body, 0)[0]


def parse_getattr_in(body: memoryview | bytes) -> tuple[int, int]:
    """(getattr_flags, fh); old kernels (< 7.9) send no body."""
    if len(body) < GETATTR_IN.size:
        return 0, 0
    flags, _d, fh = GETATTR_IN.unpack_from(body, 0)
    return flags, fh


class SetattrIn(NamedTuple):
    valid: int
    fh: int
    size: int
    atime: int
    mtime: int
    mode: int
    uid: int
    gid: int


def parse_setattr_in(body: memoryview | bytes) -> SetattrIn:
    _need(body, SETATTR_IN.size, "SETATTR")
    v = SETATTR_IN.unpack_from(body, 0)
    # valid pad fh size lock_owner atime mtime ctime a/m/ctimensec mode unused4 uid gid unused5
    return SetattrIn(v[0], v[2], v[3], v[5], v[6], v[11], v[13], v[14])


def pack_setattr_in(valid: int, *, size: int = 0, mode: int = 0, uid: int = 0, gid: int = 0) -> bytes:
    return SETATTR_IN.pack(valid, 0, 0, size, 0, 0, 0, 0, 0, 0, 0, mode, 0, uid, gid, 0)


def parse_forget(body: memoryview | bytes) -> int:
    _need(body, FORGET_IN.size, "FORGET")
    return FORGET_IN.unpack_from(body, 0)[0]


def parse_batch_forget(body: memoryview | bytes) -> list[tuple[int, int]]:
    """[(nodeid, nlookup), ...]"""
    _need(body, BATCH_FORGET_IN.size, "BATCH_FORGET")
    count = BATCH_FORGET_IN.unpack_from(body, 0)[0]
    _need(body, BATCH_FORGET_IN.size + count * FORGET_ONE.size, "BATCH_FORGET entries")
    return [FORGET_ONE.unpack_from(body, 8 + i * 16) for i in range(count)]


def parse_interrupt(body: memoryview | bytes) -> int:
    _need(body, INTERRUPT_IN.size, "INTERRUPT")
    return INTERRUPT_IN.unpack_from(body, 0)[0]


def parse_getxattr_in(body: memoryview | bytes) -> tuple[int, bytes]:
    """(size, name): the caller's buffer size (0 = asking for the length) and the attribute name."""
    _need(body, GETXATTR_IN.size + 1, "GETXATTR")
    size = GETXATTR_IN.unpack_from(body, 0)[0]
    return size, name_arg(body[GETXATTR_IN.size :])


def parse_access_in(body: memoryview | bytes) -> int:
    _need(body, ACCESS_IN.size, "ACCESS")
    return ACCESS_IN.unpack_from(body, 0)[0]


def parse_create_in(body: memoryview | bytes) -> tuple[int, int, bytes]:
    """(flags, mode, name)"""
    _need(body, CREATE_IN.size + 1, "CREATE")
    flags, mode, _umask, _of = CREATE_IN.unpack_from(body, 0)
    return flags, mode, name_arg(body[CREATE_IN.size :])


# --- replies ----------------------------------------------------------------------------------
def reply_header(unique: int, payload_len: int) -> bytes:
    """The 16-byte success header for a reply of ``payload_len`` bytes sent with writev."""
    return OUT_HEADER.pack(OUT_HEADER.size + payload_len, 0, unique)


def reply(unique: int, payload: bytes = b"") -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), 0, unique) + payload


def reply_error(unique: int, errno: int) -> bytes:
    """An error reply is exactly the header with ``error = -errno``."""
    if not 0 < errno < 512:
        raise ValueError(f"errno {errno} out of range")
    return OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)


def parse_out_header(buf: bytes | memoryview) -> tuple[int, int, int]:
    """(len, error, unique) of a reply (tests decode what the server wrote)."""
    return OUT_HEADER.unpack_from(buf, 0)


class Attr(NamedTuple):
    """fuse_attr; times are (seconds, nanoseconds) shared by atime, mtime and ctime."""

    ino: int
    size: int
    blocks: int
    mode: int
    nlink: int
    uid: int
    gid: int
    time: int = 0
    time_ns: int = 0
    blksize: int = 0
    rdev: int = 0


def pack_attr(a: Attr) -> bytes:
    t, tn = a.time, a.time_ns
    return ATTR.pack(
        a.ino, a.size, a.blocks, t, t, t, tn, tn, tn, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0
    )


def unpack_attr(buf: bytes | memoryview, off: int = 0) -> Attr:
    v = ATTR.unpack_from(buf, off)
    return Attr(v[0], v[1], v[2], v[9], v[10], v[11], v[12], v[4], v[7], v[14], v[13])


def _valid(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def pack_entry_out(
    nodeid: int, attr: Attr, entry_valid: float, attr_valid: float, generation: int = 0
) -> bytes:
    """fuse_entry_out (128 bytes); nodeid 0 with a timeout is a cacheable negative entry."""
    es, ens = _valid(entry_valid)
    as_, ans = _valid(attr_valid)
    return ENTRY_HEAD.pack(nodeid, generation, es, as_, ens, ans) + pack_attr(attr)


def pack_attr_out(attr: Attr, attr_valid: float) -> bytes:
    s, ns = _valid(attr_valid)
    return ATTR_OUT_HEAD.pack(s, ns, 0) + pack_attr(attr)


def pack_open_out(fh: int, open_flags: int) -> bytes:
    return OPEN_OUT.pack(fh, open_flags, 0)


def pack_write_out(size: int) -> bytes:
    return WRITE_OUT.pack(size, 0)


class Statfs(NamedTuple):
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int
    namelen: int
    frsize: int


def pack_statfs_out(s: Statfs) -> bytes:
    return STATFS_OUT.pack(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize, 0)


def pack_getxattr_size(size: int) -> bytes:
    """The reply to a GETXATTR with size 0: how big the value is."""
    return GETXATTR_OUT.pack(size, 0)


def dirent_size(name: bytes, plus: bool = False) -> int:
    """Bytes one record takes: header + name, padded to 8 (FUSE_DIRENT_ALIGN)."""
    return (ENTRY_OUT_SIZE if plus else 0) + ((DIRENT_HEAD.size + len(name) + 7) & ~7)


def pack_dirent(ino: int, next_off: int, name: bytes, dtype: int) -> bytes:
    """One fuse_dirent; ``next_off`` is the cookie READDIR resumes from after this entry."""
    raw = DIRENT_HEAD.pack(ino, next_off, len(name), dtype) + name
    return raw.ljust((len(raw) + 7) & ~7, b"\0")


def unpack_dirents(buf: bytes | memoryview, plus: bool = False) -> list[tuple[int, int, bytes, int]]:
    """[(ino, next_off, name, type), ...] from a READDIR(PLUS) reply payload."""
    out = []
    pos = 0
    while pos < len(buf):
        if plus:
            pos += ENTRY_OUT_SIZE
        ino, off, namelen, dtype = DIRENT_HEAD.unpack_from(buf, pos)
        name = bytes(buf[pos + DIRENT_HEAD.size : pos + DIRENT_HEAD.size + namelen])
        out.append((ino, off, name, dtype))
        pos += (DIRENT_HEAD.size + namelen + 7) & ~7
    return out
