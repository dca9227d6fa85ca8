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

from daxmode.famfs import layout as L

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
    off = scan_entries(mv, 0, n, scan.records, scan.bad)
    if n < cap:
        tail = mv[off : off + L.ENTRY_SIZE]
        scan.torn_tail = tail.nbytes == L.ENTRY_SIZE and any(tail.tobytes())
    return scan


def scan_entries(
    mv: memoryview, start: int, stop: int, records: list[L.Record], bad: list[tuple[int, str]]
) -> int:
    """Check and decode entries ``start..stop-1`` of the log at ``mv[0]``, appending to ``records``
    and ``bad``; returns the offset after the last entry.  Used for a whole log and, by a mounted
    namespace, for the entries appended since it last looked."""
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
    return off


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

    def lookup(self, path: str) -> Node | L.FileMeta | None:
        path = path.strip("/")
        if not path:
            return self.root
        return self.files.get(path) or self._dir_node(path)

    def _dir_node(self, path: str) -> Node | None:
        node: Node | L.FileMeta = self.root
        for part in path.split("/"):
            if not isinstance(node, Node):
                return None
            nxt = node.children.get(part)
            if nxt is None:
                return None
            node = nxt
        return node if isinstance(node, Node) else None

    def walk(self) -> list[L.FileMeta | L.DirMeta]:
        """Every directory and file, in log order."""
        out: list[L.FileMeta | L.DirMeta] = [*self.dirs.values(), *self.files.values()]
        out.sort(key=lambda r: r.index)
        return out


def play(records: list[L.Record]) -> Tree:
    """Play valid records into a tree the way famfs logplay does: existing paths are skipped,
    a file or directory whose parent was never created is an error and is not played."""
    root = Node(None)
    files: dict[str, L.FileMeta] = {}
    dirs: dict[str, L.DirMeta] = {}
    errors: list[str] = []
    skipped = 0
    dir_nodes: dict[str, Node] = {"": root}
    for r in records:
        if isinstance(r, L.DaxdevMeta):
            continue
        path = r.path
        if not r.path_ok:
            errors.append(f"entry {r.index}: invalid path {path!r}; not played")
            continue
        if path in files or path in dirs:
            skipped += 1
            continue
        parent_path, _, name = path.rpartition("/")
        parent = dir_nodes.get(parent_path)
        if parent is None:
            errors.append(f"entry {r.index}: parent directory of {path!r} does not exist; not played")
            continue
        if isinstance(r, L.FileMeta):
            files[path] = r
            parent.children[name] = r
        else:
            node = Node(r)
            dirs[path] = r
            dir_nodes[path] = node
            parent.children[name] = node
    return Tree(root, files, dirs, errors, skipped)
