"""The on-media format, checked field by field against famfs's offsets (famfs 5d0919f src/famfs_meta.h)."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest

from daxmode.errors import InvalidArgument
from daxmode.famfs.media import layout as L

U1 = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
U2 = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
U3 = uuid.UUID("deadbeef-0000-4000-8000-123456789abc")


def q(buf: bytes, off: int) -> int:
    return struct.unpack_from("<Q", buf, off)[0]


def u32(buf: bytes, off: int) -> int:
    return struct.unpack_from("<I", buf, off)[0]


def sb_bytes(version: int = 48) -> bytes:
    sb = L.new_superblock(
        dd_size=8 << 30,
        daxdev="/dev/dax0.0",
        system_uuid=U3,
        version=version,
        fs_uuid=U1,
        dev_uuid=U2,
    )
    return L.pack_superblock(sb)


@pytest.mark.parametrize("version,minor", [(48, 2), (47, 1)])
def test_superblock_every_field_at_its_offset(version: int, minor: int) -> None:
    raw = sb_bytes(version)
    assert len(raw) == 200
    assert q(raw, 0) == 0x87B282FF
    assert q(raw, 8) == version
    assert q(raw, 16) == 0x200000
    assert q(raw, 24) == 0x800000
    assert q(raw, 32) == 0x200000
    assert u32(raw, 40) == 2 and u32(raw, 44) == minor
    # UUIDs in RFC byte order (uuid_t raw bytes), not bytes_le
    assert raw[48:64] == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert raw[64:80] == U2.bytes and raw[80:96] == U3.bytes
    assert q(raw, 96) == zlib.crc32(raw[:96])
    assert u32(raw, 104) == 0 and raw[108:112] == b"\0" * 4  # sb_flags never written, pad zero
    assert q(raw, 112) == 8 << 30
    assert raw[120:136] == b"\0" * 16
    assert raw[136:200] == b"/dev/dax0.0".ljust(64, b"\0")


def test_superblock_round_trip_and_crc_coverage() -> None:
    raw = bytearray(sb_bytes())
    sb = L.unpack_superblock(raw)
    assert (sb.uuid, sb.dev_uuid, sb.system_uuid, sb.daxdev) == (U1, U2, U3, "/dev/dax0.0")
    assert L.pack_superblock(sb) == bytes(raw)
    assert L.superblock_problems(raw) == []
    # dd_size and sb_flags are outside the CRC (famfs accepts a changed dd_size)
    struct.pack_into("<Q", raw, 112, 4 << 30)
    struct.pack_into("<I", raw, 104, 1)
    assert L.superblock_problems(raw) == []
    # every byte in 0..95 is inside it
    for off in (0x9, 17, 41, 50, 70, 95):
        bad = bytearray(raw)
        bad[off] ^= 0x01
        assert any("crc" in p.lower() or "ts_" in p for p in L.superblock_problems(bad)), off


def test_superblock_crc_mismatch_named() -> None:
    raw = bytearray(sb_bytes())
    struct.pack_into("<Q", raw, 96, 12345)
    (p,) = L.superblock_problems(raw)
    assert "ts_crc" in p and "mismatch" in p


@pytest.mark.parametrize("version", [0, 46, 49, 2**63])
def test_wrong_version_rejected_naming_the_field(version: int) -> None:
    raw = bytearray(sb_bytes())
    struct.pack_into("<Q", raw, 8, version)
    struct.pack_into("<Q", raw, 96, zlib.crc32(raw[:96]))
    probs = L.superblock_problems(raw)
    assert probs == [f"superblock field ts_version={version}: only famfs versions 47 and 48 are supported"]
    with pytest.raises(L.FormatError, match="ts_version=49"):
        L.new_superblock(dd_size=1 << 33, daxdev="x", system_uuid=U1, version=49)


def test_superblock_other_field_checks() -> None:
    raw = bytearray(sb_bytes())
    struct.pack_into("<I", raw, 40, 1)  # omf major
    struct.pack_into("<Q", raw, 32, 8192)  # alloc unit
    struct.pack_into("<Q", raw, 96, zlib.crc32(raw[:96]))
    probs = L.superblock_problems(raw, device_size=4 << 30)
    text = "\n".join(probs)
    assert "ts_omf_ver_major=1" in text and "ts_alloc_unit=8192" in text
    assert "dd_size=8589934592: larger than the device" in text
    assert L.superblock_problems(b"\0" * 100) == ["superblock: only 100 bytes available, need 200"]
    assert "ts_magic=0x0" in L.superblock_problems(b"\0" * 200)[0]


@pytest.mark.parametrize("log_len,last", [(8 << 20, 15419), (16 << 20, 30839), (256 << 20, 493446)])
def test_log_header_fields_and_last_index(log_len: int, last: int) -> None:
    h = L.pack_log_header(log_len, 7)
    assert len(h) == 48
    assert q(h, 0) == 0xBADCAFEF00D and q(h, 8) == log_len and q(h, 16) == last
    assert q(h, 24) == zlib.crc32(h[:24])
    assert q(h, 32) == 7 and q(h, 40) == 7
    assert L.log_capacity(log_len) == last + 1
    assert L.log_header_problems(h, log_len) == []
    # counters are outside the CRC
    hb = bytearray(h)
    struct.pack_into("<Q", hb, 32, 9)
    assert L.log_header_problems(hb, log_len) == [
        "log header fields famfs_log_next_index=7 and next_seqnum=9 differ"
    ]


def test_log_header_problems_named() -> None:
    hb = bytearray(L.pack_log_header(8 << 20))
    struct.pack_into("<Q", hb, 16, 25574)  # an old 328-byte-entry layout
    text = "\n".join(L.log_header_problems(hb, 8 << 20))
    assert "famfs_log_crc" in text and "famfs_log_last_index=25574" in text
    assert "famfs_log_len" in L.log_header_problems(L.pack_log_header(16 << 20), 8 << 20)[0]
    assert "famfs_log_magic" in L.log_header_problems(bytes(48), 8 << 20)[0]


def test_file_entry_every_field() -> None:
    exts = [(0, 0xA00000, 0x400000), (0, 0x4000000, 0x200000)]
    e = L.pack_file_entry(5, "dir/file", 5000000, exts, mode=0o640, uid=1000, gid=100)
    assert len(e) == 544
    assert q(e, 0) == 5 and u32(e, 8) == 0 and e[12:16] == b"\0" * 4
    assert q(e, 16) == 5000000
    assert u32(e, 24) == 2  # FAMFS_FM_ALL_HOSTS_RW
    assert (u32(e, 28), u32(e, 32), u32(e, 36)) == (1000, 100, 0o640)
    assert e[40:120] == b"dir/file".ljust(80, b"\0")
    assert u32(e, 120) == 0 and u32(e, 128) == 2
    assert [struct.unpack_from("<3Q", e, 136 + 24 * i) for i in range(2)] == exts
    assert e[136 + 48 : 536] == b"\0" * (536 - 184)  # unused extents zero-filled
    assert q(e, 536) == zlib.crc32(e[:536])
    m = L.decode_entry(e, 0, 5)
    assert isinstance(m, L.FileMeta)
    assert (m.path, m.size, m.mode, m.uid, m.gid, m.flags, m.extents) == (
        "dir/file",
        5000000,
        0o640,
        1000,
        100,
        2,
        tuple(exts),
    )


def test_interleaved_entry_every_field() -> None:
    strips = [(0, (i + 1) << 30, 8 << 20) for i in range(3)]
    e = L.pack_interleaved_entry(0, "big", 20 << 20, 2 << 20, strips)
    assert u32(e, 120) == 1 and u32(e, 128) == 1
    assert q(e, 136) == 3 and q(e, 144) == 2 << 20
    assert [struct.unpack_from("<3Q", e, 152 + 24 * i) for i in range(3)] == strips
    m = L.decode_entry(e, 0, 0)
    assert isinstance(m, L.FileMeta) and m.interleaved
    assert (m.nstrips, m.chunk_size, m.extents) == (3, 2 << 20, tuple(strips))


def test_mkdir_and_add_daxdev_entries() -> None:
    e = L.pack_mkdir_entry(3, "a/b", mode=0o1777, uid=7, gid=8)
    assert u32(e, 8) == 1 and (u32(e, 16), u32(e, 20), u32(e, 24)) == (7, 8, 0o1777)
    assert e[28:108] == b"a/b".ljust(80, b"\0") and e[108:536] == b"\0" * 428
    d = L.decode_entry(e, 0, 3)
    assert isinstance(d, L.DirMeta) and (d.path, d.mode) == ("a/b", 0o1777)
    e = L.pack_add_daxdev_entry(4, 1 << 34, U1, 1)
    assert u32(e, 8) == 3 and q(e, 16) == 1 << 34 and e[24:40] == U1.bytes and u32(e, 40) == 1
    dd = L.decode_entry(e, 0, 4)
    assert isinstance(dd, L.DaxdevMeta) and (dd.dd_size, dd.dd_uuid, dd.dd_index) == (1 << 34, U1, 1)


def test_relpath_limits_79_ok_80_refused() -> None:
    p79 = "d/" + "x" * 77
    e = L.pack_mkdir_entry(0, p79)
    assert e[28 + 79] == 0 and L.decode_entry(e, 0, 0).path == p79  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="80 bytes; famfs allows at most 79"):
        L.pack_mkdir_entry(0, "y" * 80)
    # multibyte UTF-8 counts bytes, not characters
    with pytest.raises(InvalidArgument, match="80 bytes"):
        L.encode_relpath("é" * 40)
    for bad in ("/abs", "a//b", "a/./b", "../x", ""):
        with pytest.raises(InvalidArgument):
            L.encode_relpath(bad)


def test_unterminated_path_is_flagged_not_played() -> None:
    e = bytearray(L.pack_mkdir_entry(0, "ok"))
    e[28:108] = b"z" * 80
    struct.pack_into("<Q", e, 536, zlib.crc32(e[:536]))
    d = L.decode_entry(e, 0, 0)
    assert isinstance(d, L.DirMeta) and not d.path_ok


def test_structurally_bad_entries_raise_format_error() -> None:
    e = bytearray(L.pack_file_entry(0, "f", 1, [(0, 1 << 22, 1 << 21)]))
    struct.pack_into("<I", e, 128, 17)
    with pytest.raises(L.FormatError, match="fmap_nextents=17"):
        L.decode_entry(e, 0, 0)
    struct.pack_into("<I", e, 120, 9)
    with pytest.raises(L.FormatError, match="fmap_ext_type=9"):
        L.decode_entry(e, 0, 0)
    struct.pack_into("<I", e, 8, 4)
    with pytest.raises(L.FormatError, match="famfs_log_entry_type=4"):
        L.decode_entry(e, 0, 0)


def test_mode_bits_limited() -> None:
    with pytest.raises(L.FormatError, match="permission bits"):
        L.pack_file_entry(0, "f", 1, [(0, 1 << 22, 1 << 21)], mode=0o100644)


def test_interleave_math_matches_kernel_formula() -> None:
    mib = 1 << 20
    offs = [100 * mib, 200 * mib, 300 * mib, 400 * mib, 500 * mib]
    # famfs_ioctl.h's example: 2 MiB chunks, 5 strips: 15 MiB is chunk 7 -> strip 2? chunk=7, strip=7%5=2
    # its comment's "strip 4" is a typo; with 4 strips 15 MiB -> chunk 7 -> strip 3 (7 % 4, as asserted)
    assert L.interleave_offset(15 * mib, 4, 2 * mib, offs[:4]) == offs[3] + 1 * 2 * mib + 1 * mib
    assert L.interleave_offset(15 * mib, 5, 2 * mib, offs) == offs[2] + 1 * 2 * mib + 1 * mib
    assert L.interleave_offset(0, 5, 2 * mib, offs) == offs[0]
    assert L.interleave_offset(2 * mib - 1, 5, 2 * mib, offs) == offs[0] + 2 * mib - 1
    assert L.interleave_offset(10 * mib, 5, 2 * mib, offs) == offs[0] + 2 * mib


def test_file_segments_simple_and_interleaved() -> None:
    mib = 1 << 20
    f = L.FileMeta(
        0, "f", 5 * mib, 2, 0, 0, 0o644, L.EXT_SIMPLE, ((0, 10 * mib, 2 * mib), (0, 50 * mib, 4 * mib))
    )
    assert L.file_segments(f) == [(10 * mib, 2 * mib), (50 * mib, 3 * mib)]
    assert L.file_segments(f, mib, 2 * mib) == [(11 * mib, mib), (50 * mib, mib)]
    assert L.file_segments(f, 6 * mib) == []
    strips = ((0, 100 * mib, 4 * mib), (0, 200 * mib, 4 * mib))
    g = L.FileMeta(1, "g", 7 * mib, 2, 0, 0, 0o644, L.EXT_INTERLEAVE, strips, 2, 2 * mib)
    segs = L.file_segments(g)
    assert segs == [(100 * mib, 2 * mib), (200 * mib, 2 * mib), (102 * mib, 2 * mib), (202 * mib, mib)]
    assert sum(n for _, n in segs) == 7 * mib
