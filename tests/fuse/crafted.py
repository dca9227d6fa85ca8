"""Crafted famfs media: a base volume with a secret, and a table of hostile log entries to add.

The base volume (128 MiB image, 8 MiB log, data from 10 MiB):

    entry 0  priv/           0700 uid 1000
    entry 1  pub             0644  [10M, 12M)            "PUBLIC.."
             (12M..14M free: right in front of the secret)
    entry 2  priv/secret     0600 uid 1000  [14M, 18M)   "SECRET.."
    entry 3  il              0644  2 strips [18M,20M) [20M,22M), chunk 2M, 4 MiB  "INTERLV."
             (22M.. free)

Each :class:`Case` appends entries (or rewrites the header) the way a hostile or broken writer
on another host could, and says what every reader must make of it: ``refused`` by the extent
validator, ``skipped`` by the play rules (bad path, bad slot), ``visible`` (odd but safe: served
with its own bytes), ``pending`` (the counters run ahead of the slots: nothing is played until
the slots are written) or ``fatal`` (the log header is gone: no mount).  The judge is the same
everywhere: no file a reader can open returns bytes of the secret, the superblock or the log.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from daxmode.famfs.media import layout as L

MiB = 1 << 20
IMAGE_SIZE = 128 * MiB
SECRET = b"SECRET.."
MARKERS = (SECRET, struct.pack("<Q", L.LOG_MAGIC), struct.pack("<I", L.SUPERBLOCK_MAGIC))
"""Bytes no crafted file may ever show: the secret, the log header's and the superblock's magic."""
SECRET_EXT = (14 * MiB, 4 * MiB)
BASE_ENTRIES = 4
NOBODY = 65534


def log_of(buf: object) -> memoryview:
    return memoryview(buf)[L.LOG_OFFSET : L.LOG_OFFSET + L.DEFAULT_LOG_LEN]  # type: ignore[arg-type]


def put(log: memoryview, idx: int, entry: bytes) -> None:
    off = L.LOG_HDR_SIZE + idx * L.ENTRY_SIZE
    log[off : off + L.ENTRY_SIZE] = entry


def commit(log: memoryview, n: int, seq: int | None = None) -> None:
    struct.pack_into("<QQ", log, L.LOG_HDR_COUNTERS_OFF, n if seq is None else seq, n)


def next_index(log: memoryview) -> int:
    return struct.unpack_from("<Q", log, L.LOG_HDR_COUNTERS_OFF + 8)[0]


def fill(buf: object, off: int, length: int, tag: bytes) -> None:
    mv = memoryview(buf)  # type: ignore[arg-type]
    pat = (tag * (length // len(tag) + 1))[:length]
    mv[off : off + length] = pat


def reseal(entry: bytes) -> bytes:
    e = bytearray(entry)
    struct.pack_into("<Q", e, L.ENTRY_CRC_OFF, zlib.crc32(e[: L.ENTRY_CRC_OFF]))
    return bytes(e)


def with_raw_path(entry: bytes, raw: bytes, *, mkdir: bool = False) -> bytes:
    """``entry`` with its 80-byte relpath replaced by ``raw`` (not NUL-padded if 80 long)."""
    e = bytearray(entry)
    off = L.FILE_OFF + (12 if mkdir else 24)
    e[off : off + L.MAX_PATHLEN] = raw.ljust(L.MAX_PATHLEN, b"\0")[: L.MAX_PATHLEN]
    return reseal(bytes(e))


def build_base(buf: object) -> None:
    """Write the base volume's entries and data into a freshly formatted image mapping."""
    log = log_of(buf)
    put(log, 0, L.pack_mkdir_entry(0, "priv", mode=0o700, uid=1000, gid=1000))
    put(log, 1, L.pack_file_entry(1, "pub", 2 * MiB, [(0, 10 * MiB, 2 * MiB)]))
    put(
        log,
        2,
        L.pack_file_entry(2, "priv/secret", 4 * MiB, [(0, *SECRET_EXT)], mode=0o600, uid=1000, gid=1000),
    )
    put(
        log,
        3,
        L.pack_interleaved_entry(3, "il", 4 * MiB, 2 * MiB, [(0, 18 * MiB, 2 * MiB), (0, 20 * MiB, 2 * MiB)]),
    )
    commit(log, BASE_ENTRIES)
    fill(buf, 10 * MiB, 2 * MiB, b"PUBLIC..")
    fill(buf, *SECRET_EXT, SECRET)
    fill(buf, 18 * MiB, 4 * MiB, b"INTERLV.")
    log.release()


Apply = Callable[[memoryview, object, int], None]
"""(log view, whole-image buffer, first free index) -> writes the case's entries and commits."""


@dataclass(frozen=True)
class Case:
    name: str
    cls: str
    expect: str
    """refused | skipped | visible | pending | fatal"""
    apply: Apply
    path: str = ""
    """The crafted name readers look for ('' when the case names nothing new)."""


CASES: list[Case] = []


def _file(
    name: str, cls: str, expect: str, size: int, exts: list[L.Extent], *, mode: int = 0o644, uid: int = 0
) -> None:
    def apply(log: memoryview, buf: object, i: int) -> None:
        put(log, i, L.pack_file_entry(i, name, size, exts, mode=mode, uid=uid))
        commit(log, i + 1)
        if expect == "visible":
            for _d, off, ln in exts:
                fill(buf, off, ln, b"CRAFTED.")

    CASES.append(Case(f"{cls}:{name}", cls, expect, apply, name))


def _inter(
    name: str, cls: str, expect: str, size: int, chunk: int, strips: list[L.Extent], mode: int = 0o644
) -> None:
    def apply(log: memoryview, buf: object, i: int) -> None:
        put(log, i, L.pack_interleaved_entry(i, name, size, chunk, strips, mode=mode))
        commit(log, i + 1)
        if expect == "visible":
            for _d, off, ln in strips:
                fill(buf, off, ln, b"CRAFTED.")

    CASES.append(Case(f"{cls}:{name}", cls, expect, apply, name))


def _raw(name: str, cls: str, expect: str, entry_for: Callable[[int], bytes], path: str = "") -> None:
    def apply(log: memoryview, buf: object, i: int) -> None:
        put(log, i, entry_for(i))
        commit(log, i + 1)

    CASES.append(Case(f"{cls}:{name}", cls, expect, apply, path))


def _header(name: str, expect: str, fn: Callable[[memoryview, int], None]) -> None:
    def apply(log: memoryview, buf: object, i: int) -> None:
        fn(log, i)

    CASES.append(Case(f"counters:{name}", "counters", expect, apply, ""))


M = MiB
# --- interleave geometry ---------------------------------------------------------------------
G = "interleave"
_inter(
    "chunk4m-strips2m", G, "refused", 4 * M, 4 * M, [(0, 12 * M, 2 * M), (0, 40 * M, 2 * M)]
)  # the file
_inter("chunk4m-strips2m-0666", G, "refused", 4 * M, 4 * M, [(0, 12 * M, 2 * M), (0, 44 * M, 2 * M)], 0o666)
_inter("chunk4m-strip1-short", G, "refused", 8 * M, 4 * M, [(0, 30 * M, 4 * M), (0, 12 * M, 2 * M)])
_inter(
    "3strips-last-short",
    G,
    "refused",
    12 * M,
    2 * M,
    [(0, 30 * M, 4 * M), (0, 34 * M, 4 * M), (0, 12 * M, 2 * M)],
)
_inter("stripes-short", G, "refused", 12 * M, 2 * M, [(0, 30 * M, 4 * M), (0, 12 * M, 2 * M)])
_inter("chunk-not-pow2", G, "refused", 12 * M, 6 * M, [(0, 30 * M, 6 * M), (0, 36 * M, 6 * M)])
_inter("chunk-1m", G, "refused", 4 * M, 1 * M, [(0, 30 * M, 2 * M), (0, 32 * M, 2 * M)])
_inter("chunk-4k", G, "refused", 4 * M, 4096, [(0, 30 * M, 2 * M), (0, 32 * M, 2 * M)])
_inter("chunk-1g-strips-2m", G, "refused", 4 * M, 1 << 30, [(0, 30 * M, 2 * M), (0, 32 * M, 2 * M)])
_inter("strip-misaligned", G, "refused", 4 * M, 2 * M, [(0, 30 * M + 4096, 2 * M), (0, 34 * M, 2 * M)])
_inter("strip-len-odd", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M + 4096), (0, 34 * M, 2 * M)])
_inter("strips-overlap-each-other", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M), (0, 30 * M, 2 * M)])
_inter("strip-on-secret", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M), (0, 16 * M, 2 * M)])
_inter("strip-past-end", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M), (0, 127 * M, 2 * M)])
_inter("strip-in-log", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M), (0, 4 * M, 2 * M)])
_inter("strip-devindex-1", G, "refused", 4 * M, 2 * M, [(0, 30 * M, 2 * M), (1, 34 * M, 2 * M)])
_inter(
    "good-4strips",
    G,
    "visible",
    8 * M,
    2 * M,
    [(0, 40 * M, 2 * M), (0, 50 * M, 2 * M), (0, 60 * M, 2 * M), (0, 70 * M, 2 * M)],
)
_inter("good-uneven-tail", G, "visible", 6 * M, 2 * M, [(0, 40 * M, 4 * M), (0, 50 * M, 2 * M)])
_raw(
    "chunk-0",
    G,
    "skipped",
    lambda i: L.pack_interleaved_entry(i, "chunk0", 4 * M, 0, [(0, 30 * M, 4 * M)]),
    "chunk0",
)


def _n17(i: int) -> bytes:
    return reseal(_set(L.pack_interleaved_entry(i, "n17", 4 * M, 2 * M, [(0, 30 * M, 4 * M)]), L.EXT_OFF, 17))


_raw("nstrips-17", G, "skipped", _n17, "n17")


def _set(entry: bytes, off: int, value: int) -> bytes:
    e = bytearray(entry)
    struct.pack_into("<Q", e, off, value)
    return bytes(e)


# --- overlaps --------------------------------------------------------------------------------
OV = "overlap"
_file("on-secret", OV, "refused", 4 * M, [(0, 14 * M, 4 * M)])
_file("on-secret-0666", OV, "refused", 4 * M, [(0, 14 * M, 4 * M)], mode=0o666)
_file("secret-head", OV, "refused", 4 * M, [(0, 12 * M, 4 * M)])
_file("secret-tail", OV, "refused", 4 * M, [(0, 16 * M, 4 * M)])
_file("around-secret", OV, "refused", 8 * M, [(0, 12 * M, 8 * M)])
_file("inside-secret", OV, "refused", 2 * M, [(0, 16 * M, 2 * M)])
_file("second-ext-on-secret", OV, "refused", 4 * M, [(0, 30 * M, 2 * M), (0, 14 * M, 2 * M)])
_file("on-il-strip", OV, "refused", 2 * M, [(0, 20 * M, 2 * M)])
_file("on-pub", OV, "refused", 2 * M, [(0, 10 * M, 2 * M)], mode=0o600, uid=NOBODY)
_file("self-overlap", OV, "refused", 4 * M, [(0, 30 * M, 2 * M), (0, 30 * M, 2 * M)])
_file("adjacent-ok", OV, "visible", 2 * M, [(0, 12 * M, 2 * M)])


def _dup_then_overlap(log: memoryview, buf: object, i: int) -> None:
    """A duplicate path keeps its space (famfs marks it too); a later file over it is refused."""
    put(log, i, L.pack_file_entry(i, "pub", 2 * M, [(0, 30 * M, 2 * M)]))
    put(log, i + 1, L.pack_file_entry(i + 1, "over-dup", 2 * M, [(0, 30 * M, 2 * M)]))
    commit(log, i + 2)


CASES.append(Case("overlap:dup-then-overlap", OV, "refused", _dup_then_overlap, "over-dup"))

# --- reserved regions ------------------------------------------------------------------------
R = "reserved"
_file("superblock", R, "refused", 2 * M, [(0, 0, 2 * M)])
_file("superblock-0666", R, "refused", 2 * M, [(0, 0, 2 * M)], mode=0o666)
_file("log-head", R, "refused", 2 * M, [(0, 2 * M, 2 * M)], mode=0o666)
_file("log-middle", R, "refused", 2 * M, [(0, 6 * M, 2 * M)])
_file("log-tail-straddle", R, "refused", 4 * M, [(0, 8 * M, 4 * M)])
_file("whole-device", R, "refused", 128 * M, [(0, 0, 128 * M)])
_file("second-ext-in-log", R, "refused", 4 * M, [(0, 30 * M, 2 * M), (0, 4 * M, 2 * M)])
_file("data-start-ok", R, "visible", 2 * M, [(0, 24 * M, 2 * M)])

# --- past the end, and other placement -------------------------------------------------------
P = "placement"
_file("past-end", P, "refused", 2 * M, [(0, 128 * M, 2 * M)])
_file("straddle-end", P, "refused", 4 * M, [(0, 126 * M, 4 * M)])
_file("huge-len", P, "refused", 2 * M, [(0, 30 * M, 1 << 62)])
_file("u64-wrap", P, "refused", 2 * M, [(0, (1 << 64) - 2 * M, 4 * M)])
_file("devindex-1", P, "refused", 2 * M, [(0, 30 * M, 2 * M), (1, 32 * M, 2 * M)])
_file("zero-len", P, "refused", 2 * M, [(0, 30 * M, 0), (0, 32 * M, 2 * M)])
_file("misaligned-off", P, "refused", 2 * M, [(0, 30 * M + 512, 2 * M)])
_file("misaligned-len", P, "refused", 2 * M, [(0, 30 * M, 2 * M - 4096)])
_file("size-beyond-extents", P, "refused", 6 * M, [(0, 30 * M, 2 * M), (0, 12 * M, 2 * M)])
_file("last-unit-ok", P, "visible", 2 * M, [(0, 126 * M, 2 * M)])

# --- names -----------------------------------------------------------------------------------
N = "names"
_file("nl\nname", N, "visible", 2 * M, [(0, 40 * M, 2 * M)])
_file("esc\x1b]0;owned\x07", N, "visible", 2 * M, [(0, 42 * M, 2 * M)])
_file("priv/secret", N, "skipped", 2 * M, [(0, 44 * M, 2 * M)])  # duplicate of the secret
_file("pub/under-a-file", N, "skipped", 2 * M, [(0, 46 * M, 2 * M)])
_file("nodir/x", N, "skipped", 2 * M, [(0, 48 * M, 2 * M)])


def _badname(name: str, raw: bytes, path: str = "") -> None:
    entry = L.pack_file_entry
    _raw(name, N, "skipped", lambda i: with_raw_path(entry(i, "x", 2 * M, [(0, 50 * M, 2 * M)]), raw), path)


_badname("absolute", b"/etc/x", "/etc/x")
_badname("dotdot", b"priv/../y", "y")
_badname("dot", b"./z", "z")
_badname("empty", b"")
_badname("unterminated", b"u" * 80, "u" * 80)
_badname("meta-dir", b".meta/x", ".meta/x")
_raw(
    "mkdir-dotdot", N, "skipped", lambda i: with_raw_path(L.pack_mkdir_entry(i, "x"), b"..", mkdir=True), ".."
)


# --- counters and slots ----------------------------------------------------------------------
def _ahead_zero(log: memoryview, i: int) -> None:
    commit(log, i + 3)  # three slots claimed, none written (another host's write in flight)


def _ahead_one_written(log: memoryview, i: int) -> None:
    put(log, i, L.pack_file_entry(i, "first", 2 * M, [(0, 40 * M, 2 * M)]))
    commit(log, i + 2)


def _seq_ahead(log: memoryview, i: int) -> None:
    put(log, i, L.pack_file_entry(i, "seqahead", 2 * M, [(0, 40 * M, 2 * M)]))
    commit(log, i, seq=i + 1)  # famfs bumps next_seqnum first: the slot is not in the log yet


def _beyond_capacity(log: memoryview, i: int) -> None:
    commit(log, L.log_capacity(L.DEFAULT_LOG_LEN) + 5)


def _huge(log: memoryview, i: int) -> None:
    struct.pack_into("<QQ", log, L.LOG_HDR_COUNTERS_OFF, (1 << 64) - 1, (1 << 64) - 1)


def _bad_seqnum(log: memoryview, i: int) -> None:
    put(log, i, L.pack_file_entry(i + 7, "wrongseq", 2 * M, [(0, 40 * M, 2 * M)]))
    commit(log, i + 1)


def _bad_crc(log: memoryview, i: int) -> None:
    e = bytearray(L.pack_file_entry(i, "badcrc", 2 * M, [(0, 40 * M, 2 * M)]))
    e[L.EXT_OFF + 8] ^= 0x40  # the offset moves onto the secret, the CRC no longer matches
    put(log, i, bytes(e))
    commit(log, i + 1)


def _backwards(log: memoryview, i: int) -> None:
    commit(log, 2)


def _magic(log: memoryview, i: int) -> None:
    struct.pack_into("<Q", log, 0, 0xDEADBEEF)


def _slot_torn_half(log: memoryview, i: int) -> None:
    e = L.pack_file_entry(i, "torn", 2 * M, [(0, 40 * M, 2 * M)])
    off = L.LOG_HDR_SIZE + i * L.ENTRY_SIZE
    log[off : off + 256] = e[:256]  # the first half reached the media, the counters did too
    commit(log, i + 1)


_header("ahead-3-empty", "pending", _ahead_zero)
_header("ahead-1-of-2", "pending", _ahead_one_written)
_header("seqnum-ahead", "pending", _seq_ahead)
_header("beyond-capacity", "pending", _beyond_capacity)
_header("u64-max", "pending", _huge)
_header("slot-seqnum", "skipped", _bad_seqnum)
_header("slot-crc", "skipped", _bad_crc)
_header("slot-torn-half", "skipped", _slot_torn_half)
_header("backwards", "pending", _backwards)
_header("log-magic", "fatal", _magic)

assert len({c.name for c in CASES}) == len(CASES)


def hostile_bytes(data: bytes) -> list[bytes]:
    """The markers found in ``data`` (bytes a reader must never get from a crafted file)."""
    return [m for m in MARKERS if m in data]
