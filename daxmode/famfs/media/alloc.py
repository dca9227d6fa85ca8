"""famfs's allocator: 2 MiB units, a bitmap rebuilt from the log, contiguous and interleaved files.

famfs keeps no allocation state on media; every session rebuilds the bitmap from the log
(famfs_build_bitmap).  We do the same, but with bounds checks (famfs writes past its bitmap for
an extent beyond the device) and one byte per unit so that ``bytearray.find`` does first-fit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from daxmode.errors import FamfsNoSpace, InvalidArgument
from daxmode.famfs.media import layout as L

GIB = 1 << 30
MIN_BUCKET = GIB
"""famfs_validate_interleave_param: every bucket must be at least 1 GiB."""


class NoSpace(FamfsNoSpace):
    """Not enough free allocation units for the request."""


@dataclass
class Bitmap:
    """One byte per allocation unit: 0 free, 1 used."""

    nbits: int
    unit: int = L.ALLOC_UNIT
    bits: bytearray = field(init=False)
    cur_pos: int = 0
    """Next-fit cursor within one session, as famfs's lp->cur_pos."""

    def __post_init__(self) -> None:
        self.bits = bytearray(self.nbits)

    def units(self, off: int, length: int) -> tuple[int, int]:
        return off // self.unit, -(-(off + length) // self.unit)

    def mark(self, off: int, length: int) -> tuple[bool, bool]:
        """Mark [off, off+length) used; returns (collided, out_of_range).  In-range units are marked
        even on collision so later files that overlap are reported too."""
        a, b = self.units(off, length)
        oor = b > self.nbits or length <= 0
        b = min(b, self.nbits)
        if a >= b:
            return False, oor
        seg = self.bits[a:b]
        collided = seg.count(0) != b - a
        self.bits[a:b] = b"\1" * (b - a)
        return collided, oor

    def release(self, off: int, length: int) -> None:
        a, b = self.units(off, length)
        self.bits[a:b] = bytes(b - a)

    def free_units(self) -> int:
        return self.bits.count(0)

    def find(self, n: int, lo: int = 0, hi: int | None = None) -> int:
        """First unit of a run of ``n`` free units inside [lo, hi), or -1."""
        hi = self.nbits if hi is None else hi
        if n <= 0 or hi - lo < n:
            return -1
        return self.bits.find(bytes(n), lo, hi)


@dataclass
class Collision:
    path: str
    index: int
    offset: int
    length: int


@dataclass
class BuildResult:
    bitmap: Bitmap
    collisions: list[Collision]
    out_of_range: list[Collision]


def build_bitmap(sb: L.Superblock, files: list[L.FileMeta]) -> BuildResult:
    """famfs_build_bitmap: reserve superblock and log, then mark every extent or strip of every file."""
    unit = sb.alloc_unit if sb.alloc_unit in (L.ALLOC_UNIT, L.ALLOC_UNIT_4K) else L.ALLOC_UNIT
    bm = Bitmap(-(-sb.dd_size // unit), unit)
    bm.mark(0, L.LOG_OFFSET + sb.log_len)
    collisions: list[Collision] = []
    oor: list[Collision] = []
    for f in files:
        for _dev, off, ln in f.extents:
            hit, out = bm.mark(off, ln)
            if hit:
                collisions.append(Collision(f.path, f.index, off, ln))
            if out:
                oor.append(Collision(f.path, f.index, off, ln))
    return BuildResult(bm, collisions, oor)


class Allocator:
    """Allocation for one locked-log session; the caller marks the log entry after committing."""

    def __init__(self, bitmap: Bitmap, dd_size: int, rng: random.Random | None = None) -> None:
        self.bm = bitmap
        self.dd_size = dd_size
        self.rng = rng or random.Random()

    def contiguous(self, size: int, from_start: bool = False) -> L.Extent:
        """One extent of ``size`` rounded up to the unit, first-fit from the session cursor."""
        if size <= 0:
            raise InvalidArgument(f"file size {size}: must be positive")
        n = -(-size // self.bm.unit)
        start = 0 if from_start else self.bm.cur_pos
        pos = self.bm.find(n, start)
        if pos < 0 and start:
            pos = self.bm.find(n, 0)
        if pos < 0:
            raise NoSpace(
                f"no {n * self.bm.unit} contiguous free bytes "
                f"({self.bm.free_units() * self.bm.unit} bytes free)"
            )
        self.bm.bits[pos : pos + n] = b"\1" * n
        self.bm.cur_pos = pos + n
        return (0, pos * self.bm.unit, n * self.bm.unit)

    def interleaved(
        self, size: int, nstrips: int, chunk: int, nbuckets: int | None = None, min_bucket: int = MIN_BUCKET
    ) -> tuple[int, list[L.Extent]]:
        """famfs_file_strided_alloc: ``nstrips`` strips in distinct random buckets.

        Returns (chunk_size, strips); a file smaller than one chunk becomes one contiguous extent
        from device offset 0 and is returned with chunk_size 0.
        """
        nbuckets = nstrips if nbuckets is None else nbuckets
        validate_interleave(self.dd_size, nstrips, chunk, nbuckets, min_bucket)
        if size <= 0:
            raise InvalidArgument(f"file size {size}: must be positive")
        if size < chunk:
            return 0, [self.contiguous(size, from_start=True)]
        unit = self.bm.unit
        bucket_units = (self.dd_size // unit) // nbuckets
        strip_bytes = -(-size // (nstrips * chunk)) * chunk
        strip_units = strip_bytes // unit
        order = list(range(nbuckets))
        self.rng.shuffle(order)
        got: list[L.Extent] = []
        for b in order:
            lo = b * bucket_units
            pos = self.bm.find(strip_units, lo, lo + bucket_units)
            if pos < 0:
                continue
            self.bm.bits[pos : pos + strip_units] = b"\1" * strip_units
            got.append((0, pos * unit, strip_bytes))
            if len(got) == nstrips:
                return chunk, got
        for _d, off, ln in got:
            self.bm.release(off, ln)
        raise NoSpace(
            f"interleaved allocation of {size} bytes found {len(got)} of {nstrips} "
            f"strips of {strip_bytes} bytes"
        )


def validate_interleave(
    dd_size: int, nstrips: int, chunk: int, nbuckets: int, min_bucket: int = MIN_BUCKET
) -> None:
    """famfs_validate_interleave_param plus the CLI's strip limit."""
    if not 1 <= nstrips <= L.MAX_STRIPS:
        raise InvalidArgument(f"nstrips {nstrips}: must be 1..{L.MAX_STRIPS}")
    if not L.is_pow2(chunk) or chunk % L.ALLOC_UNIT:
        raise InvalidArgument(f"chunk size {chunk}: must be a power of 2 and a multiple of 2 MiB")
    if not nstrips <= nbuckets <= L.MAX_NBUCKETS:
        raise InvalidArgument(
            f"nbuckets {nbuckets}: must be between nstrips ({nstrips}) and {L.MAX_NBUCKETS}"
        )
    if dd_size // nbuckets < min_bucket:
        raise InvalidArgument(
            f"nbuckets {nbuckets}: buckets of {dd_size // nbuckets} bytes are below the "
            f"{min_bucket}-byte minimum (famfs requires 1 GiB per bucket)"
        )
