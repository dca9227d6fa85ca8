"""The famfs file system as FUSE handlers: the namespace from the log, data by copy or by DAX.

Two data paths (docs/famfs-mount.md):

* ``copy`` (any kernel): the server maps the device (devdax) or image and answers READ/WRITE from
  the mapping: a READ's reply is a view of the mapping handed to ``writev(2)``, so the only copy
  is the kernel's, into the reader's pages; cache lines are invalidated before a READ and
  written back after a WRITE (non-coherent sharing).  Files open with ``FOPEN_DIRECT_IO``, so no
  host keeps a stale page cache for read(2)/write(2); ``FUSE_DIRECT_IO_ALLOW_MMAP`` makes shared
  mmap work (through the page cache, dropped at each open: close-to-open consistency).
* ``dax`` (a famfs V10 kernel that offered ``FUSE_DAX_FMAP``): every regular file gets GET_FMAP
  (its extents, 2 MiB aligned) and the device gets GET_DAXDEV; the kernel then maps file data
  straight onto the fsdev-mode device and no data passes through here.

No FLUSH: open replies carry FOPEN_NOFLUSH and a FLUSH is answered ENOSYS (the kernel then
stops sending them).  Writes are synchronous, so there is nothing to flush, and it keeps a close on
the mount from ever waiting for the server: the server itself holds ``.meta/.log`` of its own
mount on the dax path, and when it is killed the kernel closes that file (and would send FLUSH)
before it releases /dev/fuse, so a FLUSH would wait forever for a server that is exiting (seen on
the V10 kernel: the killed server hung in ``fuse_flush`` under ``do_exit``).

famfs semantics: no create, unlink, rename, link, mkdir or size change through the mount (EPERM,
as for an immutable inode); chmod/chown are refused too, because modes and owners come from the
log and would not reach other hosts.  Writes stop at the file size: a write starting at or past
it fails with EFBIG, one crossing it is short.  Files come from ``daxmode famfs creat/cp/mkdir``.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from daxmode.cacheflush import CacheSync, NoSync
from daxmode.errors import FamfsError, InvalidArgument
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.extents import require_admitted
from daxmode.famfs.mount.namespace import ROOT_ID, Inode, Namespace
from daxmode.fuse import fmap as F
from daxmode.fuse import proto as P
from daxmode.fuse.server import FuseError, Payload, Stats

COPY = "copy"
DAX = "dax"
DATA_PATHS = (COPY, DAX)
TTL = 86400.0
"""Names and attributes never change once played (famfs never deletes), so the kernel may cache
them for a day; a name not found is never cached (a miss is answered ENOENT without an entry)."""
MAX_WRITE = 1 << 20
MAX_PAGES = 1024
"""Pages per READ reply asked for; the kernel clamps it to fs.fuse.max_pages_limit (256 = 1 MiB by
default; an administrator who raises it to 1024 gets 4 MiB requests)."""
STATS_XATTR = b"user.daxmode.stats"
SIZE_FAULT_ENV = "DAXMODE_FUSE_SIZE_FAULT"
"""Test-only: ``PATH:DELTA[,PATH:DELTA...]`` makes the attributes of the famfs file PATH report
its size plus DELTA bytes, while GET_FMAP keeps the log's size.  This is how the VM suite shows
the famfs kernel's own rule on the real kernel: an inode whose size differs from its fmap's is
marked bad and its I/O fails (V10 ``famfs_file_bad``: ENXIO, then EIO)."""


def parse_size_faults(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        path, _, delta = item.rpartition(":")
        try:
            out[path.strip("/")] = int(delta, 0)
        except ValueError:
            raise InvalidArgument(f"{SIZE_FAULT_ENV}: bad entry {item!r} (want PATH:DELTA)") from None
        if not path:
            raise InvalidArgument(f"{SIZE_FAULT_ENV}: bad entry {item!r} (want PATH:DELTA)")
    return out


_O_ACCMODE = 3

_REFUSED = (
    P.MKNOD, P.MKDIR, P.UNLINK, P.RMDIR, P.RENAME, P.RENAME2, P.LINK, P.SYMLINK, P.CREATE, P.TMPFILE,
    P.SETXATTR, P.REMOVEXATTR,
)  # fmt: skip


@dataclass
class Device:
    """Where file data lives for the copy path: the whole device/image mapped, and its syncer."""

    buf: memoryview
    sync: CacheSync
    size: int


class FamfsFuse:
    """FUSE handlers for one famfs volume (see the module docstring)."""

    def __init__(
        self,
        ns: Namespace,
        data_path: str,
        *,
        device: Device | None = None,
        daxdev: str | None = None,
        stats: Stats | None = None,
        info: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        if data_path not in DATA_PATHS:
            raise ValueError(f"data path {data_path!r}")
        if data_path == COPY and device is None:
            raise ValueError("the copy data path needs the device mapping")
        if data_path == DAX and not daxdev:
            raise ValueError("the dax data path needs the device path for GET_DAXDEV")
        self.ns = ns
        self.data_path = data_path
        self.device = device
        self.daxdev = daxdev
        self.stats = stats or Stats()
        self.info = info
        self.init_in: P.InitIn | None = None
        self.init_out: P.InitOut | None = None
        self.fmaps_sent: dict[int, int] = {}
        self.size_faults = parse_size_faults(os.environ.get(SIZE_FAULT_ENV, ""))

    # --- INIT -------------------------------------------------------------------------------
    def init(self, req: P.InitIn) -> P.InitOut:
        self.init_in = req
        want = P.ASYNC_READ | P.BIG_WRITES | P.MAX_PAGES | P.ATOMIC_O_TRUNC | P.PARALLEL_DIROPS | P.ASYNC_DIO
        if self.data_path == COPY:
            want |= P.DIRECT_IO_ALLOW_MMAP
        else:
            if not req.flags & P.DAX_FMAP:
                raise FuseError(errno.EOPNOTSUPP, "the kernel did not offer FUSE_DAX_FMAP")
            want |= P.DAX_FMAP
        flags = want & req.flags
        if flags >> 32 and req.flags & P.INIT_EXT:
            flags |= P.INIT_EXT  # flags2 is read only with INIT_EXT (kernel 3066ff93476c)
        else:
            flags &= 0xFFFFFFFF
        out = P.InitOut(
            major=P.KERNEL_VERSION,
            minor=min(req.minor, P.KERNEL_MINOR),
            max_readahead=req.max_readahead,
            flags=flags,
            max_background=32,
            congestion_threshold=24,
            max_write=MAX_WRITE,
            time_gran=1,
            max_pages=MAX_PAGES,
        )
        self.init_out = out
        return out

    def handlers(self) -> dict[int, Callable[[P.InHeader, memoryview], Payload]]:
        h: dict[int, Callable[[P.InHeader, memoryview], Payload]] = {
            P.LOOKUP: self.lookup,
            P.FORGET: _nothing,
            P.BATCH_FORGET: _nothing,
            P.INTERRUPT: _nothing,
            P.GETATTR: self.getattr,
            P.SETATTR: self.setattr,
            P.OPEN: self.open,
            P.OPENDIR: self.opendir,
            P.READ: self.read,
            P.WRITE: self.write,
            P.READDIR: self.readdir,
            P.RELEASE: _nothing,
            P.RELEASEDIR: _nothing,
            P.FLUSH: _refuse(errno.ENOSYS),
            P.FSYNC: _nothing,
            P.FSYNCDIR: _nothing,
            P.STATFS: self.statfs,
            P.ACCESS: self.access,
            P.GETXATTR: self.getxattr,
            P.LISTXATTR: self.listxattr,
            P.FALLOCATE: _refuse(errno.EOPNOTSUPP),
            P.DESTROY: _nothing,
        }
        for op in _REFUSED:
            h[op] = _refuse(errno.EPERM)
        if self.data_path == DAX:
            h[P.GET_FMAP] = self.get_fmap
            h[P.GET_DAXDEV] = self.get_daxdev
        return h

    # --- attributes ---------------------------------------------------------------------------
    def _inode(self, nodeid: int) -> Inode:
        ino = self.ns.get(nodeid)
        if ino is None:
            raise FuseError(errno.ENOENT)
        return ino

    def attr(self, ino: Inode) -> P.Attr:
        s, ns = self.ns.time
        nlink = 2 + ino.nsubdirs if ino.is_dir else 1
        size = ino.size
        if self.size_faults and ino.meta is not None:
            size += self.size_faults.get(ino.meta.path, 0)
        return P.Attr(
            ino.nodeid, size, -(-ino.allocated // 512), ino.mode, nlink, ino.uid, ino.gid, s, ns,
            L.ALLOC_UNIT,
        )  # fmt: skip

    def lookup(self, h: P.InHeader, body: memoryview) -> bytes:
        name = P.name_arg(body)
        ino = self.ns.lookup(h.nodeid, name)
        if ino is None:
            raise FuseError(errno.ENOENT)
        return P.pack_entry_out(ino.nodeid, self.attr(ino), TTL, TTL)

    def getattr(self, h: P.InHeader, body: memoryview) -> bytes:
        return P.pack_attr_out(self.attr(self._inode(h.nodeid)), TTL)

    def setattr(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        a = P.parse_setattr_in(body)
        if a.valid & P.FATTR_SIZE and a.size != ino.size:
            raise FuseError(errno.EPERM, "famfs files never change size")
        if a.valid & P.FATTR_MODE and (a.mode & 0o7777) != ino.perm:
            raise FuseError(errno.EPERM, "modes come from the famfs log")
        if (a.valid & P.FATTR_UID and a.uid != ino.uid) or (a.valid & P.FATTR_GID and a.gid != ino.gid):
            raise FuseError(errno.EPERM, "owners come from the famfs log")
        # Times and the other bits are accepted and not stored: famfs keeps no times.
        return P.pack_attr_out(self.attr(ino), TTL)

    def access(self, h: P.InHeader, body: memoryview) -> None:
        """Only sent without default_permissions; checks the owner/group/other bits."""
        ino = self._inode(h.nodeid)
        want = P.parse_access_in(body) & 7
        if h.uid == 0 or not want:
            return None
        bits = ino.perm >> 6 if h.uid == ino.uid else ino.perm >> 3 if h.gid == ino.gid else ino.perm
        if want & ~bits & 7:
            raise FuseError(errno.EACCES)
        return None

    # --- opening ------------------------------------------------------------------------------
    def open(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        if ino.is_dir:
            raise FuseError(errno.EISDIR)
        o = P.parse_open_in(body)
        if o.flags & os.O_TRUNC and o.flags & _O_ACCMODE != os.O_RDONLY:
            raise FuseError(errno.EPERM, "famfs files cannot be truncated")
        flags = P.FOPEN_NOFLUSH
        if self.data_path == COPY:
            flags |= P.FOPEN_DIRECT_IO | P.FOPEN_PARALLEL_DIRECT_WRITES
        return P.pack_open_out(ino.nodeid, flags)

    def opendir(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        if not ino.is_dir:
            raise FuseError(errno.ENOTDIR)
        self.ns.refresh()
        return P.pack_open_out(0, 0)

    def readdir(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        if ino.children is None:
            raise FuseError(errno.ENOTDIR)
        r = P.parse_read_in(body)
        if r.offset == 0:
            self.ns.refresh()
        out: list[bytes] = []
        used = 0
        cookie = r.offset
        entries = ino.order
        while True:
            if cookie == 0:
                name, nid, dt = b".", ino.nodeid, P.DT_DIR
            elif cookie == 1:
                name, nid, dt = b"..", ino.parent, P.DT_DIR
            elif cookie - 2 < len(entries):
                name = entries[cookie - 2]
                nid = ino.children[name]
                child = self.ns.get(nid)
                dt = P.DT_DIR if child is not None and child.is_dir else P.DT_REG
            else:
                break
            need = P.dirent_size(name)
            if used + need > r.size:
                break
            out.append(P.pack_dirent(nid, cookie + 1, name, dt))
            used += need
            cookie += 1
        return b"".join(out)

    # --- data (copy path) -----------------------------------------------------------------------
    def _segments(self, ino: Inode, off: int, size: int) -> list[tuple[int, int]]:
        dev = self.device
        if dev is None:
            raise FuseError(errno.EIO, "no data path through the server on a DAX mount")
        segs = ino.segments(off, size)
        for d, n in segs:
            if d < 0 or d + n > dev.size:
                raise FuseError(errno.EIO, f"{self.ns.path_of(ino.nodeid)}: extent outside the device")
        return segs

    def read(self, h: P.InHeader, body: memoryview) -> list[memoryview] | bytes:
        ino = self._inode(h.nodeid)
        r = P.parse_read_in(body)
        segs = self._segments(ino, r.offset, r.size)
        if not segs:
            return b""
        dev = self.device
        assert dev is not None
        buf, inval = dev.buf, dev.sync.invalidate
        views = []
        total = 0
        for d, n in segs:
            inval(buf, d, n)
            views.append(buf[d : d + n])
            total += n
        self.stats.add_bytes(read=total)
        return views

    def write(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        if ino.is_dir:
            raise FuseError(errno.EISDIR)
        w = P.parse_write_in(body)
        if w.offset >= ino.size:
            raise FuseError(errno.EFBIG, "famfs files never grow")
        n = min(w.size, ino.size - w.offset)
        dev = self.device
        segs = self._segments(ino, w.offset, n)
        assert dev is not None
        buf, wb = dev.buf, dev.sync.writeback
        pos = 0
        for d, ln in segs:
            buf[d : d + ln] = w.data[pos : pos + ln]
            wb(buf, d, ln)
            pos += ln
        self.stats.add_bytes(written=pos)
        return P.pack_write_out(pos)

    # --- dax path -------------------------------------------------------------------------------
    def fmap(self, ino: Inode) -> bytes:
        """The GET_FMAP reply for a regular file: its log extents, or one region for a meta file."""
        if ino.is_dir:
            raise F.FmapError("a directory has no fmap")
        m = ino.meta
        if m is None:
            assert ino.region is not None
            return F.encode_region(ino.size, *ino.region)
        if self.ns.validator is None:
            raise F.FmapError("no superblock read yet: no map is sent")
        try:  # the one validator, again at the wire: no map unless it admitted exactly this entry
            require_admitted(self.ns.validator, m)
        except FamfsError as e:
            raise F.FmapError(f"extent validator refuses the map: {e}", errno.EIO) from None
        exts = [(int(dx), off, ln) for dx, off, ln in m.extents]
        if m.interleaved:
            return F.encode_interleaved(m.size, [F.Interleave(m.chunk_size, m.size, exts)])
        return F.encode_simple(m.size, exts)

    def get_fmap(self, h: P.InHeader, body: memoryview) -> bytes:
        ino = self._inode(h.nodeid)
        try:
            out = self.fmap(ino)
        except F.FmapError as e:
            raise FuseError(e.errno, f"{self.ns.path_of(ino.nodeid)}: {e}") from None
        self.fmaps_sent[ino.nodeid] = self.fmaps_sent.get(ino.nodeid, 0) + 1
        return out

    def get_daxdev(self, h: P.InHeader, body: memoryview) -> bytes:
        # V10 05: the device index travels in nodeid; only index 0 exists (famfs, and the kernel's
        # fmap check rejects any other).
        if h.nodeid != 0 or not self.daxdev:
            raise FuseError(errno.EINVAL, f"no daxdev with index {h.nodeid}")
        return F.pack_daxdev_out(0, self.daxdev)

    # --- the rest ---------------------------------------------------------------------------------
    def statfs(self, h: P.InHeader, body: memoryview) -> bytes:
        ns = self.ns
        ns.refresh()
        sb = ns.sb
        au = L.ALLOC_UNIT
        if sb is None:
            return P.pack_statfs_out(P.Statfs(0, 0, 0, 0, 0, au, L.MAX_RELPATH, au))
        blocks = sb.dd_size // au
        used = min(blocks, (L.data_start(sb.log_len) + ns.allocated) // au)
        cap = L.log_capacity(sb.log_len)
        return P.pack_statfs_out(
            P.Statfs(
                blocks, blocks - used, blocks - used, cap, max(cap - ns.played, 0), au, L.MAX_RELPATH, au
            )
        )

    def stats_json(self) -> bytes:
        d: dict[str, object] = {"data_path": self.data_path, "server": self.stats.to_dict()}
        d["namespace"] = self.ns.summary()
        if self.data_path == DAX:
            d["fmaps_sent"] = len(self.fmaps_sent)
            d["fmap_requests"] = sum(self.fmaps_sent.values())
        if self.info is not None:
            d.update(self.info())
        return json.dumps(d, sort_keys=True).encode()

    def getxattr(self, h: P.InHeader, body: memoryview) -> bytes:
        size, name = P.parse_getxattr_in(body)
        if h.nodeid != ROOT_ID or name != STATS_XATTR:
            raise FuseError(errno.ENODATA)
        value = self.stats_json()
        if size == 0:
            return P.pack_getxattr_size(len(value))
        if size < len(value):
            raise FuseError(errno.ERANGE)
        return value

    def listxattr(self, h: P.InHeader, body: memoryview) -> bytes:
        size = P.parse_getxattr_in(bytes(body[:8]) + b"\0")[0] if len(body) >= 8 else 0
        names = STATS_XATTR + b"\0" if h.nodeid == ROOT_ID else b""
        if size == 0:
            return P.pack_getxattr_size(len(names))
        if size < len(names):
            raise FuseError(errno.ERANGE)
        return names


def _nothing(h: P.InHeader, body: memoryview) -> None:
    return None


def _refuse(err: int) -> Callable[[P.InHeader, memoryview], Payload]:
    def refuse(h: P.InHeader, body: memoryview) -> Payload:
        raise FuseError(err)

    return refuse


def device_from_buffer(buf: L.Bytes, sync: CacheSync | None = None) -> Device:
    mv = memoryview(buf)
    return Device(mv, sync or NoSync(), len(mv))


__all__ = ["COPY", "DATA_PATHS", "DAX", "Device", "FamfsFuse", "device_from_buffer"]
