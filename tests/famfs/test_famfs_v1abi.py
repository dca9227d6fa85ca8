"""The famfs-v1 ioctl codec (daxmode/famfs/mount/v1abi.py): numbers, layout, and which log maps
the v1 ABI can carry.  The kernel side is `make famfs-v1-kernel-test` (qemu/famfs_v1_probe.py)."""

from __future__ import annotations

import struct
import uuid

import pytest

from daxmode.famfs.media import layout as L
from daxmode.famfs.mount import v1abi as A

MiB = 1 << 20


def _file(extents, size, *, chunk=0, nstrips=0):  # type: ignore[no-untyped-def]
    ext_type = L.EXT_INTERLEAVE if chunk else L.EXT_SIMPLE
    return L.FileMeta(
        7, "d/f", size, L.FM_ALL_HOSTS_RW, 0, 0, 0o644, ext_type, tuple(extents), nstrips, chunk
    )


def test_ioctl_numbers_are_the_headers() -> None:
    # _IOW('u', 0x50, 56-byte struct), _IOR('u', 0x51, ...), _IOR('u', 0x52, 16-byte extent), _IO('u', 0x53)
    assert A.MAP.size == 56 and A.EXTENT.size == 16
    assert (A.MAP_CREATE, A.MAP_GET, A.MAP_GETEXT, A.NOP) == (0x40387550, 0x80387551, 0x80107552, 0x7553)


def test_pack_map_layout() -> None:
    raw = A.pack_map(A.V1Map(A.FILE_LOG, 8 * MiB, ((2 * MiB, 8 * MiB),)))
    assert len(raw) == 56
    assert struct.unpack("<IIQQ4Q", raw) == (0, 2, 8 * MiB, 1, 2 * MiB, 8 * MiB, 0, 0)
    assert A.unpack_map_header(raw) == (0, 8 * MiB, 1)
    with pytest.raises(ValueError):
        A.pack_map(A.V1Map(A.FILE_REG, 1, ((2 * MiB, 2 * MiB),) * 3))


def test_extents_round_trip() -> None:
    buf = A.getext_buffer(2)
    struct.pack_into("<4Q", buf, 0, 4 * MiB, 2 * MiB, 10 * MiB, 6 * MiB)
    assert A.unpack_extents(buf, 2) == ((4 * MiB, 2 * MiB), (10 * MiB, 6 * MiB))


@pytest.mark.parametrize(
    ("m", "why"),
    [
        (A.V1Map(A.FILE_REG, 1, ()), "0 extents"),
        (A.V1Map(A.FILE_REG, 1, ((0, 2 * MiB),)), "offset 0"),
        (A.V1Map(A.FILE_REG, 1, ((3 * MiB, 2 * MiB),)), "not 2 MiB aligned"),
        (A.V1Map(A.FILE_REG, 1, ((2 * MiB, MiB), (8 * MiB, 2 * MiB))), "length 0x100000 is not 2 MiB"),
        (A.V1Map(A.FILE_REG, 5 * MiB, ((2 * MiB, 2 * MiB), (8 * MiB, 2 * MiB))), "exceeds"),
    ],
)
def test_map_problems_mirror_the_kernels_refusals(m: A.V1Map, why: str) -> None:
    assert any(why in p for p in A.map_problems(m))


def test_superblock_may_start_at_zero_and_last_length_may_be_short() -> None:
    sb = A.V1Map(A.FILE_SUPERBLOCK, 2 * MiB, ((0, 2 * MiB),))
    assert A.map_problems(sb) == []
    assert A.map_problems(A.V1Map(A.FILE_REG, 5000, ((2 * MiB, 2 * MiB), (8 * MiB, 4096)))) == []


def test_simple_file_with_adjacent_extents_is_merged() -> None:
    meta = _file([(0, 16 * MiB, 2 * MiB), (0, 18 * MiB, 2 * MiB), (0, 40 * MiB, 2 * MiB)], 5 * MiB)
    assert A.plan_file(meta) == A.V1Map(A.FILE_REG, 5 * MiB, ((16 * MiB, 4 * MiB), (40 * MiB, 2 * MiB)))


def test_simple_file_with_three_separate_extents_is_refused() -> None:
    meta = _file([(0, 16 * MiB, 2 * MiB), (0, 20 * MiB, 2 * MiB), (0, 40 * MiB, 2 * MiB)], 5 * MiB)
    why = A.plan_file(meta)
    assert isinstance(why, str) and "3 extents" in why and "at most 2" in why


def test_second_device_is_refused() -> None:
    why = A.plan_file(_file([(1, 16 * MiB, 2 * MiB)], MiB))
    assert isinstance(why, str) and "device 0" in why


def test_interleaved_file_within_two_chunks_unrolls() -> None:
    # two strips, 2 MiB chunks: bytes 0..2M on strip 0, 2M..3M on strip 1
    meta = _file([(0, 32 * MiB, 4 * MiB), (0, 64 * MiB, 4 * MiB)], 3 * MiB, chunk=2 * MiB, nstrips=2)
    assert A.plan_file(meta) == A.V1Map(A.FILE_REG, 3 * MiB, ((32 * MiB, 2 * MiB), (64 * MiB, MiB)))


def test_interleaved_file_over_more_chunks_is_refused() -> None:
    meta = _file([(0, 32 * MiB, 4 * MiB), (0, 64 * MiB, 4 * MiB)], 7 * MiB, chunk=2 * MiB, nstrips=2)
    why = A.plan_file(meta)
    assert isinstance(why, str) and why.startswith(
        "interleaved (2 strips, chunk 0x200000) file needs 4 extents"
    )


def test_unaligned_extent_is_refused_before_any_ioctl() -> None:
    why = A.plan_file(_file([(0, 17 * MiB, 2 * MiB)], MiB))
    assert isinstance(why, str) and "not 2 MiB aligned" in why


def test_meta_maps() -> None:
    sb = L.new_superblock(dd_size=8 << 30, daxdev="/dev/dax0.0", system_uuid=uuid.uuid4())
    maps = A.meta_maps(sb)
    assert maps[".superblock"] == A.V1Map(A.FILE_SUPERBLOCK, 2 * MiB, ((0, 2 * MiB),))
    assert maps[".log"] == A.V1Map(A.FILE_LOG, sb.log_len, ((2 * MiB, sb.log_len),))
    assert all(A.map_problems(m) == [] for m in maps.values())
