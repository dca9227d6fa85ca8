"""The FUSE codec, message by message, against the offsets of include/uapi/linux/fuse.h (protocol 7.45).

Each test builds the bytes independently (explicit offsets) and checks the codec reads or writes
exactly those, so a wrong struct format cannot pass by agreeing with itself.
"""

from __future__ import annotations

import errno
import struct

import pytest

from daxmode.fuse import proto as P


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


def test_opcode_numbers() -> None:
    assert (P.LOOKUP, P.FORGET, P.GETATTR, P.SETATTR, P.OPEN, P.READ, P.WRITE, P.STATFS) == (
        1,
        2,
        3,
        4,
        14,
        15,
        16,
        17,
    )
    assert (P.RELEASE, P.FSYNC, P.GETXATTR, P.LISTXATTR, P.FLUSH, P.INIT) == (18, 20, 22, 23, 25, 26)
    assert (P.OPENDIR, P.READDIR, P.RELEASEDIR, P.ACCESS, P.CREATE, P.INTERRUPT, P.DESTROY) == (
        27,
        28,
        29,
        34,
        35,
        36,
        38,
    )
    assert (P.BATCH_FORGET, P.FALLOCATE, P.READDIRPLUS, P.RENAME2) == (42, 43, 44, 45)
    assert (P.GET_FMAP, P.GET_DAXDEV) == (54, 55)  # famfs V10 (53 is mainline COPY_FILE_RANGE_64)
    assert P.OPCODE_NAMES[54] == "GET_FMAP" and P.OPCODE_NAMES[1] == "LOOKUP" and P.OPCODE_NAMES[26] == "INIT"
    assert {2, 42, 36} == P.NO_REPLY


def test_init_flag_bits() -> None:
    assert P.ASYNC_READ == 1 and P.ATOMIC_O_TRUNC == 8 and P.BIG_WRITES == 32 and P.ASYNC_DIO == 1 << 15
    assert P.PARALLEL_DIROPS == 1 << 18 and P.MAX_PAGES == 1 << 22 and P.INIT_EXT == 1 << 30
    assert P.DIRECT_IO_ALLOW_MMAP == 1 << 36 and P.DAX_FMAP == 1 << 43 and P.REQUEST_TIMEOUT == 1 << 42


def test_in_header() -> None:
    raw = struct.pack("<IIQQIIIHH", 56, 1, 0x1122334455667788, 9, 1000, 100, 4242, 0, 0) + b"x" * 16
    h = P.parse_in_header(raw)
    assert h == P.InHeader(56, 1, 0x1122334455667788, 9, 1000, 100, 4242, 0)
    assert P.pack_in_header(1, 0x1122334455667788, 9, 16, 1000, 100, 4242) == raw[:40]
    with pytest.raises(P.ProtocolError, match="read returned 50"):
        P.parse_in_header(raw, 50)
    with pytest.raises(P.ProtocolError, match="shorter"):
        P.parse_in_header(raw[:39])


def test_out_header_and_errors() -> None:
    r = P.reply(7, b"abcd")
    assert len(r) == 20 and u32(r, 0) == 20 and struct.unpack_from("<i", r, 4)[0] == 0 and u64(r, 8) == 7
    e = P.reply_error(9, errno.ENOENT)
    assert e == struct.pack("<IiQ", 16, -errno.ENOENT, 9)
    assert P.parse_out_header(e) == (16, -2, 9)
    assert P.reply_header(5, 4096) == struct.pack("<IiQ", 4112, 0, 5)
    with pytest.raises(ValueError):
        P.reply_error(1, 0)


def test_init_in_and_out() -> None:
    body = struct.pack(
        "<IIIII", 7, 45, 131072, P.INIT_EXT | P.ASYNC_READ, (P.DAX_FMAP | P.DIRECT_IO_ALLOW_MMAP) >> 32
    )
    body += bytes(44)
    i = P.parse_init_in(body)
    assert (i.major, i.minor, i.max_readahead) == (7, 45, 131072)
    assert i.flags == P.INIT_EXT | P.ASYNC_READ | P.DAX_FMAP | P.DIRECT_IO_ALLOW_MMAP
    assert P.pack_init_in(45, 131072, i.flags) == body
    # flags2 means nothing without INIT_EXT (old kernels send garbage or nothing there)
    assert P.parse_init_in(struct.pack("<IIIII", 7, 45, 0, 1, 0xFFFF)).flags == 1
    assert P.parse_init_in(struct.pack("<IIII", 7, 31, 0, 1)).flags == 1  # pre-7.36 short body
    out = P.InitOut(7, 45, 131072, P.INIT_EXT | P.MAX_PAGES | P.DAX_FMAP, 32, 24, 1 << 20, 1, 256)
    r = P.pack_init_out(3, out)
    assert len(r) == 16 + 64
    b = r[16:]
    assert (u32(b, 0), u32(b, 4), u32(b, 8)) == (7, 45, 131072)
    assert u32(b, 12) == P.INIT_EXT | P.MAX_PAGES and u32(b, 32) == P.DAX_FMAP >> 32  # flags2 @32
    assert struct.unpack_from("<HH", b, 16) == (32, 24) and u32(b, 20) == 1 << 20 and u32(b, 24) == 1
    assert struct.unpack_from("<H", b, 28)[0] == 256
    assert P.parse_init_out(b) == out


def test_attr_entry_attr_out() -> None:
    a = P.Attr(ino=17, size=3 << 20, blocks=8192, mode=0o100644, nlink=1, uid=1000, gid=100, time=1700000000,
               time_ns=5, blksize=2 << 20)  # fmt: skip
    raw = P.pack_attr(a)
    assert len(raw) == 88
    assert (u64(raw, 0), u64(raw, 8), u64(raw, 16)) == (17, 3 << 20, 8192)
    assert u64(raw, 24) == u64(raw, 32) == u64(raw, 40) == 1700000000
    assert u32(raw, 48) == u32(raw, 52) == u32(raw, 56) == 5
    assert (u32(raw, 60), u32(raw, 64), u32(raw, 68), u32(raw, 72)) == (0o100644, 1, 1000, 100)
    assert u32(raw, 80) == 2 << 20
    assert P.unpack_attr(raw) == a
    e = P.pack_entry_out(17, a, 86400.0, 1.5)
    assert len(e) == 128 and u64(e, 0) == 17 and u64(e, 16) == 86400 and u64(e, 24) == 1
    assert u32(e, 36) == 500_000_000 and e[40:] == raw
    ao = P.pack_attr_out(a, 2.25)
    assert len(ao) == 104 and u64(ao, 0) == 2 and u32(ao, 8) == 250_000_000 and ao[16:] == raw


def test_open_read_write_release_flush() -> None:
    assert P.parse_open_in(struct.pack("<II", 0o101, 0)) == P.OpenIn(0o101, 0)
    o = P.pack_open_out(99, P.FOPEN_DIRECT_IO | P.FOPEN_PARALLEL_DIRECT_WRITES)
    assert o == struct.pack("<QIi", 99, 0x41, 0)
    rin = struct.pack("<QQIIQII", 5, 1 << 30, 1 << 20, 0, 0, 0o2, 0)
    assert P.parse_read_in(rin) == P.ReadIn(5, 1 << 30, 1 << 20, 0)
    assert P.pack_read_in(5, 1 << 30, 1 << 20) == struct.pack("<QQIIQII", 5, 1 << 30, 1 << 20, 0, 0, 0, 0)
    win = struct.pack("<QQIIQII", 5, 4096, 3, P.WRITE_CACHE, 0, 0, 0) + b"abc"
    w = P.parse_write_in(memoryview(win))
    assert (w.fh, w.offset, w.size, w.write_flags, bytes(w.data)) == (5, 4096, 3, 1, b"abc")
    with pytest.raises(P.ProtocolError, match="carries 2"):
        P.parse_write_in(memoryview(win[:-1]))
    assert P.pack_write_out(3) == struct.pack("<II", 3, 0)
    assert P.parse_release_in(struct.pack("<QIIQ", 5, 2, 1, 77)) == P.ReleaseIn(5, 2, 1)
    assert P.parse_flush_in(struct.pack("<QIIQ", 6, 0, 0, 77)) == 6
    assert P.parse_getattr_in(struct.pack("<IIQ", 1, 0, 12)) == (1, 12)
    assert P.parse_getattr_in(b"") == (0, 0)


def test_setattr_in() -> None:
    raw = bytearray(88)
    struct.pack_into("<I", raw, 0, P.FATTR_SIZE | P.FATTR_MODE | P.FATTR_UID | P.FATTR_GID)
    struct.pack_into("<Q", raw, 8, 3)  # fh
    struct.pack_into("<Q", raw, 16, 4096)  # size
    struct.pack_into("<Q", raw, 32, 11)  # atime
    struct.pack_into("<Q", raw, 40, 12)  # mtime
    struct.pack_into("<I", raw, 68, 0o600)  # mode
    struct.pack_into("<I", raw, 76, 1000)  # uid
    struct.pack_into("<I", raw, 80, 100)  # gid
    s = P.parse_setattr_in(bytes(raw))
    assert s == P.SetattrIn(0xF, 3, 4096, 11, 12, 0o600, 1000, 100)
    back = P.parse_setattr_in(P.pack_setattr_in(P.FATTR_SIZE, size=9, mode=0o7, uid=1, gid=2))
    assert (back.valid, back.size, back.mode, back.uid, back.gid) == (P.FATTR_SIZE, 9, 7, 1, 2)


def test_forget_interrupt_statfs_xattr_access_create() -> None:
    assert P.parse_forget(struct.pack("<Q", 3)) == 3
    bf = struct.pack("<II", 2, 0) + struct.pack("<QQ", 10, 1) + struct.pack("<QQ", 11, 5)
    assert P.parse_batch_forget(bf) == [(10, 1), (11, 5)]
    with pytest.raises(P.ProtocolError):
        P.parse_batch_forget(bf[:-1])
    assert P.parse_interrupt(struct.pack("<Q", 42)) == 42
    st = P.pack_statfs_out(P.Statfs(100, 90, 80, 15420, 15000, 2 << 20, 79, 2 << 20))
    assert len(st) == 80
    assert [u64(st, i) for i in (0, 8, 16, 24, 32)] == [100, 90, 80, 15420, 15000]
    assert (u32(st, 40), u32(st, 44), u32(st, 48)) == (2 << 20, 79, 2 << 20)
    assert P.parse_getxattr_in(struct.pack("<II", 64, 0) + b"user.x\0") == (64, b"user.x")
    assert P.pack_getxattr_size(17) == struct.pack("<II", 17, 0)
    assert P.parse_access_in(struct.pack("<II", 4, 0)) == 4
    assert P.parse_create_in(struct.pack("<IIII", 0o101, 0o644, 0o22, 0) + b"new\0") == (0o101, 0o644, b"new")
    assert P.name_arg(b"abc\0junk") == b"abc"
    with pytest.raises(P.ProtocolError):
        P.name_arg(b"abc")


def test_dirents_are_8_byte_aligned() -> None:
    d = P.pack_dirent(17, 3, b"hello", P.DT_REG)
    assert len(d) == 32 and P.dirent_size(b"hello") == 32  # 24 + 5 -> 32
    assert (u64(d, 0), u64(d, 8), u32(d, 16), u32(d, 20)) == (17, 3, 5, 8) and d[24:29] == b"hello"
    assert d[29:] == b"\0\0\0"
    d8 = P.pack_dirent(1, 1, b"12345678", P.DT_DIR)
    assert len(d8) == 32 and P.dirent_size(b"12345678", plus=True) == 160
    assert P.unpack_dirents(d + d8) == [(17, 3, b"hello", 8), (1, 1, b"12345678", 4)]


def test_mount_options_and_fstype() -> None:
    from daxmode.fuse import kernel as K

    assert (
        K.mount_options(5, 0o40755)
        == "fd=5,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"
    )
    assert K.mount_options(
        7, 0o40700, 1000, 100, allow_other=False, default_permissions=False, max_read=65536
    ) == ("fd=7,rootmode=40000,user_id=1000,group_id=100,max_read=65536")
    assert K.fstype("famfs") == "fuse.famfs" and K.fstype("") == "fuse"
