"""Reading the famfs log: validate entries, and play them into an in-memory tree.

Playing is the only way a famfs host learns about files, so it must be fast (a full 8 MiB log
holds 15,420 entries) and it must never trust a torn or foreign entry: each one is checked
(seqnum == index, zlib CRC over bytes 0..535) before it is decoded, and bad ones are reported,
not played.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from daxmode.famfs.media import layout as L
from daxmode.famfs.media.extents import Validator

_crc = struct.Struct("<Q").unpack_from
# seqnum, type, then the FILE fields through fmap_nextents (bytes 0..135): one call per entry
_fast = struct.Struct("<QI4xQIIII80sI4xI4x").unpack_from


@dataclass
class LogScan:
    """What the log holds: the header, valid records in order, and the entries that failed checks."""

    header: L.LogHeader
    header_problems: list[str]
    records: list[L.Record]
    bad: list[tuple[int, str]] = field(default_factory=list)
    torn_tail: bool = False
    """The slot after the last entry holds data: an append was interrupted before its counters."""


def scan_log(buf: bytes | bytearray | memoryview, log_len: int) -> LogScan:
    """Check and decode every entry below ``next_index`` of the log that starts at ``buf[0]``.

    ``buf`` must hold at least the log; entries past its end are reported as bad, never read.
    """
    mv = memoryview(buf)
    hdr_problems = L.log_header_problems(mv, log_len)
    header = L.unpack_log_header(mv)
    scan = LogScan(header, hdr_problems, [])
    if header.magic != L.LOG_MAGIC:
        return scan
    cap = L.log_capacity(min(log_len, len(mv)))
    n = min(header.next_index, max(cap, 0))
    if header.next_index > cap:
        scan.bad.append((cap, f"next_index {header.next_index} runs past the log's {cap} slots"))
    scan_entries(mv, 0, n, scan.records, scan.bad)
    scan.torn_tail = tail_written(mv, n, cap)
    return scan


def tail_written(mv: memoryview, n: int, cap: int) -> bool:
    """True if slot ``n`` (the first one outside the log) holds data: an interrupted append."""
    if n >= cap:
        return False
    off = L.LOG_HDR_SIZE + n * L.ENTRY_SIZE
    tail = mv[off : off + L.ENTRY_SIZE]
    return tail.nbytes == L.ENTRY_SIZE and any(tail.tobytes())


def scan_entries(
    mv: memoryview, start: int, stop: int, records: list[L.Record], bad: list[tuple[int, str]]
) -> None:
    """Check and decode entries ``start``..``stop - 1`` of the log at ``mv[0]``, appending the
    valid ones to ``records`` and the others to ``bad``.  The caller bounds ``stop`` by the log."""
    crc32 = zlib.crc32
    decode = L.decode_entry
    extents = L._extents
    check = L.check_relpath
    file_meta = L.FileMeta
    crc_off = L.ENTRY_CRC_OFF
    off = L.LOG_HDR_SIZE + start * L.ENTRY_SIZE
    for i in range(start, stop):
        if _crc(mv, off + crc_off)[0] != crc32(mv[off : off + crc_off]):
            bad.append((i, f"entry {i}: CRC mismatch (torn or corrupt entry; not played)"))
            off += L.ENTRY_SIZE
            continue
        seq, etype, size, flags, uid, gid, mode, rp, xt, ne = _fast(mv, off)
        if seq != i:
            bad.append((i, f"entry {i}: seqnum {seq} does not match its index"))
        elif etype == 0 and xt == 0 and 0 < ne <= 16:  # the common case: a simple FILE entry
            end = rp.find(b"\0")
            raw = rp if end < 0 else rp[:end]
            path = raw.decode("utf-8", "surrogateescape")
            ok = check(path, end >= 0) is None
            records.append(
                file_meta(i, path, size, flags, uid, gid, mode, 0, extents(mv, off + 136, ne), 0, 0, ok)
            )
        else:
            try:
                records.append(decode(mv, off, i))
            except L.FormatError as e:
                bad.append((i, str(e)))
        off += L.ENTRY_SIZE


@dataclass(slots=True)
class Node:
    """A directory in the played tree; files are the FileMeta records themselves."""

    meta: L.DirMeta | None
    children: dict[str, Node | L.FileMeta] = field(default_factory=dict)


@dataclass
class Tree:
    """The namespace the log describes, as famfs logplay would build it under a mount point."""

    root: Node
    files: dict[str, L.FileMeta]
    dirs: dict[str, L.DirMeta]
    errors: list[str]
    skipped: int = 0
    """Entries for paths that already existed (famfs logplay skips these too)."""
    nodes: dict[str, Node] = field(default_factory=dict, repr=False)
    """Directory path -> its node ("" is the root)."""
    validator: Validator | None = None
    """When set, every FILE entry must pass it (in log order) before it is played."""

    def __post_init__(self) -> None:
        self.nodes.setdefault("", self.root)

    def lookup(self, path: str) -> Node | L.FileMeta | None:
        path = path.strip("/")
        return self.files.get(path) or self.nodes.get(path)

    def add(self, r: L.Record) -> bool:
        """Play one record the way famfs logplay does: an existing path is skipped, a file or
        directory whose parent was never created is an error and is not played.  True if played."""
        if isinstance(r, L.DaxdevMeta):
            return False
        if self.validator is not None and isinstance(r, L.FileMeta):
            why = self.validator.admit(r)
            if why is not None:
                self.errors.append(why)
                return False
        path = r.path
        if not r.path_ok:
            self.errors.append(f"entry {r.index}: invalid path {path!r}; not played")
            return False
        if path in self.files or path in self.dirs:
            self.skipped += 1
            return False
        parent_path, _, name = path.rpartition("/")
        parent = self.nodes.get(parent_path)
        if parent is None:
            self.errors.append(f"entry {r.index}: parent directory of {path!r} does not exist; not played")
            return False
        if isinstance(r, L.FileMeta):
            self.files[path] = r
            parent.children[name] = r
        else:
            node = Node(r)
            self.dirs[path] = r
            self.nodes[path] = node
            parent.children[name] = node
        return True

    def walk(self) -> list[L.FileMeta | L.DirMeta]:
        """Every directory and file, in log order."""
        out: list[L.FileMeta | L.DirMeta] = [*self.dirs.values(), *self.files.values()]
        out.sort(key=lambda r: r.index)
        return out


def play(records: list[L.Record], validator: Validator | None = None) -> Tree:
    """Play valid records into a new tree (see :meth:`Tree.add`); with a ``validator``
    (:mod:`daxmode.famfs.media.extents`) a file whose extents it refuses is not played."""
    tree = Tree(Node(None), {}, {}, [], validator=validator)
    add = tree.add
    for r in records:
        add(r)
    return tree
