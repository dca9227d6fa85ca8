"""famfs operations on a mapped device or image: mkfs, logplay, mkdir, creat, cp, read, getmap.

A *medium* is anything that exposes the whole device as one writable buffer (an ``mmap`` of a
devdax device or of an image file) plus a cache syncer and the file the volume lock is taken
on (:class:`Medium`; :mod:`daxmode.famfs.media.lock`).  All metadata goes through
:mod:`daxmode.famfs.media.layout`; this module adds the rules around it:

* only the master (this host's system UUID equals the superblock's) may mutate;
* one mutating session at a time per volume on this host: each mutation takes the volume lock,
  then re-reads the superblock, the log header and any entries appended since this process last
  looked (so the bitmap too), and only then checks names, allocates and picks the log slot.  An
  open ``Volume`` is a cache of the log, never the authority;
* a log append writes and writes back the entry first, then both counters (next_seqnum and
  next_index) in one 16-byte store, written back: the commit.  A crash before it leaves the
  entry outside the log (a torn tail slot); a torn entry inside the log fails its CRC and is
  never played;
* only the entry's cache lines and the header counters are written back (famfs flushes the whole
  log on every append, which is why its creat takes ~0.1 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import mmap
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from daxmode.cacheflush import CacheSync
from daxmode.errors import (
    FamfsClientHost,
    FamfsError,
    FamfsExists,
    FamfsNoSpace,
    FamfsNotFound,
    InvalidArgument,
)
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.alloc import Allocator, build_bitmap
from daxmode.famfs.media.extents import validator_for
from daxmode.famfs.media.lock import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from daxmode.famfs.media.lock import volume_lock
from daxmode.famfs.media.log import LogScan, Tree, play, scan_entries, scan_log, tail_written
from daxmode.famfs.media.names import check_new_name

_counters = struct.Struct("<2Q")  # next_seqnum, next_index: written together


class Medium(Protocol):
    """What famfs needs from the memory a volume lives on.  The device-access layer's mapping of a
    dax device or image file (:class:`daxmode.fsdev.Mapping`) is one; so is a volume reached
    through its DAX mount (:class:`daxmode.famfs.mount.metamap.MountMapping`).  Which one to open
    is famfs's choice (:func:`daxmode.famfs.medium.open_medium`)."""

    @property
    def buf(self) -> mmap.mmap:
        """``size`` bytes laid out like the device, writable unless opened read-only."""
        ...

    @property
    def size(self) -> int: ...

    @property
    def daxdev(self) -> str:
        """The name recorded in the superblock's dd_daxdev (e.g. /dev/dax0.0)."""
        ...

    @property
    def sync(self) -> CacheSync: ...

    @property
    def lock_fd(self) -> int:
        """The open file whose inode the volume lock is taken on (:mod:`daxmode.famfs.media.lock`)."""
        ...

    @property
    def lock_name(self) -> str:
        """What that file is, for messages."""
        ...

    @property
    def notes(self) -> list[str]:
        """What the user should be told about how the medium was reached."""
        ...

    def prepare_file(self, meta: L.FileMeta) -> None:
        """Make ``meta``'s data reachable in ``buf`` (nothing to do where the device is mapped whole)."""
        ...

    @property
    def data_mapped(self) -> bool:
        """True if ``buf`` holds every byte of the device, so a file's data can be written before
        its entry exists (False through a DAX mount, where only played files reach data)."""
        ...


def lock(
    medium: Medium, timeout: float | None = DEFAULT_LOCK_TIMEOUT
) -> contextlib.AbstractContextManager[None]:
    """The volume lock: exclusive across this host's processes, DeviceBusy after ``timeout`` s."""
    return volume_lock(medium.lock_fd, medium.lock_name, timeout)


class ReadsInto(Protocol):
    """A binary stream that fills a buffer (a file opened "rb", ``io.BytesIO``)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class NotMaster(FamfsClientHost):
    """A client tried to change the filesystem."""


class LogFull(FamfsNoSpace):
    """Every slot of the log is used."""


@dataclass
class MkfsResult:
    """What ``mkfs`` did (docs/json.md)."""

    superblock: L.Superblock
    warnings: list[str] = field(default_factory=list)
    killed: bool = False
    source: str = ""
    """The medium formatted (its dd_daxdev: /dev/daxX.Y or the image file)."""

    def summary(self) -> str:
        sb = self.superblock
        if self.killed:
            return f"{self.source}: famfs superblock invalidated"
        return (
            f"{self.source}: famfs v{sb.version} uuid {sb.uuid}, {sb.dd_size} bytes, "
            f"log {sb.log_len >> 20} MiB ({L.log_capacity(sb.log_len)} entries), master {sb.system_uuid}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "killed": self.killed,
            "superblock": self.superblock.to_dict(),
            "warnings": self.warnings,
        }


def has_superblock(buf: L.Bytes) -> bool:
    """True if ``buf`` starts with a famfs superblock whose magic and CRC are good (any version)."""
    mv = memoryview(buf)
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
    only the magic (famfs ``mkfs -f -k``) so the device no longer looks formatted.  Runs under the
    volume lock, so it never rewrites a log another session on this host is appending to.
    """
    L.check_version(version)
    if kill and not force:
        raise InvalidArgument("--kill needs --force")
    with lock(medium):
        return _mkfs(medium, system_uuid, log_len, version, force, kill)


def _mkfs(
    medium: Medium, system_uuid: uuid.UUID, log_len: int, version: int, force: bool, kill: bool
) -> MkfsResult:
    mv = memoryview(medium.buf)
    try:
        existing = has_superblock(mv)
        if existing and not force:
            sb = L.unpack_superblock(mv)
            owner = (
                "this host"
                if sb.system_uuid == system_uuid
                else f"another host (system UUID {sb.system_uuid})"
            )
            raise FamfsExists(
                f"{medium.daxdev} already has a famfs superblock owned by {owner}; use --force to overwrite"
            )
        if kill:
            struct.pack_into("<Q", mv, 0, 0)
            medium.sync.writeback(mv, 0, 8)
            return MkfsResult(L.unpack_superblock(mv), killed=True, source=medium.daxdev)
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
        return MkfsResult(L.unpack_superblock(mv), warnings, source=medium.daxdev)
    finally:
        mv.release()


class Reformatted(FamfsError):
    """The superblock changed under an open volume (mkfs ran again): its view no longer applies."""


class Volume:
    """One filesystem on a formatted medium: validated superblock, played log, and (for the
    master) an allocator.  Create with :func:`open_volume`; close to release buffer views.

    Reading needs no lock (entries are complete before the counters that include them), and
    :meth:`refresh` catches up with what other processes appended.  Every mutation runs in a
    :meth:`session`: the volume lock is taken, the superblock, log header, new entries and so the
    allocation bitmap are read again, and only then are names, space and the log slot decided."""

    def __init__(
        self,
        medium: Medium,
        system_uuid: uuid.UUID | None,
        *,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.medium = medium
        self.mv = memoryview(medium.buf)
        self.system_uuid = system_uuid
        self.lock_timeout = lock_timeout
        """Seconds a session waits for another writer's (None: forever)."""
        self._alloc: Allocator | None = None
        self._session_thread: int | None = None
        self._stale = False
        self.scan: LogScan
        self.tree: Tree
        try:
            self._read_superblock()
            self.log_mv = self.mv[L.LOG_OFFSET : L.LOG_OFFSET + self.sb.log_len]
            self.reload()
        except BaseException:
            with contextlib.suppress(AttributeError):
                self.log_mv.release()
            self.mv.release()
            raise

    # --- reading --------------------------------------------------------------------------
    def _read_superblock(self) -> None:
        self.medium.sync.invalidate(self.mv, 0, L.SB_SIZE)
        problems = L.superblock_problems(self.mv, device_size=self.medium.size)
        if problems:
            raise FamfsError(f"{self.medium.daxdev}: {problems[0]}")
        raw = bytes(self.mv[: L.SB_SIZE])
        sb = L.unpack_superblock(raw)
        old = getattr(self, "sb", None)
        if old is not None and (sb.uuid, sb.system_uuid, sb.log_len, sb.version) != (
            old.uuid,
            old.system_uuid,
            old.log_len,
            old.version,
        ):
            raise Reformatted(
                f"{self.medium.daxdev} was formatted again since it was opened (filesystem {old.uuid}, "
                f"now {sb.uuid}); open it again"
            )
        if old is not None and sb.dd_size != old.dd_size:
            self._alloc = None
        self.sb = sb
        self._sb_raw = raw
        self.is_master = self.system_uuid is not None and self.system_uuid == sb.system_uuid

    def reload(self) -> None:
        """Re-read everything: the superblock (Reformatted if it is another filesystem now), the log
        header and every used entry, played into a new tree."""
        self._read_superblock()
        sync = self.medium.sync
        sync.invalidate(self.log_mv, 0, L.LOG_HDR_SIZE)
        n = struct.unpack_from("<Q", self.log_mv, 40)[0]
        used = min(L.LOG_HDR_SIZE + (n + 1) * L.ENTRY_SIZE, self.sb.log_len)
        sync.invalidate(self.log_mv, 0, used)
        self.scan = scan_log(self.log_mv, self.sb.log_len)
        self.tree = play(self.scan.records, validator_for(self.sb, self.medium.size))
        self._alloc = None
        self._stale = False

    def refresh(self) -> int:
        """Catch up with entries appended since this view was read (by any process on any host);
        returns how many were added.  A changed log header means the whole log is read again."""
        sync = self.medium.sync
        sync.invalidate(self.mv, 0, L.SB_SIZE)
        if self._stale or self.mv[: L.SB_SIZE] != self._sb_raw:
            self.reload()  # Reformatted if it is another filesystem now
            return 0
        lm = self.log_mv
        sync.invalidate(lm, 0, L.LOG_HDR_SIZE)
        hdr = L.unpack_log_header(lm)
        old = self.scan.header
        cap = L.log_capacity(self.sb.log_len)
        if (
            (hdr.magic, hdr.log_len, hdr.last_index, hdr.crc)
            != (old.magic, old.log_len, old.last_index, old.crc)
            or hdr.next_index < old.next_index
            or hdr.next_index > cap
            or old.next_index > cap
            or self.scan.header_problems
        ):
            self.reload()
            return 0
        start, stop = old.next_index, hdr.next_index
        new: list[L.Record] = []
        if stop > start:
            sync.invalidate(
                lm, L.LOG_HDR_SIZE + start * L.ENTRY_SIZE, (min(stop + 1, cap) - start) * L.ENTRY_SIZE
            )
            nbad = len(self.scan.bad)
            scan_entries(lm, start, stop, new, self.scan.bad)
            if len(self.scan.bad) > nbad:
                # a slot under the counters that does not check may be a write still in flight
                # (issue 16): read the whole log again next time rather than lose what follows
                self._stale = True
        elif stop < cap:
            sync.invalidate(lm, L.LOG_HDR_SIZE + stop * L.ENTRY_SIZE, L.ENTRY_SIZE)
        self.scan.header = hdr
        self.scan.header_problems = L.log_header_problems(lm, self.sb.log_len)
        self.scan.torn_tail = tail_written(lm, stop, cap)
        for r in new:
            self._record(r)
        return len(new)

    def _record(self, r: L.Record) -> None:
        """Add one record of the log to this view: the records, the tree and the bitmap."""
        self.scan.records.append(r)
        self.tree.add(r)
        if self._alloc is not None and isinstance(r, L.FileMeta):
            for _d, off, ln in r.extents:
                self._alloc.bm.mark(off, ln)

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
            raise FamfsNotFound(f"{path}: {what}; no such famfs file")
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

        A medium that reaches file data through a mount (famfs.mount.metamap) maps the file first."""
        self.medium.prepare_file(meta)
        segs = L.file_segments(meta, off, length)
        for dev, n in segs:
            if dev <= 0 or dev + n > self.medium.size:
                raise FamfsError(f"{meta.path}: extent at {dev:#x}+{n:#x} lies outside the device")
        return segs

    # --- the mutating session ---------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Volume]:
        """Hold the volume lock and bring this view up to date: one mutating session at a time per
        volume on this host.  Re-entrant in the thread that holds it; a multi-file operation runs
        its mutations in one session (famfs's locked log: the allocation cursor carries over)."""
        me = threading.get_ident()
        if self._session_thread == me:
            yield self
            return
        with lock(self.medium, timeout=self.lock_timeout):
            self._session_thread = me
            try:
                self.refresh()
                yield self
            finally:
                self._session_thread = None

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[None]:
        """A session around one mutation; if it fails part-way, the view is re-read from the media
        (still under the lock) so no allocation or entry is assumed that the log does not hold."""
        with self.session():
            try:
                yield
            except BaseException:
                self._stale = True
                with contextlib.suppress(Exception):
                    self.reload()
                raise

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
        """The bitmap rebuilt from every FILE entry of the log (as famfs_build_bitmap), kept in step
        with the log by :meth:`refresh`."""
        if self._alloc is None:
            files = [r for r in self.scan.records if isinstance(r, L.FileMeta)]
            built = build_bitmap(self.sb, files)
            self._alloc = Allocator(built.bitmap, self.sb.dd_size)
        return self._alloc

    def _append(self, entry_for: Callable[[int], bytes]) -> int:
        """Append the entry built by ``entry_for(seqnum)``, crash-safe; returns its index.

        Caller holds the session.  The entry is written and written back first; then both counters
        in one 16-byte store (they never disagree, even if the writer dies in between), written
        back: that store is the commit.  A writer killed before it leaves a torn tail slot, outside
        the log, that the next append overwrites."""
        hdr = self.scan.header
        idx = hdr.next_index
        if idx != hdr.next_seqnum:
            raise FamfsError(
                f"log counters disagree (next_index {idx}, next_seqnum {hdr.next_seqnum}); run fsck"
            )
        if idx > hdr.last_index:
            raise LogFull(f"the log is full: all {hdr.last_index + 1} entries are used")
        entry = entry_for(idx)
        off = L.LOG_HDR_SIZE + idx * L.ENTRY_SIZE
        lm = self.log_mv
        sync = self.medium.sync
        lm[off : off + L.ENTRY_SIZE] = entry
        sync.writeback(lm, off, L.ENTRY_SIZE)
        # One contiguous 16-byte slice assignment is one memcpy, which x86-64 performs with 16-byte
        # stores: a writer killed here leaves both counters old or both new (struct.pack_into
        # stores field by field, and famfs increments them one at a time).
        lm[L.LOG_HDR_COUNTERS_OFF : L.LOG_HDR_COUNTERS_OFF + 16] = _counters.pack(idx + 1, idx + 1)
        sync.writeback(lm, L.LOG_HDR_COUNTERS_OFF, 16)
        self.scan.header = dataclasses.replace(hdr, next_seqnum=idx + 1, next_index=idx + 1)
        return idx

    def mkdir(
        self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, parents: bool = False
    ) -> list[str]:
        """Log MKDIR entries; with ``parents`` missing parents get the leaf's mode and owner (as famfs).
        Returns the directories created."""
        rel = path.strip("/")
        L.encode_relpath(rel)
        check_new_name(rel)
        with self._mutation():
            self._require_writable()
            if rel in self.tree.files:
                raise FamfsExists(f"{path}: a file of that name exists")
            if rel in self.tree.dirs:
                if parents:
                    return []
                raise FamfsExists(f"{path}: directory exists")
            parts = rel.split("/")
            todo = []
            for i in range(1, len(parts) + 1):
                p = "/".join(parts[:i])
                if p in self.tree.files:
                    raise FamfsExists(f"{p}: is a file, not a directory")
                if p not in self.tree.dirs:
                    todo.append(p)
            if len(todo) > 1 and not parents:
                raise FamfsNotFound(f"{path}: parent directory {todo[0]!r} does not exist (use -p)")
            if self.next_index >= self.capacity:
                raise LogFull(f"the log is full: all {self.capacity} entries are used")
            if self.next_index + len(todo) > self.capacity:
                raise LogFull(
                    f"the log has {self.capacity - self.next_index} free entries; {len(todo)} needed"
                )
            for p in todo:
                idx = self._append(
                    functools.partial(L.pack_mkdir_entry, relpath=p, mode=mode, uid=uid, gid=gid)
                )
                self._record(L.DirMeta(idx, p, uid, gid, mode))
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
        data: ReadsInto | None = None,
        exist_ok: bool = True,
    ) -> tuple[L.FileMeta, bool]:
        """Allocate and log a file; returns (meta, created).  An existing file of the same size is
        returned as is (restartable, like famfs) if ``exist_ok``, else FamfsExists.  ``data`` (exactly
        ``size`` bytes) is written back *before* the entry, under the volume lock: killed at any
        point, no entry and no space used, or the whole file (docs/famfs-concurrency.md, rule 5;
        through a DAX mount only the file reaches the data, so there the entry comes first)."""
        rel = path.strip("/")
        L.encode_relpath(rel)
        check_new_name(rel)
        if size <= 0:
            raise InvalidArgument(f"{path}: size must be positive (famfs has no empty files)")
        with self._mutation():
            self._require_writable()
            have = self.tree.files.get(rel)
            if have is not None:
                if not exist_ok:
                    raise FamfsExists(f"{path}: exists ({have.size} bytes); not overwritten")
                if have.size == size:
                    return have, False
                raise FamfsExists(f"{path}: exists with size {have.size}, not {size}")
            if rel in self.tree.dirs:
                raise FamfsExists(f"{path}: is a directory")
            parent = rel.rpartition("/")[0]
            if parent and parent not in self.tree.dirs:
                raise FamfsNotFound(f"{path}: parent directory {parent!r} does not exist")
            if self.next_index > self.scan.header.last_index:
                raise LogFull(f"the log is full: all {self.capacity} entries are used")
            alloc = self.allocator
            if nstrips:
                kw = {} if min_bucket is None else {"min_bucket": min_bucket}
                cs, exts = alloc.interleaved(size, nstrips, chunk, nbuckets, **kw)
            else:
                cs, exts = 0, [alloc.contiguous(size)]
            idx = self.next_index
            if cs:
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
                meta = L.FileMeta(
                    idx, rel, size, L.FM_ALL_HOSTS_RW, uid, gid, mode, L.EXT_SIMPLE, tuple(exts)
                )
            direct = self.medium.data_mapped
            if data is not None and direct:
                self._fill(meta, data)
            if cs:
                got = self._append(
                    lambda s: L.pack_interleaved_entry(s, rel, size, cs, exts, mode=mode, uid=uid, gid=gid)
                )
            else:
                got = self._append(
                    lambda s: L.pack_file_entry(s, rel, size, exts, mode=mode, uid=uid, gid=gid)
                )
            assert got == idx
            self.scan.records.append(meta)  # its extents are already marked by the allocation
            self.tree.add(meta)
            if data is not None and not direct:
                self._fill(meta, data)
        return meta, True

    def _fill(self, meta: L.FileMeta, data: ReadsInto) -> None:
        """Write exactly ``meta.size`` bytes of ``data`` into the file's extents (written back)."""
        n = self.write(meta, data)
        if n != meta.size:
            raise FamfsError(
                f"{meta.path}: the source gave {n} of {meta.size} bytes (changed while copying?)"
            )

    def add_daxdev(self, dd_size: int, dd_uuid: uuid.UUID, dd_index: int) -> int:
        """Log an ADD_DAXDEV entry (version 48 only, as famfs)."""
        with self._mutation():
            self._require_writable()
            if self.sb.version != L.VERSION_48:
                raise FamfsError(
                    f"ADD_DAXDEV entries need famfs version 48 (superblock is {self.sb.version})"
                )
            idx = self._append(lambda s: L.pack_add_daxdev_entry(s, dd_size, dd_uuid, dd_index))
            self._record(L.DaxdevMeta(idx, dd_size, dd_uuid, dd_index))
        return idx

    def write(self, meta: L.FileMeta, src: bytes | ReadsInto, off: int = 0) -> int:
        """Write data into the file's extents through the mapping (writes stop at fm_size, as famfs);
        each run is written back afterwards.  Returns bytes written.  No lock: the extents belong
        to the file once its entry is in the log."""
        if not self.is_master:
            raise NotMaster("only the master writes file data")
        stream = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src
        total = 0
        for dev, n in self.segments(meta, off):
            pos = 0
            while pos < n:
                step = min(n - pos, 8 << 20)
                got = stream.readinto(self.mv[dev + pos : dev + pos + step])
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
