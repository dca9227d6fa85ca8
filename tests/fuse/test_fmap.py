"""GET_FMAP / GET_DAXDEV encodings against the V10 series' uapi (patches 03, 05) and the kernel's limits."""

from __future__ import annotations

import errno
import struct

import pytest

from daxmode.fuse import fmap as F

MiB = 1 << 20


def test_simple_fmap_bytes() -> None:
    raw = F.encode_simple(5 * MiB + 1, [(0, 10 * MiB, 4 * MiB), (0, 20 * MiB, 2 * MiB)])
    assert len(raw) == 32 + 2 * 24
    # header: file_type u8 @0, reserved u8 @1, fmap_version u16 @2, ext_type u32 @4, nextents u32 @8,
    # reserved0 u32 @12, file_size u64 @16, reserved1 u64 @24
    assert raw[0] == F.FILE_REG and raw[1] == 0 and struct.unpack_from("<H", raw, 2)[0] == 1
    assert struct.unpack_from("<III", raw, 4) == (0, 2, 0)
    assert struct.unpack_from("<QQ", raw, 16) == (5 * MiB + 1, 0)
    # simple_ext: se_devindex u32 @0, reserved u32 @4, se_offset u64 @8, se_len u64 @16
    assert struct.unpack_from("<IIQQ", raw, 32) == (0, 0, 10 * MiB, 4 * MiB)
    assert struct.unpack_from("<IIQQ", raw, 56) == (0, 0, 20 * MiB, 2 * MiB)
    assert F.kernel_problems(raw) == []
    fm = F.decode(raw)
    assert F.resolve(fm, 0) == 10 * MiB and F.resolve(fm, 4 * MiB + 5) == 20 * MiB + 5


def test_smallest_valid_message_is_56_bytes() -> None:
    raw = F.encode_region(2 * MiB, 0, 2 * MiB)
    assert len(raw) == 56 and F.kernel_problems(raw) == []


def test_interleaved_fmap_bytes() -> None:
    strips = [(0, 100 * MiB, 8 * MiB), (0, 200 * MiB, 8 * MiB), (0, 300 * MiB, 8 * MiB)]
    size = 20 * MiB + 3
    raw = F.encode_interleaved(size, [F.Interleave(2 * MiB, size, strips)])
    assert len(raw) == 32 + 24 + 3 * 24
    assert (
        struct.unpack_from("<I", raw, 4)[0] == F.EXT_INTERLEAVE and struct.unpack_from("<I", raw, 8)[0] == 1
    )
    # iext: ie_nstrips u32 @0, ie_chunk_size u32 @4, ie_nbytes u64 @8, reserved u64 @16
    assert struct.unpack_from("<IIQQ", raw, 32) == (3, 2 * MiB, size, 0)
    assert struct.unpack_from("<IIQQ", raw, 56 + 48) == (0, 0, 300 * MiB, 8 * MiB)
    assert F.kernel_problems(raw) == []
    fm = F.decode(raw)
    # chunk = off / chunk; strip = chunk % n; stripe = chunk / n; dev = strip.off + stripe*chunk + off%chunk
    assert F.resolve(fm, 0) == 100 * MiB
    assert F.resolve(fm, 2 * MiB) == 200 * MiB
    assert F.resolve(fm, 7 * MiB + 9) == 100 * MiB + 2 * MiB + MiB + 9  # chunk 3: strip 0, stripe 1
    assert F.resolve(fm, 6 * MiB) == 100 * MiB + 2 * MiB


def test_extent_limits() -> None:
    exts = [(0, (i + 1) * 4 * MiB, 2 * MiB) for i in range(32)]
    raw = F.encode_simple(64 * MiB, exts)
    assert len(raw) == 32 + 32 * 24 and F.kernel_problems(raw) == []
    with pytest.raises(F.FmapError, match="33 extents"):
        F.encode_simple(64 * MiB, [*exts, (0, 200 * MiB, 2 * MiB)])
    with pytest.raises(F.FmapError, match="0 extents"):
        F.encode_simple(1, [])
    with pytest.raises(F.FmapError, match="33 strips"):
        F.encode_interleaved(2 * MiB, [F.Interleave(2 * MiB, 2 * MiB, [*exts, (0, 300 * MiB, 2 * MiB)])])


def test_4096_byte_limit() -> None:
    """4 interleaved extents of 32 strips = 32 + 4 * (24 + 768) = 3200 bytes fit; 5 = 3992 fit; 6 do not."""

    def ie(k: int) -> F.Interleave:
        return F.Interleave(2 * MiB, 64 * MiB, [(0, (k * 32 + j + 1) * 2 * MiB, 2 * MiB) for j in range(32)])

    raw = F.encode_interleaved(5 * 64 * MiB, [ie(k) for k in range(5)])
    assert len(raw) == 32 + 5 * (24 + 32 * 24) == 3992 and F.kernel_problems(raw) == []
    with pytest.raises(F.FmapError, match="exceeds the kernel's 4096-byte") as e:
        F.encode_interleaved(6 * 64 * MiB, [ie(k) for k in range(6)])
    assert e.value.errno == errno.E2BIG
    assert "do not fit" in F.kernel_problems(bytes(4097))[0]


def test_kernel_rules_refused() -> None:
    with pytest.raises(F.FmapError, match="device index 1"):
        F.encode_simple(2 * MiB, [(1, 2 * MiB, 2 * MiB)])
    with pytest.raises(F.FmapError, match="not 2 MiB aligned"):
        F.encode_simple(4096, [(0, 2 * MiB + 4096, 2 * MiB)])
    with pytest.raises(F.FmapError, match="not 2 MiB aligned"):
        F.encode_simple(4096, [(0, 2 * MiB, 4096)])
    with pytest.raises(F.FmapError, match="exceeds its"):
        F.encode_simple(2 * MiB + 1, [(0, 2 * MiB, 2 * MiB)])
    with pytest.raises(F.FmapError, match="chunk size"):
        F.encode_interleaved(2 * MiB, [F.Interleave(MiB, 2 * MiB, [(0, 2 * MiB, 2 * MiB)])])
    with pytest.raises(F.FmapError, match="below 4 GiB"):  # ie_chunk_size is a u32
        F.encode_interleaved(2 * MiB, [F.Interleave(4 << 30, 2 * MiB, [(0, 4 << 30, 4 << 30)])])
    with pytest.raises(F.FmapError, match="strips hold"):
        F.encode_interleaved(6 * MiB, [F.Interleave(2 * MiB, 6 * MiB, [(0, 2 * MiB, 2 * MiB)])])
    # the independent kernel-side check catches hand-made bad maps
    bad = bytearray(F.encode_region(2 * MiB, 0, 2 * MiB))
    struct.pack_into("<I", bad, 32, 3)  # devindex
    assert F.kernel_problems(bytes(bad)) == ["devindex 3 != 0"]
    struct.pack_into("<I", bad, 4, 9)  # ext_type
    assert "unknown ext_type" in F.kernel_problems(bytes(bad))[0]
    assert "ends at" in F.kernel_problems(F.encode_region(2 * MiB, 0, 2 * MiB)[:50])[0]


def test_daxdev_reply_is_280_bytes() -> None:
    raw = F.pack_daxdev_out(0, "/dev/dax0.0")
    assert len(raw) == 280 == F.DAXDEV_OUT_SIZE
    assert struct.unpack_from("<HHIQQ", raw, 0) == (0, 0, 0, 0, 0)
    assert raw[24:35] == b"/dev/dax0.0" and raw[35] == 0 and raw[24:].rstrip(b"\0") == b"/dev/dax0.0"
    assert F.unpack_daxdev_out(raw) == (0, "/dev/dax0.0")
    with pytest.raises(F.FmapError):
        F.pack_daxdev_out(0, "x" * 256)
    with pytest.raises(F.FmapError, match="exactly 280"):
        F.unpack_daxdev_out(raw[:279])
