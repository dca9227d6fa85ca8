"""The famfs FUSE handlers, driven with the byte messages a kernel sends (no kernel needed)."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct

import pytest
from fuseworld import MiB, log_view, populate

from daxmode.errors import InvalidArgument
from daxmode.famfs import Volume
from daxmode.famfs.mount.handlers import COPY, DAX, STATS_XATTR, Device, FamfsFuse
from daxmode.famfs.mount.namespace import LOG_ID, META_DIR_ID, ROOT_ID, SUPERBLOCK_ID, Namespace
from daxmode.fsdev import Mapping
from daxmode.fuse import fmap as F
from daxmode.fuse import proto as P
from daxmode.fuse.server import FuseError


class Kernel:
    """Plays the kernel: builds request bodies and calls the handler the server would."""

    def __init__(self, fs: FamfsFuse) -> None:
        self.fs = fs
        self.h = fs.handlers()
        self.unique = 0

    def __call__(self, op: int, nodeid: int, body: bytes = b"", uid: int = 0, gid: int = 0):  # type: ignore[no-untyped-def]
        self.unique += 1
        hdr = P.InHeader(40 + len(body), op, self.unique, nodeid, uid, gid, 1, 0)
        if op not in self.h:
            raise FuseError(errno.ENOSYS)
        out = self.h[op](hdr, memoryview(body))
        if isinstance(out, list):
            return b"".join(bytes(x) for x in out)
        return out

    def errno_of(self, op: int, nodeid: int, body: bytes = b"", **kw: int) -> int:
        with pytest.raises(FuseError) as e:
            self(op, nodeid, body, **kw)
        return e.value.errno

    def lookup(self, parent: int, name: str) -> tuple[int, P.Attr]:
        r = self(P.LOOKUP, parent, name.encode() + b"\0")
        return struct.unpack_from("<Q", r, 0)[0], P.unpack_attr(r, 40)

    def read(self, nodeid: int, off: int, size: int) -> bytes:
        return self(P.READ, nodeid, P.pack_read_in(nodeid, off, size))

    def write(self, nodeid: int, off: int, data: bytes) -> int:
        body = struct.pack("<QQIIQII", nodeid, off, len(data), 0, 0, 0, 0) + data
        return struct.unpack_from("<I", self(P.WRITE, nodeid, body), 0)[0]


@pytest.fixture
def world(vol: Volume, medium: Mapping):  # type: ignore[no-untyped-def]
    data = populate(vol)
    ns = Namespace(vol.sb, log_view(medium), is_master=True)
    dev = Device(memoryview(medium.buf), medium.sync, medium.size)
    fs = FamfsFuse(ns, COPY, device=dev)
    yield Kernel(fs), data, vol
    ns.detach_log()
    dev.buf.release()


def init_in(flags: int) -> P.InitIn:
    return P.InitIn(7, 45, 128 << 10, flags)


def test_init_copy_path(world) -> None:  # type: ignore[no-untyped-def]
    k, _d, _v = world
    offered = (
        P.ASYNC_READ
        | P.BIG_WRITES
        | P.MAX_PAGES
        | P.INIT_EXT
        | P.DIRECT_IO_ALLOW_MMAP
        | P.DAX_FMAP
        | P.SPLICE_READ
    )
    out = k.fs.init(init_in(offered))
    assert out.flags & P.DIRECT_IO_ALLOW_MMAP and out.flags & P.INIT_EXT and out.flags & P.MAX_PAGES
    assert not out.flags & P.DAX_FMAP and not out.flags & P.SPLICE_READ  # never what was not asked for
    assert (out.major, out.minor, out.max_write, out.max_pages) == (7, 45, 1 << 20, 1024)
    old = k.fs.init(P.InitIn(7, 38, 4096, P.ASYNC_READ | P.BIG_WRITES))
    assert old.flags == P.ASYNC_READ | P.BIG_WRITES and old.minor == 38  # no flags2 without INIT_EXT


def test_init_dax_path_needs_the_flag(vol: Volume, medium: Mapping) -> None:
    ns = Namespace(vol.sb, log_view(medium))
    fs = FamfsFuse(ns, DAX, daxdev="/dev/dax0.0")
    with pytest.raises(FuseError) as e:
        fs.init(init_in(P.INIT_EXT | P.ASYNC_READ))
    assert e.value.errno == errno.EOPNOTSUPP
    out = fs.init(init_in(P.INIT_EXT | P.ASYNC_READ | P.DAX_FMAP | P.DIRECT_IO_ALLOW_MMAP))
    assert out.flags & P.DAX_FMAP and out.flags & P.INIT_EXT and not out.flags & P.DIRECT_IO_ALLOW_MMAP
    assert P.GET_FMAP in fs.handlers() and P.GET_DAXDEV in fs.handlers()
    ns.detach_log()


def test_lookup_getattr(world) -> None:  # type: ignore[no-untyped-def]
    k, data, _v = world
    d, dattr = k.lookup(ROOT_ID, "d")
    assert stat.S_ISDIR(dattr.mode) and dattr.nlink == 2
    a, attr = k.lookup(d, "a.bin")
    assert attr.size == len(data["d/a.bin"]) and attr.mode == stat.S_IFREG | 0o644 and attr.blksize == 2 * MiB
    assert attr.blocks == 4 * MiB // 512 and attr.ino == a
    assert k.errno_of(P.LOOKUP, ROOT_ID, b"missing\0") == errno.ENOENT
    r = k(P.GETATTR, a, struct.pack("<IIQ", 0, 0, 0))
    assert P.unpack_attr(r, 16) == attr
    assert k.errno_of(P.GETATTR, 99999) == errno.ENOENT
    _p, pattr = k.lookup(ROOT_ID, "priv")
    assert (pattr.mode & 0o7777, pattr.uid, pattr.gid) == (0o700, 1000, 1000)


def test_read_through_the_mapping(world) -> None:  # type: ignore[no-untyped-def]
    k, data, _v = world
    d, _ = k.lookup(ROOT_ID, "d")
    a, _ = k.lookup(d, "a.bin")
    whole = data["d/a.bin"]
    assert k.read(a, 0, 1 << 20) == whole[: 1 << 20]
    assert k.read(a, 3 * MiB, 1 << 20) == whole[3 * MiB :]  # short at EOF
    assert k.read(a, len(whole), 4096) == b""
    il, _ = k.lookup(ROOT_ID, "il.bin")
    got = b"".join(k.read(il, off, 1 << 20) for off in range(0, len(data["il.bin"]), 1 << 20))
    assert got == data["il.bin"]  # interleaved: runs from both strips in order
    sb = k.read(SUPERBLOCK_ID, 0, 200)
    assert struct.unpack_from("<Q", sb, 0)[0] == 0x87B282FF


def test_write_lands_and_stops_at_eof(world) -> None:  # type: ignore[no-untyped-def]
    k, data, v = world
    d, _ = k.lookup(ROOT_ID, "d")
    a, _ = k.lookup(d, "a.bin")
    assert k.write(a, 10, b"HELLO") == 5
    meta = v.lookup_file("d/a.bin")
    assert v.read(meta, 8, 9) == data["d/a.bin"][8:10] + b"HELLO" + data["d/a.bin"][15:17]
    size = len(data["d/a.bin"])
    assert k.write(a, size - 2, b"xyz") == 2  # short: files never grow
    body = struct.pack("<QQIIQII", a, size, 1, 0, 0, 0, 0) + b"z"
    assert k.errno_of(P.WRITE, a, body) == errno.EFBIG
    assert k.fs.stats.write_bytes == 7


def test_famfs_semantics_refused(world) -> None:  # type: ignore[no-untyped-def]
    k, _data, _v = world
    d, _ = k.lookup(ROOT_ID, "d")
    a, attr = k.lookup(d, "a.bin")
    for op in (P.UNLINK, P.RMDIR, P.MKDIR, P.MKNOD, P.CREATE, P.RENAME, P.RENAME2, P.LINK, P.SYMLINK):
        assert k.errno_of(op, d, b"a.bin\0") == errno.EPERM, P.OPCODE_NAMES[op]
    assert k.errno_of(P.SETATTR, a, P.pack_setattr_in(P.FATTR_SIZE, size=0)) == errno.EPERM
    assert k.errno_of(P.SETATTR, a, P.pack_setattr_in(P.FATTR_MODE, mode=0o777)) == errno.EPERM
    assert k.errno_of(P.SETATTR, a, P.pack_setattr_in(P.FATTR_UID, uid=5)) == errno.EPERM
    same = k(P.SETATTR, a, P.pack_setattr_in(P.FATTR_SIZE | P.FATTR_MTIME, size=attr.size))
    assert P.unpack_attr(same, 16) == attr  # a no-op size and times are accepted
    trunc = struct.pack("<II", os.O_WRONLY | os.O_TRUNC, 0)
    assert k.errno_of(P.OPEN, a, trunc) == errno.EPERM
    assert k.errno_of(P.FALLOCATE, a, bytes(32)) == errno.EOPNOTSUPP
    o = k(P.OPEN, a, struct.pack("<II", os.O_RDWR, 0))
    assert struct.unpack_from("<QI", o, 0) == (
        a,
        P.FOPEN_DIRECT_IO | P.FOPEN_PARALLEL_DIRECT_WRITES | P.FOPEN_NOFLUSH,
    )
    assert k.errno_of(P.FLUSH, a, struct.pack("<QIIQ", a, 0, 0, 0)) == errno.ENOSYS  # the kernel stops asking
    assert k.errno_of(P.OPEN, d, struct.pack("<II", 0, 0)) == errno.EISDIR
    assert k.errno_of(P.OPENDIR, a, struct.pack("<II", 0, 0)) == errno.ENOTDIR


def test_readdir_pages_with_cookies(world) -> None:  # type: ignore[no-untyped-def]
    k, _d, v = world
    for i in range(40):
        v.creat(f"d/f{i:02d}", 4096)
    d, _ = k.lookup(ROOT_ID, "d")
    k(P.OPENDIR, d, struct.pack("<II", 0, 0))
    names: list[bytes] = []
    off = 0
    while True:
        raw = k(P.READDIR, d, P.pack_read_in(0, off, 300))
        if not raw:
            break
        ents = P.unpack_dirents(raw)
        assert len(raw) <= 300
        names += [e[2] for e in ents]
        off = ents[-1][1]
    assert (
        names[:2] == [b".", b".."]
        and names[2] == b"a.bin"
        and names[3:] == [f"f{i:02d}".encode() for i in range(40)]
    )
    root = P.unpack_dirents(k(P.READDIR, ROOT_ID, P.pack_read_in(0, 0, 4096)))
    kinds = {e[2]: e[3] for e in root}
    assert kinds[b".meta"] == P.DT_DIR and kinds[b"il.bin"] == P.DT_REG


def test_fmap_replies(world) -> None:  # type: ignore[no-untyped-def]
    k, _data, v = world
    fs = FamfsFuse(k.fs.ns, DAX, daxdev="/dev/dax3.1")
    kk = Kernel(fs)
    d, _ = kk.lookup(ROOT_ID, "d")
    a, _ = kk.lookup(d, "a.bin")
    fm = F.decode(kk(P.GET_FMAP, a))
    meta = v.lookup_file("d/a.bin")
    assert fm.ext_type == F.EXT_SIMPLE and fm.file_size == meta.size and fm.extents == list(meta.extents)
    il, _ = kk.lookup(ROOT_ID, "il.bin")
    raw = kk(P.GET_FMAP, il)
    assert F.kernel_problems(raw) == []
    fm = F.decode(raw)
    m2 = v.lookup_file("il.bin")
    assert fm.ext_type == F.EXT_INTERLEAVE and fm.interleaved[0].chunk_size == 2 * MiB
    assert list(fm.interleaved[0].strips) == list(m2.extents) and fm.interleaved[0].nbytes == m2.size
    # every byte resolves where the log says
    from daxmode.famfs.media import layout as L

    for off in (0, 2 * MiB - 1, 2 * MiB, 5 * MiB + 3, m2.size - 1):
        assert F.resolve(fm, off) == L.file_segments(m2, off, 1)[0][0]
    sbm = F.decode(kk(P.GET_FMAP, SUPERBLOCK_ID))
    assert sbm.extents == [(0, 0, 2 * MiB)] and sbm.file_size == 2 * MiB
    assert F.decode(kk(P.GET_FMAP, LOG_ID)).extents == [(0, 2 * MiB, 8 * MiB)]
    assert kk.errno_of(P.GET_FMAP, META_DIR_ID) == errno.EINVAL
    assert fs.fmaps_sent == {a: 1, il: 1, SUPERBLOCK_ID: 1, LOG_ID: 1}
    dd = kk(P.GET_DAXDEV, 0)
    assert len(dd) == 280 and F.unpack_daxdev_out(dd) == (0, "/dev/dax3.1")
    assert kk.errno_of(P.GET_DAXDEV, 1) == errno.EINVAL
    assert kk.errno_of(P.READ, a, P.pack_read_in(a, 0, 10)) == errno.EIO  # no data through a DAX server
    assert P.GET_FMAP not in k.h  # the copy path never answers famfs opcodes (ENOSYS)


def test_statfs_and_stats_xattr(world) -> None:  # type: ignore[no-untyped-def]
    k, _d, _v = world
    s = k(P.STATFS, ROOT_ID)
    blocks, bfree, _ba, files, ffree, bsize, namelen, _fr = struct.unpack_from("<QQQQQIII", s, 0)
    assert bsize == 2 * MiB and namelen == 79 and files == 15420 and ffree == 15420 - 5
    assert blocks == 128 and bfree == 128 - (5 + 2 + 1 + 6)  # sb+log (10 MiB), a.bin 4, s 2, il 12 (MiB)
    k.read(*(k.lookup(ROOT_ID, "il.bin")[0], 0, 4096))
    size = struct.unpack_from("<I", k(P.GETXATTR, ROOT_ID, struct.pack("<II", 0, 0) + STATS_XATTR + b"\0"))[0]
    val = json.loads(k(P.GETXATTR, ROOT_ID, struct.pack("<II", size + 100, 0) + STATS_XATTR + b"\0"))
    assert (
        val["data_path"] == "copy" and val["server"]["read_bytes"] == 4096 and val["namespace"]["files"] == 3
    )
    assert k.errno_of(P.GETXATTR, ROOT_ID, struct.pack("<II", 0, 0) + b"user.other\0") == errno.ENODATA
    assert k.errno_of(P.GETXATTR, ROOT_ID, struct.pack("<II", 3, 0) + STATS_XATTR + b"\0") == errno.ERANGE


def test_access_check_without_default_permissions(world) -> None:  # type: ignore[no-untyped-def]
    k, _d, _v = world
    p, _ = k.lookup(ROOT_ID, "priv")
    assert k(P.ACCESS, p, struct.pack("<II", os.R_OK, 0), uid=1000, gid=1000) is None
    assert k.errno_of(P.ACCESS, p, struct.pack("<II", os.R_OK, 0), uid=65534, gid=65534) == errno.EACCES
    assert k(P.ACCESS, p, struct.pack("<II", os.R_OK | os.W_OK, 0), uid=0) is None


def test_size_fault_skews_attributes_only(world, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The test-only knob behind the VM check of the famfs kernel's size rule: attributes lie,
    GET_FMAP keeps the log's size."""
    k, data, v = world
    monkeypatch.setenv("DAXMODE_FUSE_SIZE_FAULT", "/d/a.bin:4096")
    fs = FamfsFuse(k.fs.ns, DAX, daxdev="/dev/dax0.0")
    kk = Kernel(fs)
    d, _ = kk.lookup(ROOT_ID, "d")
    a, attr = kk.lookup(d, "a.bin")
    assert attr.size == len(data["d/a.bin"]) + 4096
    assert F.decode(kk(P.GET_FMAP, a)).file_size == v.lookup_file("d/a.bin").size
    _il, ilattr = kk.lookup(ROOT_ID, "il.bin")
    assert ilattr.size == v.lookup_file("il.bin").size  # other files untouched
    monkeypatch.setenv("DAXMODE_FUSE_SIZE_FAULT", "nonsense")
    with pytest.raises(InvalidArgument, match="DAXMODE_FUSE_SIZE_FAULT"):
        FamfsFuse(k.fs.ns, DAX, daxdev="/dev/dax0.0")
