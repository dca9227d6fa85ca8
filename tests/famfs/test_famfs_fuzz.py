"""Property tests and a bounded fuzz run: corrupt metadata never raises, and fsck reports it."""

from __future__ import annotations

import itertools
import random
import struct
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daxmode.famfs import Volume, fsck, mkfs
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.log import play, scan_log
from daxmode.fsdev import create_image, map_image

MiB = 1 << 20
ME = uuid.UUID("11111111-2222-4333-8444-555555555555")

path_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-.é")
component = st.text(path_chars, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
relpath = st.lists(component, min_size=1, max_size=5).map("/".join)


@given(
    relpath,
    st.integers(1, 2**63),
    st.integers(0, 0o7777),
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2**50), st.integers(0, 2**50)), min_size=1, max_size=16
    ),
)
def test_file_entry_round_trip(path: str, size: int, mode: int, uid: int, exts: list) -> None:  # type: ignore[type-arg]
    if len(path.encode()) > 79:
        return
    e = L.pack_file_entry(3, path, size, exts, mode=mode, uid=uid, gid=uid ^ 1)
    m = L.decode_entry(e, 0, 3)
    assert isinstance(m, L.FileMeta)
    assert (m.path, m.size, m.mode, m.uid, m.gid, list(m.extents)) == (path, size, mode, uid, uid ^ 1, exts)
    assert m.path_ok


@given(relpath, st.integers(1, 16), st.integers(21, 40))
def test_interleave_segments_cover_file_exactly(path: str, nstrips: int, chunk_shift: int) -> None:
    chunk = 1 << chunk_shift
    size = nstrips * chunk * 3 - 7
    strip_len = 3 * chunk
    strips = tuple((0, (i + 1) << 45, strip_len) for i in range(nstrips))
    meta = L.FileMeta(0, path, size, 2, 0, 0, 0o644, L.EXT_INTERLEAVE, strips, nstrips, chunk)
    segs = L.file_segments(meta)
    assert sum(n for _, n in segs) == size
    # every device byte lies inside a strip, and no two file bytes share one
    seen = []
    for dev, n in segs:
        (_idx,) = [i for i, s in enumerate(strips) if s[1] <= dev and dev + n <= s[1] + s[2]]
        seen.append((dev, dev + n))
    seen.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(seen))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=400))
def test_random_superblock_bytes_never_raise(raw: bytes) -> None:
    probs = L.superblock_problems(raw, device_size=1 << 30)
    assert isinstance(probs, list)
    if len(raw) < 200 or struct.unpack_from("<Q", raw, 0)[0] != L.SUPERBLOCK_MAGIC:
        assert probs


def _good_log(n: int) -> bytearray:
    log_len = 8 * MiB
    buf = bytearray(L.LOG_HDR_SIZE + (n + 2) * L.ENTRY_SIZE)
    buf[:48] = L.pack_log_header(log_len, n)
    for i in range(n):
        if i % 3 == 0:
            e = L.pack_mkdir_entry(i, f"d{i}")
        elif i % 3 == 1:
            e = L.pack_file_entry(i, f"d{i - 1}/f", 100, [(0, (20 + i) * 2 * MiB, 2 * MiB)])
        else:
            e = L.pack_interleaved_entry(
                i, f"i{i}", 5 * MiB, 2 * MiB, [(0, (1000 + 8 * i) * MiB, 4 * MiB)] * 2
            )
        buf[48 + i * 544 : 48 + (i + 1) * 544] = e
    return buf


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 48 + 12 * 544 - 1), st.integers(0, 255)), min_size=1, max_size=20))
def test_corrupt_log_never_raises(flips: list[tuple[int, int]]) -> None:
    buf = _good_log(10)
    for off, val in flips:
        buf[off] = val
    scan = scan_log(buf, 8 * MiB)
    tree = play(scan.records)
    assert len(scan.records) + len(scan.bad) <= max(scan.header.next_index, 0) + 1
    for r in scan.records:  # every played entry passed its CRC and seqnum checks
        assert r.index < 10
    assert isinstance(tree.errors, list)


def test_bounded_fuzz_of_whole_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Mutate a real image 300 times (bytes in superblock, header and entries); fsck must report
    every CRC-covered change and nothing may raise."""
    rng = random.Random(20260613)
    p = tmp_path / "fuzz.img"
    create_image(p, 64 * MiB)
    with map_image(p) as m:
        mkfs(m, ME)
        v = Volume(m, ME)
        v.mkdir("a")
        for i in range(20):
            _f, _ = v.creat(f"a/f{i}", 1000 * (i + 1))
        v.close()
        pristine = bytes(m.buf[: 4 * MiB])
        regions = [
            (0, 96),
            (L.LOG_OFFSET, L.LOG_OFFSET + 24),
            (L.LOG_OFFSET + 48, L.LOG_OFFSET + 48 + 21 * 544),
        ]
        detected = 0
        for _ in range(300):
            m.buf[: 4 * MiB] = pristine
            lo, hi = rng.choice(regions)
            for _k in range(rng.randint(1, 4)):
                off = rng.randrange(lo, hi)
                m.buf[off] = (m.buf[off] + rng.randint(1, 255)) % 256  # always a change
            rep = fsck(m.buf)
            if rep.problems:
                detected += 1
            try:
                Volume(m, None).close()
            except Exception as e:  # only the documented error type may escape
                from daxmode.errors import FamfsError

                assert isinstance(e, FamfsError), repr(e)
        # every mutation lands in a CRC-covered range, so every one must be reported
        assert detected == 300
