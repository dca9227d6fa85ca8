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
from collections.abc import Callable
from dataclasses import dataclass, field

from daxmode.cacheflush import CacheSync, NoSync
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.extents import Validator, validator_for
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
_counters = struct.Struct("<2Q")
_HEADER_READS = 4
SUMMARY_ERRORS = 100
_SLOT_READS = 3


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

    SETTLE = 1.0
    """Seconds an invalid, non-empty slot below the counters must stay unchanged before it is
    taken for corruption and skipped (a write in flight changes or completes well within it)."""

    def __init__(
        self,
        sb: L.Superblock | None,
        log: memoryview | None,
        *,
        sync: CacheSync | None = None,
        is_master: bool = False,
        now_ns: int | None = None,
        device_size: int | None = None,
        on_error: Callable[[str], None] | None = None,
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
        self.device_size = device_size
        self.on_error = on_error
        """Told each skipped entry once (the server logs it)."""
        self.validator: Validator | None = None
        self._suspect: dict[int, tuple[bytes, float]] = {}
        """Slot -> (its bytes, when first seen invalid): a slot is skipped only once it holds still."""
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
        if self.validator is None:
            self.validator = validator_for(sb, self.device_size)
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
        """Play the entries appended since the last look; returns how many slots were consumed.

        Only complete, valid slots are played: the counters are read until two reads agree, and a
        slot below them that does not check (a write still in flight on another host, or a torn
        read) stops the play there, so it is read again next time instead of being marked played.
        A non-empty slot that stays invalid and unchanged for :attr:`SETTLE` seconds is corrupt,
        not in flight: it is named once in :attr:`errors` and skipped, as famfs logplay does."""
        with self._lock:
            log = self.log
            if log is None:
                return 0
            start = self.played
            n = self._stable_next_index(log)
            if n <= start:
                return 0
            self.sync.invalidate(log, L.LOG_HDR_SIZE + start * L.ENTRY_SIZE, (n - start) * L.ENTRY_SIZE)
            records: list[L.Record] = []
            bad: list[tuple[int, str]] = []
            scan_entries(log, start, n, records, bad)
            if not bad:
                for r in records:
                    self._play(r)
                self.played = n
                return n - start
            good = {r.index: r for r in records}
            why = dict(bad)
            now = time.monotonic()
            for i in why:  # every bad slot starts holding still now, so they all settle together
                if i not in self._suspect:
                    off = L.LOG_HDR_SIZE + i * L.ENTRY_SIZE
                    raw = bytes(log[off : off + L.ENTRY_SIZE])
                    if any(raw):
                        self._suspect[i] = (raw, now)
            pos = start
            while pos < n:
                rec = good.get(pos)
                if rec is None:
                    verdict = self._settle(log, pos, why[pos])
                    if verdict is None:
                        break  # in flight: play up to here, read it again next time
                    if isinstance(verdict, str):
                        self._error(verdict)
                        pos += 1
                        continue
                    rec = verdict
                self._play(rec)
                pos += 1
            self.played = pos
            return pos - start

    def _stable_next_index(self, log: memoryview) -> int:
        """``next_index`` from a header read twice alike (both counters in one read; famfs bumps
        next_seqnum before next_index, so the smaller one is what is surely written)."""
        cap = L.log_capacity(len(log))
        prev: tuple[int, int] | None = None
        for _ in range(_HEADER_READS):
            self.sync.invalidate(log, 0, L.LOG_HDR_SIZE)
            magic = _next_index.unpack_from(log, 0)[0]
            cur = _counters.unpack_from(log, L.LOG_HDR_COUNTERS_OFF)
            if magic != L.LOG_MAGIC:
                return 0  # not a log now (being formatted?): play nothing, read again next time
            if cur == prev:
                break
            prev = cur
        else:
            return self.played  # still moving: play nothing this time
        return min(cur[0], cur[1], cap)

    def _settle(self, log: memoryview, i: int, why: str) -> L.Record | str | None:
        """A slot below the counters that did not check: its record if a re-read is valid, None if
        it is empty, changing or new (in flight), or the reason if it stayed the same for SETTLE s."""
        off = L.LOG_HDR_SIZE + i * L.ENTRY_SIZE
        seen: bytes | None = None
        for _ in range(_SLOT_READS):
            self.sync.invalidate(log, off, L.ENTRY_SIZE)
            raw = bytes(log[off : off + L.ENTRY_SIZE])
            got: list[L.Record] = []
            bad: list[tuple[int, str]] = []
            scan_entries(log, i, i + 1, got, bad)
            if got:
                return got[0]
            if bad:
                why = bad[0][1]
            if (seen is not None and raw != seen) or not any(raw):
                return None
            seen = raw
        now = time.monotonic()
        first = self._suspect.get(i)
        if first is None or first[0] != seen:
            self._suspect[i] = (seen or b"", now)
            return None
        if now - first[1] < self.SETTLE:
            return None
        del self._suspect[i]
        return f"{why} (unchanged for {self.SETTLE:g} s; skipped)"

    def _error(self, why: str) -> None:
        """Name a skipped entry once: in the summary (``famfs status``) and the server's log."""
        self.errors.append(why)
        if self.on_error is not None:
            self.on_error(why)

    def _play(self, r: L.Record) -> None:
        if isinstance(r, L.DaxdevMeta):
            return
        if isinstance(r, L.FileMeta) and self.validator is not None:
            refused = self.validator.admit(r)
            if refused is not None:
                self._error(refused)
                return
        path = r.path
        if not r.path_ok:
            self._error(f"entry {r.index}: invalid path {path!r}; not played")
            return
        if path in self.by_path:
            self.skipped += 1
            return
        if path == META_DIR or path.startswith(META_DIR + "/"):
            self._error(f"entry {r.index}: {path!r} is inside the reserved {META_DIR} directory")
            return
        parent_path, _, name = path.rpartition("/")
        pid = self.by_path.get(parent_path)
        parent = self.inodes.get(pid) if pid is not None else None
        if pid is None or parent is None or not parent.is_dir:
            self._error(f"entry {r.index}: parent directory of {path!r} does not exist; not played")
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
            # the first SUMMARY_ERRORS only: the summary travels in a 64 KiB xattr, and a hostile log
            # can name thousands (each is in the server's log once)
            "errors": self.errors[:SUMMARY_ERRORS],
            "errors_total": len(self.errors),
            "refused": {
                i: why
                for i, why in list((self.validator.refused if self.validator else {}).items())[
                    :SUMMARY_ERRORS
                ]
            },
        }
