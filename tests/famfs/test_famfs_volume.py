"""mkfs, log appends, play, allocation and fsck on image files."""

from __future__ import annotations

import random
import struct
import uuid
import zlib

import pytest

from daxmode.errors import FamfsError, InvalidArgument
from daxmode.famfs import LogFull, NotMaster, Volume, fsck, mkfs
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.alloc import Allocator, Bitmap, NoSpace, build_bitmap
from daxmode.famfs.media.log import scan_log
from daxmode.fsdev import Mapping

MiB = 1 << 20
GiB = 1 << 30
HDR = L.LOG_OFFSET
ENT0 = L.LOG_OFFSET + L.LOG_HDR_SIZE


def entry_off(i: int) -> int:
    return ENT0 + i * L.ENTRY_SIZE


def put_entry(medium: Mapping, i: int, entry: bytes, *, count: bool = True) -> None:
    """Write a raw entry the way a (possibly foreign) writer would."""
    medium.buf[entry_off(i) : entry_off(i) + L.ENTRY_SIZE] = entry
    if count:
        struct.pack_into("<2Q", medium.buf, HDR + 32, i + 1, i + 1)


def test_mkfs_layout(medium: Mapping, me: uuid.UUID) -> None:
    medium.buf[HDR + 5000] = 0xAA  # garbage in the log region must be zeroed
    res = mkfs(medium, me)
    assert res.warnings and "4 GiB" in res.warnings[0]
    b = medium.buf
    sb = L.unpack_superblock(b[:200])
    assert (sb.version, sb.system_uuid, sb.dd_size, sb.log_len) == (48, me, GiB, 8 * MiB)
    assert L.superblock_problems(b[:200], GiB) == []
    assert b[HDR : HDR + 48] == L.pack_log_header(8 * MiB)
    assert b[HDR + 48 : HDR + 8 * MiB].count(0) == 8 * MiB - 48
    assert fsck(b).ok


def test_mkfs_refuses_existing_and_other_hosts(medium: Mapping, me: uuid.UUID) -> None:
    mkfs(medium, me)
    with pytest.raises(FamfsError, match="owned by this host; use --force"):
        mkfs(medium, me)
    other = uuid.uuid4()
    with pytest.raises(FamfsError, match=f"another host \\(system UUID {me}\\)"):
        mkfs(medium, other)
    old = L.unpack_superblock(medium.buf[:200]).uuid
    mkfs(medium, other, force=True, version=47)
    sb = L.unpack_superblock(medium.buf[:200])
    assert sb.uuid != old and sb.system_uuid == other and sb.version == 47 and sb.omf_minor == 1


def test_mkfs_kill_and_bad_args(medium: Mapping, me: uuid.UUID) -> None:
    mkfs(medium, me)
    with pytest.raises(InvalidArgument, match="--kill needs --force"):
        mkfs(medium, me, kill=True)
    r = mkfs(medium, me, force=True, kill=True)
    assert r.killed and struct.unpack_from("<Q", medium.buf, 0)[0] == 0
    assert "ts_magic=0x0" in fsck(medium.buf).problems[0]
    with pytest.raises(InvalidArgument, match="power of 2"):
        mkfs(medium, me, log_len=12 * MiB)
    with pytest.raises(L.FormatError, match="ts_version=46"):
        mkfs(medium, me, version=46)


def test_append_writes_entry_then_counters(vol: Volume, medium: Mapping) -> None:
    vol.mkdir("d")
    f, created = vol.creat("d/f", 3 * MiB + 1, mode=0o600, uid=5, gid=6)
    assert created and f.extents == ((0, 10 * MiB, 4 * MiB),)  # first unit after sb+log
    raw = bytes(medium.buf[entry_off(1) : entry_off(2)])
    assert raw == L.pack_file_entry(1, "d/f", 3 * MiB + 1, list(f.extents), mode=0o600, uid=5, gid=6)
    assert struct.unpack_from("<2Q", medium.buf, HDR + 32) == (2, 2)
    # header CRC untouched by appends (it covers only magic/len/last_index)
    assert L.log_header_problems(medium.buf[HDR : HDR + 48], 8 * MiB) == []


def test_roundtrip_replay_is_idempotent(vol: Volume, medium: Mapping, me: uuid.UUID) -> None:
    vol.mkdir("a/b/c", parents=True, mode=0o750)
    data = random.Random(1).randbytes(5 * MiB + 123)
    f, _ = vol.creat("a/b/c/data", len(data))
    assert vol.write(f, data) == len(data)
    first = [r.to_dict() for r in vol.tree.walk()]
    for _ in range(2):
        again = Volume(medium, None)
        assert again.role == "client"
        assert [r.to_dict() for r in again.tree.walk()] == first
        assert again.read(again.lookup_file("a/b/c/data")) == data
        again.close()
    assert first[0]["mode"] == "0750" and first[2]["path"] == "a/b/c"  # -p parents get the leaf's mode


def test_client_cannot_append(vol: Volume, medium: Mapping) -> None:
    vol.mkdir("x")
    client = Volume(medium, uuid.uuid4())
    before = bytes(medium.buf[HDR : HDR + 4096])
    for op in (lambda: client.mkdir("y"), lambda: client.creat("z", 10)):
        with pytest.raises(NotMaster, match="famfs client"):
            op()
    with pytest.raises(NotMaster):
        client.write(_dummy(), b"x")
    assert bytes(medium.buf[HDR : HDR + 4096]) == before
    client.close()


def _dummy() -> L.FileMeta:
    return L.FileMeta(0, "x", 1, 2, 0, 0, 0o644, L.EXT_SIMPLE, ((0, 10 * MiB, 2 * MiB),))


def test_creat_rules(vol: Volume) -> None:
    with pytest.raises(FamfsError, match="parent directory 'nope'"):
        vol.creat("nope/f", 10)
    f, created = vol.creat("f", 10)
    assert created
    again, created2 = vol.creat("f", 10)
    assert again == f and not created2  # restartable, like famfs
    with pytest.raises(FamfsError, match="exists with size 10"):
        vol.creat("f", 11)
    with pytest.raises(InvalidArgument, match="size must be positive"):
        vol.creat("g", 0)
    with pytest.raises(InvalidArgument, match="at most 79"):
        vol.creat("p" * 80, 10)
    vol.creat("p" * 79, 10)
    vol.mkdir("d")
    with pytest.raises(FamfsError, match="directory exists"):
        vol.mkdir("d")
    with pytest.raises(FamfsError, match="is a directory"):
        vol.creat("d", 10)
    with pytest.raises(FamfsError, match="use -p"):
        vol.mkdir("q/r")


def test_allocator_first_fit_then_next_fit(vol: Volume) -> None:
    a, _ = vol.creat("a", 2 * MiB)
    b, _ = vol.creat("b", 1)
    c, _ = vol.creat("c", 4 * MiB + 1)
    assert [x.extents[0][1] for x in (a, b, c)] == [10 * MiB, 12 * MiB, 14 * MiB]
    assert c.extents[0][2] == 6 * MiB
    with pytest.raises(NoSpace):
        vol.creat("huge", GiB)
    # a new session rebuilds the bitmap from the log and continues after the last file
    v2 = Volume(vol.medium, vol.system_uuid)
    d, _ = v2.creat("d", 1)
    assert d.extents[0][1] == 20 * MiB
    v2.close()


def test_interleaved_allocation_bucket_rules() -> None:
    sb = L.new_superblock(dd_size=8 * GiB, daxdev="x", system_uuid=uuid.uuid4())
    built = build_bitmap(sb, [])
    alloc = Allocator(built.bitmap, sb.dd_size, random.Random(3))
    cs, strips = alloc.interleaved(100 * MiB, 4, 2 * MiB, 8)
    assert cs == 2 * MiB and len(strips) == 4
    strip_len = -(-100 * MiB // (4 * 2 * MiB)) * 2 * MiB  # ceil(size/(N*chunk))*chunk
    bucket = (8 * GiB // (2 * MiB)) // 8 * 2 * MiB
    buckets = {off // bucket for _d, off, _l in strips}
    assert len(buckets) == 4 and all(ln == strip_len for _d, _o, ln in strips)
    assert all(off // bucket == (off + ln - 1) // bucket for _d, off, ln in strips)
    # smaller than a chunk: contiguous, first fit from offset 0
    first_free = alloc.bm.find(1, 0)
    alloc.bm.cur_pos = 1000  # ignored: small files restart from offset 0
    cs2, (ext,) = alloc.interleaved(MiB, 4, 4 * MiB, 8)
    assert cs2 == 0 and ext[1] == first_free * 2 * MiB
    with pytest.raises(InvalidArgument, match="power of 2"):
        alloc.interleaved(100 * MiB, 2, 6 * MiB, 2)
    with pytest.raises(InvalidArgument, match="between nstrips"):
        alloc.interleaved(100 * MiB, 4, 2 * MiB, 2)
    with pytest.raises(InvalidArgument, match="1 GiB per bucket"):
        alloc.interleaved(100 * MiB, 2, 2 * MiB, 16)
    with pytest.raises(InvalidArgument, match="nstrips 17"):
        alloc.interleaved(100 * MiB, 17, 2 * MiB, 32)


def test_interleaved_failure_releases_partial_strips() -> None:
    bm = Bitmap(64)
    bm.bits[0:5] = b"\1" * 5
    bm.bits[16:32] = b"\1" * 16  # bucket 1 of 4 is full
    alloc = Allocator(bm, 64 * 2 * MiB, random.Random(0))
    before = bytes(bm.bits)
    with pytest.raises(NoSpace, match="found 3 of 4 strips"):
        alloc.interleaved(48 * MiB, 4, 2 * MiB, 4, min_bucket=2 * MiB)
    assert bytes(bm.bits) == before


def test_interleaved_file_data_roundtrip(tmp_path, me: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    from daxmode.fsdev import create_image, map_image

    p = tmp_path / "big.img"
    create_image(p, 4 * GiB)
    with map_image(p) as m:
        mkfs(m, me)
        v = Volume(m, me)
        f, _ = v.creat("il", 13 * MiB + 5, nstrips=3, chunk=2 * MiB, nbuckets=4)
        assert f.interleaved and f.nstrips == 3
        data = random.Random(2).randbytes(f.size)
        assert v.write(f, data) == f.size
        for k in range(0, f.size, 2 * MiB):
            dev = L.interleave_offset(k, 3, 2 * MiB, [e[1] for e in f.extents])
            assert bytes(m.buf[dev : dev + 64]) == data[k : k + 64]
        v.close()
        c = Volume(m, None)
        assert c.read(c.lookup_file("il")) == data
        c.close()
        assert fsck(m.buf).ok


def test_full_log(tmp_path, me: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    from daxmode.fsdev import create_image, map_image

    p = tmp_path / "log.img"
    create_image(p, 64 * MiB)
    with map_image(p) as m:
        mkfs(m, me)
        v = Volume(m, me)
        cap = v.capacity
        assert cap == 15420
        for i in range(cap):
            v.mkdir(f"d{i}")
        with pytest.raises(LogFull, match="all 15420 entries"):
            v.mkdir("one-more")
        with pytest.raises(LogFull):
            v.creat("f", 1)
        v.close()
        rep = fsck(m.buf)
        assert rep.ok and rep.stats["log_free"] == 0 and rep.stats["directories"] == cap


def test_torn_append_never_played(vol: Volume, medium: Mapping) -> None:
    vol.mkdir("a")
    # crash after the entry, before the counters: outside the log, reported as a note
    put_entry(medium, 1, L.pack_mkdir_entry(1, "ghost"), count=False)
    v = Volume(medium, vol.system_uuid)
    assert "ghost" not in v.tree.dirs and v.scan.torn_tail
    rep = fsck(medium.buf)
    assert rep.ok and "interrupted" in rep.notes[0]
    # the next append overwrites the slot
    v.mkdir("b")
    assert sorted(Volume(medium, None).tree.dirs) == ["a", "b"]
    # counters written but the entry torn (half old, half new): CRC catches it
    half = L.pack_mkdir_entry(2, "torn")[:300] + bytes(244)
    put_entry(medium, 2, half)
    v3 = Volume(medium, vol.system_uuid)
    assert "torn" not in v3.tree.dirs and v3.scan.bad[0][0] == 2
    with pytest.raises(FamfsError, match="bad entries"):
        v3.mkdir("c")  # no appends on a damaged log
    assert any("entry 2: CRC mismatch" in p for p in fsck(medium.buf).problems)


def test_seqnum_must_equal_index(vol: Volume, medium: Mapping) -> None:
    put_entry(medium, 0, L.pack_mkdir_entry(5, "x"))
    assert "entry 0: seqnum 5 does not match its index" in fsck(medium.buf).problems


def forge(medium: Mapping, entries: list[bytes]) -> None:
    for i, e in enumerate(entries):
        put_entry(medium, i, e)


def test_fsck_finds_what_famfs_misses(vol: Volume, medium: Mapping) -> None:
    f = L.pack_file_entry
    forge(
        medium,
        [
            L.pack_mkdir_entry(0, "d"),
            f(1, "d/a", 4 * MiB, [(0, 10 * MiB, 4 * MiB)]),
            f(2, "d/b", 2 * MiB, [(0, 12 * MiB, 2 * MiB)]),  # overlaps d/a
            f(3, "d/a", 2 * MiB, [(0, 20 * MiB, 2 * MiB)]),  # duplicate path
            f(4, "past", 2 * MiB, [(0, GiB - 2 * MiB, 4 * MiB)]),  # past the device end
            f(5, "big", 9 * MiB, [(0, 30 * MiB, 2 * MiB)]),  # fm_size beyond extents
            f(6, "inlog", 1, [(0, 4 * MiB, 2 * MiB)]),  # inside the log
            f(7, "zero", 1, [(0, 0, 2 * MiB)]),  # offset 0
            f(8, "odd", 1, [(0, 40 * MiB + 4096, 2 * MiB)]),  # misaligned
            f(9, "nodir/x", 1, [(0, 50 * MiB, 2 * MiB)]),  # parent never created
            L.pack_add_daxdev_entry(10, GiB, uuid.uuid4(), 1),
        ],
    )
    rep = fsck(medium.buf)
    text = "\n".join(rep.problems)
    for want in (
        "entry 2 ('d/b'): extent 0 [0xc00000+0x200000] overlaps entry 1 ('d/a'); refused, not served",
        "entry 3 ('d/a'): duplicate path, first logged by entry 1",
        "entry 4 ('past'): extent 0 [0x3fe00000+0x400000]: ends past the device end",
        "entry 5 ('big'): fm_size 9437184 exceeds the 2097152 bytes its extents hold",
        "entry 6 ('inlog'): extent 0 [0x400000+0x200000]: overlaps the superblock and log",
        "entry 7 ('zero'): extent 0 [0x0+0x200000]: overlaps the superblock and log",
        "entry 8 ('odd'): extent 0 [0x2801000+0x200000]: not aligned",
        "entry 9: parent directory of 'nodir/x' does not exist",
    ):
        assert want in text, want
    assert sorted(rep.refused) == [2, 4, 5, 6, 7, 8]
    assert not any("ADD_DAXDEV" in p for p in rep.problems)  # fine in v48
    assert rep.stats["files"] == 9


def test_fsck_version_consistency(medium: Mapping, me: uuid.UUID) -> None:
    mkfs(medium, me, version=47)
    put_entry(medium, 0, L.pack_add_daxdev_entry(0, GiB, uuid.uuid4(), 1))
    assert "entry 0: ADD_DAXDEV entry in a version 47 log" in fsck(medium.buf).problems[0]
    v = Volume(medium, me)
    with pytest.raises(FamfsError, match="need famfs version 48"):
        v.add_daxdev(GiB, uuid.uuid4(), 1)
    v.close()


def test_fsck_header_counter_and_crc(vol: Volume, medium: Mapping) -> None:
    struct.pack_into("<Q", medium.buf, HDR + 8, 16 * MiB)  # len disagrees, CRC now wrong
    text = "\n".join(fsck(medium.buf).problems)
    assert "famfs_log_crc" in text and "famfs_log_len=0x1000000: superblock says 0x800000" in text
    with pytest.raises(FamfsError, match="log header is damaged"):
        Volume(medium, vol.system_uuid).mkdir("x")


def test_unknown_entry_type_reported(vol: Volume, medium: Mapping) -> None:
    e = bytearray(L.pack_mkdir_entry(0, "x"))
    struct.pack_into("<I", e, 8, 2)  # DELETE: defined, never produced
    struct.pack_into("<Q", e, 536, zlib.crc32(e[:536]))
    put_entry(medium, 0, bytes(e))
    assert "famfs_log_entry_type=2: unknown entry type" in fsck(medium.buf).problems[0]


def test_scan_log_handles_truncated_buffer() -> None:
    hdr = bytearray(L.pack_log_header(8 * MiB, 10))
    scan = scan_log(bytes(hdr) + bytes(1000), 8 * MiB)
    assert scan.records == [] and scan.bad


def test_refresh_reads_again_slots_that_were_in_flight(vol: Volume, medium: Mapping) -> None:
    """Counters read ahead of their slots (a write in flight) must not cost the view those entries."""
    other = Volume(medium, vol.system_uuid)
    n = vol.next_index
    lm = memoryview(medium.buf)[L.LOG_OFFSET : L.LOG_OFFSET + vol.sb.log_len]
    struct.pack_into("<QQ", lm, L.LOG_HDR_COUNTERS_OFF, n + 1, n + 1)  # counters first, slot empty
    other.refresh()
    assert "late" not in other.tree.dirs and other.scan.bad
    put_entry(medium, n, L.pack_mkdir_entry(n, "late"))
    other.refresh()
    assert "late" in other.tree.dirs and not other.scan.bad
    lm.release()
    other.close()
