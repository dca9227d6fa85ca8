"""famfs operations on a mapped device or image: mkfs, logplay, mkdir, creat, cp, read, getmap.

A *medium* is anything that exposes the whole device as one writable buffer (an ``mmap`` of a
devdax device or of an image file) plus a cache syncer; see :mod:`daxmode.fsdev`.  All metadata
goes through :mod:`daxmode.famfs.layout`; this module adds the rules around it:

* only the master (this host's system UUID equals the superblock's) may mutate;
* a log append writes and writes back the entry first, then the counters (next_seqnum, then
  next_index), each followed by a fence.  A crash before the counters leaves the entry outside
  the log; a torn entry inside it fails its CRC and is never played;
* only the entry's cache lines and the header counters are written back (famfs flushes the whole
  log on every append, which is why its creat takes ~0.1 s);
* the bitmap is rebuilt from the log once per session and updated in place afterwards.
"""

from __future__ import annotations

import contextlib
import io
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from daxmode.cacheflush import CacheSync
from daxmode.errors import FamfsError, InvalidArgument
from daxmode.famfs import layout as L
from daxmode.famfs.alloc import Allocator, build_bitmap
from daxmode.famfs.log import LogScan, Node, Tree, play, scan_log

_counters = struct.Struct("<Q")


class Medium(Protocol):
    buf: object
    """A writable buffer of ``size`` bytes (mmap, bytearray)."""
    size: int
    daxdev: str
    """The name recorded in the superblock's dd_daxdev (e.g. /dev/dax0.0)."""
    sync: CacheSync

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive host-local lock held while the log is mutated."""
        ...


class NotMaster(FamfsError):
    """A client tried to change the filesystem."""


class LogFull(FamfsError):
    """Every slot of the log is used."""


@dataclass
class MkfsResult:
    superblock: L.Superblock
    warnings: list[str] = field(default_factory=list)
    killed: bool = False


def has_superblock(buf: object) -> bool:
    """True if ``buf`` starts with a famfs superblock whose magic and CRC are good (any version)."""
    mv = memoryview(buf)  # type: ignore[arg-type]
    if len(mv) < L.SB_SIZE:
        return False
    sb = L.unpack_superblock(mv)
    return sb.magic == L.SUPERBLOCK_MAGIC and sb.crc == L.superblock_crc(mv)


def mkfs(
    medium: Medium,
    system_uuid: uuid.UUID,
    *,
    log_len: int = L.DEFAULT_LOG_LEN,
    version: int = L.DEFAULT_VERSION,
    force: bool = False,
    kill: bool = False,
) -> MkfsResult:
    """Format ``medium``: zeroed log with a fresh header, then the superblock (written last).

    An existing valid superblock is refused without ``force``, whoever owns it; ``kill`` zeroes
    only the magic (famfs ``mkfs -f -k``) so the device no longer looks formatted.
    """
    L.check_version(version)
    if kill and not force:
        raise InvalidArgument("--kill needs --force")
    buf = medium.buf
    mv = memoryview(buf)  # type: ignore[arg-type]
    try:
        existing = has_superblock(mv)
        if existing and not force:
            sb = L.unpack_superblock(mv)
            owner = (
                "this host"
                if sb.system_uuid == system_uuid
                else f"another host (system UUID {sb.system_uuid})"
            )
            raise FamfsError(
                f"{medium.daxdev} already has a famfs superblock owned by {owner}; use --force to overwrite"
            )
        if kill:
            struct.pack_into("<Q", mv, 0, 0)
            medium.sync.writeback(mv, 0, 8)
            return MkfsResult(L.unpack_superblock(mv), killed=True)
        if not L.is_pow2(log_len) or log_len < L.MIN_LOG_LEN:
            raise InvalidArgument(f"log length {log_len:#x}: must be a power of 2 and at least 8 MiB")
        size = medium.size
        if L.data_start(log_len) + L.ALLOC_UNIT > size:
            raise InvalidArgument(
                f"{medium.daxdev}: {size} bytes cannot hold a 2 MiB superblock, a {log_len >> 20} MiB log "
                "and one 2 MiB file"
            )
        warnings = []
        if size < L.FAMFS_MIN_DEVICE:
            warnings.append(
                f"device is {size >> 20} MiB; famfs's own mkfs requires 4 GiB and will refuse it, "
                "but its tools can use the result"
            )
        # Invalidate any old superblock first: a crash part-way leaves an unformatted device, not an
        # old superblock in front of a half-written log.
        if existing:
            struct.pack_into("<Q", mv, 0, 0)
            medium.sync.writeback(mv, 0, 8)
        mv[L.LOG_OFFSET : L.LOG_OFFSET + log_len] = bytes(log_len)
        mv[L.LOG_OFFSET : L.LOG_OFFSET + L.LOG_HDR_SIZE] = L.pack_log_header(log_len)
        medium.sync.writeback(mv, L.LOG_OFFSET, log_len)
        sb = L.new_superblock(
            dd_size=size, daxdev=medium.daxdev, system_uuid=system_uuid, log_len=log_len, version=version
        )
        raw = L.pack_superblock(sb)
        mv[L.SB_SIZE : 4096] = bytes(4096 - L.SB_SIZE)
        mv[0 : L.SB_SIZE] = raw
        medium.sync.writeback(mv, 0, 4096)
        return MkfsResult(L.unpack_superblock(mv), warnings)
    finally:
        mv.release()


class Volume:
    """One session on a formatted medium: validated superblock, played log, and (for the master)
    an allocator.  Create with :func:`open_volume`; close to release buffer views."""

    def __init__(self, medium: Medium, system_uuid: uuid.UUID | None) -> None:
        self.medium = medium
        self.mv = memoryview(medium.buf)  # type: ignore[arg-type]
        sync = medium.sync
        sync.invalidate(self.mv, 0, L.SB_SIZE)
        problems = L.superblock_problems(self.mv, device_size=medium.size)
        if problems:
            self.mv.release()
            raise FamfsError(f"{medium.daxdev}: {problems[0]}")
        self.sb = L.unpack_superblock(self.mv)
        self.system_uuid = system_uuid
        self.is_master = system_uuid is not None and system_uuid == self.sb.system_uuid
        self.log_mv = self.mv[L.LOG_OFFSET : L.LOG_OFFSET + self.sb.log_len]
        self._alloc: Allocator | None = None
        self.scan: LogScan
        self.tree: Tree
        self.reload()

    # --- reading --------------------------------------------------------------------------
    def reload(self) -> None:
        """Invalidate and re-read the log header and the used entries, then play them."""
        sync = self.medium.sync
        sync.invalidate(self.log_mv, 0, L.LOG_HDR_SIZE)
        n = struct.unpack_from("<Q", self.log_mv, 40)[0]
        used = min(L.LOG_HDR_SIZE + (n + 1) * L.ENTRY_SIZE, self.sb.log_len)
        sync.invalidate(self.log_mv, 0, used)
        self.scan = scan_log(self.log_mv, self.sb.log_len)
        self.tree = play(self.scan.records)
        self._alloc = None

    @property
    def role(self) -> str:
        return "master" if self.is_master else "client"

    @property
    def next_index(self) -> int:
        return self.scan.header.next_index

    @property
    def capacity(self) -> int:
        return L.log_capacity(self.sb.log_len)

    def lookup_file(self, path: str) -> L.FileMeta:
        rel = path.strip("/")
        f = self.tree.files.get(rel)
        if f is None:
            what = "a directory" if rel in self.tree.dirs else "not in the log"
            raise FamfsError(f"{path}: {what}; no such famfs file")
        return f

    def read(
        self, meta: L.FileMeta, off: int = 0, length: int | None = None, *, invalidate: bool = True
    ) -> bytes:
        """Copy file bytes out (invalidating the cache lines first unless told not to)."""
        out = bytearray()
        for dev, n in self.segments(meta, off, length):
            if invalidate:
                self.medium.sync.invalidate(self.mv, dev, n)
            out += self.mv[dev : dev + n]
        return bytes(out)

    def segments(self, meta: L.FileMeta, off: int = 0, length: int | None = None) -> list[tuple[int, int]]:
        """Device runs for file bytes, refusing extents that lie outside the device.

        A medium that reaches file data through a mount (famfs.viamount) maps the file first."""
        prepare = getattr(self.medium, "prepare_file", None)
        if prepare is not None:
            prepare(meta)
        segs = L.file_segments(meta, off, length)
        for dev, n in segs:
            if dev <= 0 or dev + n > self.medium.size:
                raise FamfsError(f"{meta.path}: extent at {dev:#x}+{n:#x} lies outside the device")
        return segs

    # --- writing --------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if not self.is_master:
            who = "no system UUID" if self.system_uuid is None else f"system UUID {self.system_uuid}"
            raise NotMaster(
                f"this host is a famfs client ({who}); only the master {self.sb.system_uuid} "
                "may change the filesystem"
            )
        if self.scan.header_problems:
            raise FamfsError(f"log header is damaged ({self.scan.header_problems[0]}); run fsck")
        if self.scan.bad:
            raise FamfsError(f"log has {len(self.scan.bad)} bad entries ({self.scan.bad[0][1]}); run fsck")

    @property
    def allocator(self) -> Allocator:
        if self._alloc is None:
            built = build_bitmap(self.sb, list(self.tree.files.values()))
            self._alloc = Allocator(built.bitmap, self.sb.dd_size)
        return self._alloc

    def _append(self, entry_for: object) -> int:
        """Append the entry built by ``entry_for(seqnum)`` with the crash-safe order; returns its index."""
        hdr = self.scan.header
        idx = hdr.next_index
        if idx != hdr.next_seqnum:
            raise FamfsError(
                f"log counters disagree (next_index {idx}, next_seqnum {hdr.next_seqnum}); run fsck"
            )
        if idx > hdr.last_index:
            raise LogFull(f"the log is full: all {hdr.last_index + 1} entries are used")
        entry = entry_for(idx)  # type: ignore[operator]
        off = L.LOG_HDR_SIZE + idx * L.ENTRY_SIZE
        lm = self.log_mv
        sync = self.medium.sync
        lm[off : off + L.ENTRY_SIZE] = entry
        sync.writeback(lm, off, L.ENTRY_SIZE)
        _counters.pack_into(lm, L.LOG_HDR_COUNTERS_OFF, idx + 1)
        _counters.pack_into(lm, L.LOG_HDR_COUNTERS_OFF + 8, idx + 1)
        sync.writeback(lm, L.LOG_HDR_COUNTERS_OFF, 16)
        self.scan.header = L.LogHeader(hdr.magic, hdr.log_len, hdr.last_index, hdr.crc, idx + 1, idx + 1)
        return idx

    def mkdir(
        self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, parents: bool = False
    ) -> list[str]:
        """Log MKDIR entries; with ``parents`` missing parents get the leaf's mode and owner (as famfs).
        Returns the directories created."""
        self._require_writable()
        rel = path.strip("/")
        L.encode_relpath(rel)
        if rel in self.tree.files:
            raise FamfsError(f"{path}: a file of that name exists")
        if rel in self.tree.dirs:
            if parents:
                return []
            raise FamfsError(f"{path}: directory exists")
        parts = rel.split("/")
        todo = []
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p in self.tree.files:
                raise FamfsError(f"{p}: is a file, not a directory")
            if p not in self.tree.dirs:
                todo.append(p)
        if len(todo) > 1 and not parents:
            raise FamfsError(f"{path}: parent directory {todo[0]!r} does not exist (use -p)")
        if self.next_index >= self.capacity:
            raise LogFull(f"the log is full: all {self.capacity} entries are used")
        if self.next_index + len(todo) > self.capacity:
            raise LogFull(f"the log has {self.capacity - self.next_index} free entries; {len(todo)} needed")
        with self.medium.lock():
            for p in todo:
                idx = self._append(lambda s, p=p: L.pack_mkdir_entry(s, p, mode=mode, uid=uid, gid=gid))
                self._played(L.DirMeta(idx, p, uid, gid, mode))
        return todo

    def creat(
        self,
        path: str,
        size: int,
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        nstrips: int = 0,
        chunk: int = 0,
        nbuckets: int | None = None,
        min_bucket: int | None = None,
    ) -> tuple[L.FileMeta, bool]:
        """Allocate and log a file.  An existing file of the same size is returned as is
        (restartable, like famfs); returns (meta, created)."""
        self._require_writable()
        rel = path.strip("/")
        L.encode_relpath(rel)
        if size <= 0:
            raise InvalidArgument(f"{path}: size must be positive (famfs has no empty files)")
        have = self.tree.files.get(rel)
        if have is not None:
            if have.size == size:
                return have, False
            raise FamfsError(f"{path}: exists with size {have.size}, not {size}")
        if rel in self.tree.dirs:
            raise FamfsError(f"{path}: is a directory")
        parent = rel.rpartition("/")[0]
        if parent and parent not in self.tree.dirs:
            raise FamfsError(f"{path}: parent directory {parent!r} does not exist")
        if self.next_index > self.scan.header.last_index:
            raise LogFull(f"the log is full: all {self.capacity} entries are used")
        alloc = self.allocator
        with self.medium.lock():
            if nstrips:
                kw = {} if min_bucket is None else {"min_bucket": min_bucket}
                cs, exts = alloc.interleaved(size, nstrips, chunk, nbuckets, **kw)
            else:
                cs, exts = 0, [alloc.contiguous(size)]
            try:
                if cs:
                    idx = self._append(
                        lambda s: L.pack_interleaved_entry(
                            s, rel, size, cs, exts, mode=mode, uid=uid, gid=gid
                        )
                    )
                    meta = L.FileMeta(
                        idx,
                        rel,
                        size,
                        L.FM_ALL_HOSTS_RW,
                        uid,
                        gid,
                        mode,
                        L.EXT_INTERLEAVE,
                        tuple(exts),
                        len(exts),
                        cs,
                    )
                else:
                    idx = self._append(
                        lambda s: L.pack_file_entry(s, rel, size, exts, mode=mode, uid=uid, gid=gid)
                    )
                    meta = L.FileMeta(
                        idx, rel, size, L.FM_ALL_HOSTS_RW, uid, gid, mode, L.EXT_SIMPLE, tuple(exts)
                    )
            except BaseException:
                for _d, o, n in exts:
                    alloc.bm.release(o, n)
                raise
        self._played(meta)
        return meta, True

    def add_daxdev(self, dd_size: int, dd_uuid: uuid.UUID, dd_index: int) -> int:
        """Log an ADD_DAXDEV entry (version 48 only, as famfs)."""
        self._require_writable()
        if self.sb.version != L.VERSION_48:
            raise FamfsError(f"ADD_DAXDEV entries need famfs version 48 (superblock is {self.sb.version})")
        with self.medium.lock():
            idx = self._append(lambda s: L.pack_add_daxdev_entry(s, dd_size, dd_uuid, dd_index))
        self.scan.records.append(L.DaxdevMeta(idx, dd_size, dd_uuid, dd_index))
        return idx

    def _played(self, rec: L.FileMeta | L.DirMeta) -> None:
        self.scan.records.append(rec)
        parent_path, _, name = rec.path.rpartition("/")
        parent = self.tree.lookup(parent_path)
        assert parent is not None and not isinstance(parent, L.FileMeta)
        if isinstance(rec, L.FileMeta):
            self.tree.files[rec.path] = rec
            parent.children[name] = rec
        else:
            self.tree.dirs[rec.path] = rec
            parent.children[name] = Node(rec)

    def write(self, meta: L.FileMeta, src: bytes | BinaryIO, off: int = 0) -> int:
        """Write data into the file's extents through the mapping (writes stop at fm_size, as famfs);
        each run is written back afterwards.  Returns bytes written."""
        if not self.is_master:
            raise NotMaster("only the master writes file data")
        stream = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src
        total = 0
        for dev, n in self.segments(meta, off):
            pos = 0
            while pos < n:
                step = min(n - pos, 8 << 20)
                got = stream.readinto(self.mv[dev + pos : dev + pos + step])  # type: ignore[attr-defined]
                if not got:
                    self.medium.sync.writeback(self.mv, dev, pos)
                    return total
                pos += got
                total += got
            self.medium.sync.writeback(self.mv, dev, n)
        return total

    def close(self) -> None:
        self.log_mv.release()
        self.mv.release()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_volume(medium: Medium, system_uuid: uuid.UUID | None) -> Volume:
    return Volume(medium, system_uuid)


def iter_chunks(vol: Volume, meta: L.FileMeta, chunk: int = 8 << 20) -> Iterator[memoryview]:
    """Zero-copy views of the file's bytes, run by run, each at most ``chunk`` bytes."""
    for dev, n in vol.segments(meta):
        for pos in range(0, n, chunk):
            yield vol.mv[dev + pos : dev + min(n, pos + chunk)]
