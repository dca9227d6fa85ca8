"""famfs's file-map ioctls answered through FUSE_IOCTL, so ``famfs getmap`` and ``famfs check`` work
on a daxmode mount (famfs_fused answers no ioctl; famfs documents both as famfs-v1 only).

The kernel forwards an ioctl on a FUSE file to the server as FUSE_IOCTL (fs/fuse/ioctl.c
``fuse_do_ioctl``); unrestricted ioctls are for CUSE only, so the sizes come from the command's
``_IOC`` encoding and the reply carries at most ``out_size`` bytes.  The commands and structures are
famfs's uapi (``linux_include/linux/famfs_ioctl.h`` at 5d0919f, KABI 43, x86_64 layout):

* ``FAMFSIOC_NOP`` (``_IO('u', 0x53)``): succeeds on a famfs file ("is this famfs?");
* ``FAMFSIOC_MAP_GET`` (``_IOR('u', 0x51, struct famfs_ioc_map)``, 56 bytes): extent type, file
  type, size, extent count and the first ``FAMFS_MAX_EXTENTS`` (2) extents;
* ``FAMFSIOC_MAP_GET_V2`` (``_IOR('u', 0x55, struct famfs_ioc_get_fmap)``, 448 bytes): the fmap
  header, then up to 2 simple extents or one interleaved extent of up to 16 strips.  A file with
  more simple extents than that cannot be described in it: EINVAL (``famfs getmap`` then reports
  "no map").  The kernel pointers inside the structures are left zero.
"""

from __future__ import annotations

import errno
import struct

from daxmode.famfs.media import layout as L
from daxmode.famfs.mount.namespace import LOG_ID, SUPERBLOCK_ID, Inode
from daxmode.fuse.server import FuseError

IOCTL_IN = struct.Struct("<QIIQII")  # fh flags cmd arg in_size out_size (fuse_ioctl_in)
IOCTL_OUT = struct.Struct("<iIII")  # result flags in_iovs out_iovs (fuse_ioctl_out)


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("u") << 8) | nr


IOC_READ = 2
MAP_V1 = struct.Struct("<IIQQ")  # extent_type file_type file_size ext_list_count, then 2 x (offset, len)
MAX_EXTENTS = 2
MAX_STRIPS = 16
MAP_V1_SIZE = MAP_V1.size + MAX_EXTENTS * 16  # 56
FMAP_HEAD = struct.Struct("<QIII4xQ")  # file_size file_type ext_type nextents|niext, kse|kie pointer
SIMPLE = struct.Struct("<3Q")  # devindex offset len
IEXT = struct.Struct("<3QQ")  # nstrips chunk_size nbytes, ie_strips pointer
GET_FMAP_SIZE = FMAP_HEAD.size + IEXT.size + MAX_STRIPS * SIMPLE.size  # 448

FAMFSIOC_NOP = _ioc(0, 0x53, 0)
FAMFSIOC_MAP_GET = _ioc(IOC_READ, 0x51, MAP_V1_SIZE)
FAMFSIOC_MAP_GET_V2 = _ioc(IOC_READ, 0x55, GET_FMAP_SIZE)
FILE_REG, FILE_SUPERBLOCK, FILE_LOG = 0, 1, 2
SIMPLE_DAX_EXTENT, INTERLEAVED_EXTENT = 0, 1

assert FMAP_HEAD.size == 32 and GET_FMAP_SIZE == 448 and MAP_V1_SIZE == 56


def _file_type(ino: Inode) -> int:
    return {SUPERBLOCK_ID: FILE_SUPERBLOCK, LOG_ID: FILE_LOG}.get(ino.nodeid, FILE_REG)


def _extents(ino: Inode) -> tuple[bool, int, int, list[tuple[int, int, int]]]:
    """(interleaved, nstrips, chunk, extents) of a file or meta file."""
    if ino.meta is not None:
        m = ino.meta
        return m.interleaved, m.nstrips, m.chunk_size, [(d, o, n) for d, o, n in m.extents]
    assert ino.region is not None
    return False, 0, 0, [(0, ino.region[0], ino.region[1])]


def map_v1(ino: Inode) -> bytes:
    interleaved, _ns, _cs, exts = _extents(ino)
    out = bytearray(MAP_V1_SIZE)
    MAP_V1.pack_into(out, 0, INTERLEAVED_EXTENT if interleaved else SIMPLE_DAX_EXTENT, _file_type(ino),
                     ino.size, len(exts))  # fmt: skip
    for i, (_d, off, ln) in enumerate(exts[:MAX_EXTENTS]):
        struct.pack_into("<2Q", out, MAP_V1.size + i * 16, off, ln)
    return bytes(out)


def get_fmap_v2(ino: Inode) -> bytes:
    interleaved, nstrips, chunk, exts = _extents(ino)
    out = bytearray(GET_FMAP_SIZE)
    if interleaved:
        FMAP_HEAD.pack_into(out, 0, ino.size, _file_type(ino), L.EXT_INTERLEAVE, 1, 0)
        IEXT.pack_into(out, FMAP_HEAD.size, nstrips, chunk, ino.size, 0)
        base = FMAP_HEAD.size + IEXT.size
    else:
        if len(exts) > MAX_EXTENTS:
            raise FuseError(errno.EINVAL, f"{len(exts)} extents do not fit famfs_ioc_get_fmap")
        FMAP_HEAD.pack_into(out, 0, ino.size, _file_type(ino), L.EXT_SIMPLE, len(exts), 0)
        base = FMAP_HEAD.size
    for i, ext in enumerate(exts[:MAX_STRIPS]):
        SIMPLE.pack_into(out, base + i * SIMPLE.size, *ext)
    return bytes(out)


def answer(ino: Inode, body: memoryview | bytes) -> bytes:
    """The FUSE_IOCTL reply payload (fuse_ioctl_out + data) for a famfs map ioctl on ``ino``."""
    if len(body) < IOCTL_IN.size:
        raise FuseError(errno.EINVAL, "short IOCTL")
    _fh, _flags, cmd, _arg, _in_size, out_size = IOCTL_IN.unpack_from(body, 0)
    if ino.is_dir:
        raise FuseError(errno.ENOTTY)
    if cmd == FAMFSIOC_NOP:
        data = b""
    elif cmd == FAMFSIOC_MAP_GET:
        data = map_v1(ino)
    elif cmd == FAMFSIOC_MAP_GET_V2:
        data = get_fmap_v2(ino)
    else:
        raise FuseError(errno.ENOTTY)
    if len(data) > out_size:
        raise FuseError(errno.EINVAL, f"ioctl {cmd:#x}: {len(data)} bytes, the caller gave {out_size}")
    return IOCTL_OUT.pack(0, 0, 0, 0) + data
