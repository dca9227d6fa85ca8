"""The tree a famfs mount serves: inodes played from the log, re-played as the log grows.

A mounted famfs never rescans the whole log: it remembers how many entries it has played and, on
any operation that could see a new name (a LOOKUP that misses, OPENDIR, READDIR, STATFS), reads
the log header's ``next_index`` (8 bytes, cache line invalidated first) and plays only the entries
appended since.  So a file another host creates with ``daxmode famfs creat``/``cp`` appears on
every mount without a remount.  Playing follows famfs logplay (and :func:`daxmode.famfs.media.log.play`):
an existing path is skipped, an entry whose parent is missing or whose path is invalid is an
error and not played, a bad entry (CRC or seqnum) is re-read once after an invalidate and then
reported and skipped.

Node ids are stable and never reused, because famfs never deletes: the root is 1, the ``.meta``
directory and its two files are 2-4, and the entry at log index ``i`` is ``i + FIRST_ENTRY_ID``.
So FORGET needs no bookkeeping and a node id means the same file on every mount of the volume.
"""

from __future__ import annotations

import stat
import struct
import threading
import time
from dataclasses import dataclass, field

from daxmode.cacheflush import CacheSync, NoSync
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.log import scan_entries

ROOT_ID = 1
META_DIR_ID = 2
SUPERBLOCK_ID = 3
LOG_ID = 4
FIRST_ENTRY_ID = 16
META_DIR = ".meta"
SUPERBLOCK_NAME = ".superblock"
LOG_NAME = ".log"
_next_index = struct.Struct("<Q")


@dataclass(slots=True)
class Inode:
    nodeid: int
    kind: int
    """stat.S_IFDIR or stat.S_IFREG."""
    perm: int
    uid: int
    gid: int
    size: int
    parent: int
    name: bytes
    meta: L.FileMeta | None = None
    """The log entry of a regular file (None for the meta files)."""
    region: tuple[int, int] | None = None
    """(device offset, length) of a meta file: .superblock and .log are one extent each."""
    children: dict[bytes, int] | None = None
    order: list[bytes] = field(default_factory=list)
    """Directory entries in the order they were played: READDIR cookies index this list."""
    nsubdirs: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR

    @property
    def mode(self) -> int:
        return self.kind | self.perm

    @property
    def allocated(self) -> int:
        if self.meta is not None:
            return self.meta.allocated
        return self.region[1] if self.region else 0

    def segments(self, off: int, length: int) -> list[tuple[int, int]]:
        """Device runs for file bytes [off, off+length), clipped to the size."""
        if self.meta is not None:
            return L.file_segments(self.meta, off, length)
        if self.region is None:
            return []
        end = min(self.size, off + length)
        return [(self.region[0] + off, end - off)] if off < end else []


class Namespace:
    """Inodes of one mounted famfs volume, fed from the log at ``log`` (a buffer whose byte 0 is
    the log header; ``None`` until the superblock has been read, on a mount that reads its
    metadata through itself)."""

    def __init__(
        self,
        sb: L.Superblock | None,
        log: memoryview | None,
        *,
        sync: CacheSync | None = None,
        is_master: bool = False,
        now_ns: int | None = None,
    ) -> None:
        self.sync = sync or NoSync()
        self.is_master = is_master
        t = time.time_ns() if now_ns is None else now_ns
        self.time = (t // 1_000_000_000, t % 1_000_000_000)
        self.inodes: dict[int, Inode] = {}
        self.by_path: dict[str, int] = {"": ROOT_ID}
        self.played = 0
        self.errors: list[str] = []
        self.skipped = 0
        self.files = 0
        self.dirs = 0
        self.allocated = 0
        self._lock = threading.Lock()
        self.sb: L.Superblock | None = None
        self.log: memoryview | None = None
        root = self._add(Inode(ROOT_ID, stat.S_IFDIR, 0o755, 0, 0, 0, ROOT_ID, b"", children={}))
        meta = self._add(
            Inode(META_DIR_ID, stat.S_IFDIR, 0o755, 0, 0, 0, ROOT_ID, META_DIR.encode(), children={})
        )
        self._link(root, meta)
        sbi = Inode(
            SUPERBLOCK_ID, stat.S_IFREG, 0o444, 0, 0, L.SUPERBLOCK_REGION, META_DIR_ID,
            SUPERBLOCK_NAME.encode(), region=(0, L.SUPERBLOCK_REGION),
        )  # fmt: skip
        self._link(meta, self._add(sbi))
        if sb is not None:
            self.attach_log(sb, log)

    # --- building ---------------------------------------------------------------------------
    def _add(self, ino: Inode) -> Inode:
        self.inodes[ino.nodeid] = ino
        return ino

    @staticmethod
    def _link(parent: Inode, child: Inode) -> None:
        assert parent.children is not None
        parent.children[child.name] = child.nodeid
        parent.order.append(child.name)
        if child.is_dir:
            parent.nsubdirs += 1

    def attach_log(self, sb: L.Superblock, log: memoryview | None) -> None:
        """Add ``.meta/.log`` (2 MiB on, ``log_len`` bytes; writable on the master as famfs) and play
        the log if a view of it is given."""
        self.sb = sb
        meta = self.inodes[META_DIR_ID]
        if LOG_NAME.encode() not in (meta.children or {}):
            li = Inode(
                LOG_ID, stat.S_IFREG, 0o644 if self.is_master else 0o444, 0, 0, sb.log_len, META_DIR_ID,
                LOG_NAME.encode(), region=(L.LOG_OFFSET, sb.log_len),
            )  # fmt: skip
            self._link(meta, self._add(li))
        if log is not None:
            self.log = log
            self.refresh()

    def set_log(self, log: memoryview | None, sync: CacheSync | None = None) -> int:
        """Read the log from ``log`` from now on (the played count is kept); plays what is new."""
        with self._lock:
            old, self.log = self.log, log
            if sync is not None:
                self.sync = sync
        if old is not None and old is not log:
            old.release()
        return self.refresh() if log is not None else 0

    def detach_log(self) -> None:
        """Stop reading the log and release the view (before its mapping is closed)."""
        self.set_log(None)

    def refresh(self) -> int:
        """Play the entries appended since the last look; returns how many were new."""
        with self._lock:
            log = self.log
            if log is None:
                return 0
            sync = self.sync
            sync.invalidate(log, L.LOG_HDR_COUNTERS_OFF + 8, 8)
            start = self.played
            n = min(_next_index.unpack_from(log, L.LOG_HDR_COUNTERS_OFF + 8)[0], L.log_capacity(len(log)))
            if n <= start:
                return 0
            first = L.LOG_HDR_SIZE + start * L.ENTRY_SIZE
            sync.invalidate(log, first, (n - start) * L.ENTRY_SIZE)
            records: list[L.Record] = []
            bad: list[tuple[int, str]] = []
            scan_entries(log, start, n, records, bad)
            if bad:  # famfs re-reads a bad entry once after an invalidate before giving up on it
                retry: list[L.Record] = []
                still: list[tuple[int, str]] = []
                for i, _why in bad:
                    sync.invalidate(log, L.LOG_HDR_SIZE + i * L.ENTRY_SIZE, L.ENTRY_SIZE)
                    scan_entries(log, i, i + 1, retry, still)
                records = sorted(records + retry, key=lambda r: r.index)
                self.errors += [why for _i, why in still]
            for r in records:
                self._play(r)
            self.played = n
            return n - start

    def _play(self, r: L.Record) -> None:
        if isinstance(r, L.DaxdevMeta):
            return
        path = r.path
        if not r.path_ok:
            self.errors.append(f"entry {r.index}: invalid path {path!r}; not played")
            return
        if path in self.by_path:
            self.skipped += 1
            return
        if path == META_DIR or path.startswith(META_DIR + "/"):
            self.errors.append(f"entry {r.index}: {path!r} is inside the reserved {META_DIR} directory")
            return
        parent_path, _, name = path.rpartition("/")
        pid = self.by_path.get(parent_path)
        parent = self.inodes.get(pid) if pid is not None else None
        if pid is None or parent is None or not parent.is_dir:
            self.errors.append(f"entry {r.index}: parent directory of {path!r} does not exist; not played")
            return
        nodeid = r.index + FIRST_ENTRY_ID
        raw = name.encode("utf-8", "surrogateescape")
        if isinstance(r, L.FileMeta):
            ino = Inode(nodeid, stat.S_IFREG, r.mode & 0o7777, r.uid, r.gid, r.size, pid, raw, meta=r)
            self.files += 1
            self.allocated += r.allocated
        else:
            ino = Inode(nodeid, stat.S_IFDIR, r.mode & 0o7777, r.uid, r.gid, 0, pid, raw, children={})
            self.dirs += 1
        self._add(ino)
        self._link(parent, ino)
        self.by_path[path] = nodeid

    # --- queries ----------------------------------------------------------------------------
    def get(self, nodeid: int) -> Inode | None:
        return self.inodes.get(nodeid)

    def lookup(self, parent: int, name: bytes) -> Inode | None:
        """The child ``name`` of directory ``parent``; a miss re-plays the log once and retries."""
        p = self.inodes.get(parent)
        if p is None or p.children is None:
            return None
        nid = p.children.get(name)
        if nid is None and self.refresh():
            nid = p.children.get(name)
        return self.inodes.get(nid) if nid is not None else None

    def path_of(self, nodeid: int) -> str:
        parts = []
        ino = self.inodes.get(nodeid)
        while ino is not None and ino.nodeid != ROOT_ID:
            parts.append(ino.name.decode("utf-8", "surrogateescape"))
            ino = self.inodes.get(ino.parent)
        return "/".join(reversed(parts))

    def regular_files(self) -> list[Inode]:
        return [i for i in self.inodes.values() if not i.is_dir]

    def summary(self) -> dict[str, object]:
        return {
            "entries_played": self.played,
            "files": self.files,
            "directories": self.dirs,
            "skipped": self.skipped,
            "errors": list(self.errors),
        }
