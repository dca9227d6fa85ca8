"""The one extent validator: may this file entry's extents be served without exposing other bytes?

Every path that turns a log entry into bytes or a map asks here first: fsck, the log played by
the CLI (:func:`daxmode.famfs.media.log.play`), the mount's namespace (at mount time and on every
incremental refresh), the GET_FMAP encoder, and any famfs-v1 caller before FAMFSIOC_MAP_CREATE.
An entry refused here is skipped: it is never played, never served and never gets a map; the
rest of the tree is served as usual.  Three rules, each from a public source:

* **Placement.**  Every extent or strip lies inside the device (``dd_size``, which the superblock
  check already bounds by the real device), after the superblock and the log, on device index 0,
  non-empty and aligned to the allocation unit (famfs ``famfs_build_bitmap``; the V10 kernel's
  ``famfs_fuse_meta_alloc`` in "[PATCH V10 04/10] famfs_fuse: Create files with famfs fmaps"
  rejects extents that are not 2 MiB aligned or not on device 0).
* **Interleave geometry, exact.**  The chunk size is a power of 2 and a multiple of the
  allocation unit (famfs ``src/famfs_alloc.c:548-560``, ``famfs_validate_interleave_param``,
  at 5d0919f).  A file of ``size`` bytes has ``ceil(size / chunk)`` chunks, laid round-robin over
  the strips (the fmap documentation of "[PATCH V10 09/10] famfs_fuse: Add famfs fmap metadata
  documentation": ``chunk = off / chunk_size``, ``strip = chunk % nstrips``, ``stripe = chunk /
  nstrips``), so strip ``j`` must hold every whole chunk that lands on it:
  ``ceil((nchunks - j) / nstrips) * chunk`` bytes.  famfs allocates exactly that
  (``famfs_alloc.c:635-644``: ``strip_size = ceil(size / (nstrips * chunk)) * chunk``).  The
  kernel only checks that the strips *together* hold ``size`` bytes, which is how a 4 MiB chunk
  over 2 MiB strips walks off each strip into whatever follows it.
* **No overlap.**  No unit of one admitted file belongs to another (nor twice to the same file).
  Files are admitted in log order, so the earlier entry keeps its space and a later one that
  overlaps it is refused, whatever the later one's mode.

The overlap index is one byte per allocation unit (the allocator already keeps the same bitmap),
with the first unit of each admitted extent marked 2 so that the owner of a clash is found with
one ``rfind``: admitting all 15,420 entries of a full log is linear in their extents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daxmode.errors import FamfsError
from daxmode.famfs.media import layout as L

_START, _BODY = 2, 1


@dataclass(frozen=True)
class Geometry:
    """Where files may live on one volume."""

    dd_size: int
    reserved_end: int
    """End of the superblock and log: no file byte may lie below it."""
    unit: int

    @classmethod
    def of(cls, sb: L.Superblock, device_size: int | None = None) -> Geometry:
        unit = sb.alloc_unit if sb.alloc_unit in (L.ALLOC_UNIT, L.ALLOC_UNIT_4K) else L.ALLOC_UNIT
        limit = sb.dd_size if device_size is None else min(sb.dd_size, device_size)
        return cls(limit, L.LOG_OFFSET + sb.log_len, unit)


def strip_need(size: int, nstrips: int, chunk: int) -> list[int]:
    """Bytes strip ``j`` must hold for a file of ``size`` bytes: its whole chunks, for every stripe."""
    nchunks = -(-size // chunk)
    return [(-(-(nchunks - j) // nstrips) if nchunks > j else 0) * chunk for j in range(nstrips)]


def geometry_problems(meta: L.FileMeta, geo: Geometry) -> list[str]:
    """Why the entry's extents, on their own, cannot be served safely ([] if they can)."""
    out: list[str] = []
    unit = geo.unit
    for k, (dev, off, ln) in enumerate(meta.extents):
        what = f"{'strip' if meta.interleaved else 'extent'} {k} [{off:#x}+{ln:#x}]"
        if dev != 0:
            out.append(f"{what}: device index {dev} (only device 0 exists)")
        if ln <= 0:
            out.append(f"{what}: zero length")
        if off % unit or ln % unit:
            out.append(f"{what}: not aligned to the {unit}-byte allocation unit")
        if off + ln > geo.dd_size:
            out.append(f"{what}: ends past the device end ({geo.dd_size:#x})")
        elif off < geo.reserved_end:
            out.append(f"{what}: overlaps the superblock and log (which end at {geo.reserved_end:#x})")
    if meta.interleaved:
        cs, ns = meta.chunk_size, meta.nstrips
        if not L.is_pow2(cs) or cs % unit:
            out.append(f"chunk size {cs:#x} is not a power of 2 multiple of the {unit}-byte allocation unit")
        elif ns != len(meta.extents):
            out.append(f"{ns} strips declared, {len(meta.extents)} present")
        else:
            for j, (need, (_d, _o, ln)) in enumerate(
                zip(strip_need(meta.size, ns, cs), meta.extents, strict=True)
            ):
                if ln < need:
                    out.append(
                        f"strip {j} holds {ln:#x} bytes but a {meta.size}-byte file puts {need // cs} "
                        f"whole {cs:#x}-byte chunk(s) ({need:#x} bytes) on it"
                    )
    elif meta.size > meta.allocated:
        out.append(f"fm_size {meta.size} exceeds the {meta.allocated} bytes its extents hold")
    return out


def describe(meta: L.FileMeta) -> str:
    return f"entry {meta.index} ({meta.path!r})"


@dataclass
class Validator:
    """Admits file entries in log order; remembers each admitted file's units and each refusal."""

    geo: Geometry
    bits: bytearray = field(init=False, repr=False)
    owners: dict[int, L.FileMeta] = field(default_factory=dict, repr=False)
    """First unit of each admitted extent -> the entry that owns it."""
    refused: dict[int, str] = field(default_factory=dict)
    """Log index -> why that entry is refused (one line naming the entry)."""

    def __post_init__(self) -> None:
        self.bits = bytearray(-(-self.geo.dd_size // self.geo.unit))

    def problems(self, meta: L.FileMeta) -> list[str]:
        """Everything wrong with ``meta`` against the volume and the files admitted so far (no side
        effects: the check a famfs-v1 caller makes before FAMFSIOC_MAP_CREATE)."""
        out = geometry_problems(meta, self.geo)
        if out:
            return out
        unit, bits = self.geo.unit, self.bits
        mine: list[tuple[int, int]] = []
        for k, (_d, off, ln) in enumerate(meta.extents):
            a, b = off // unit, (off + ln) // unit
            for s, e in mine:
                if a < e and s < b:
                    out.append(f"extents {k} and another of the same file overlap")
            mine.append((a, b))
            hit = bits.find(_BODY, a, b)
            hit2 = bits.find(_START, a, b)
            first = min(h for h in (hit, hit2) if h >= 0) if hit >= 0 or hit2 >= 0 else -1
            if first >= 0:
                owner = self.owners.get(bits.rfind(_START, 0, first + 1))
                who = describe(owner) if owner is not None else "another file"
                out.append(f"extent {k} [{off:#x}+{ln:#x}] overlaps {who}")
        return out

    def admit(self, meta: L.FileMeta) -> str | None:
        """Mark ``meta``'s units as its own and return None, or refuse it: returns (and records) one
        line that names the entry and its first problem."""
        exts = meta.extents
        if meta.ext_type == L.EXT_SIMPLE and len(exts) == 1:  # the common file, checked inline
            dev, off, ln = exts[0]
            geo = self.geo
            unit = geo.unit
            if (
                dev == 0
                and ln > 0
                and meta.size <= ln
                and geo.reserved_end <= off
                and off + ln <= geo.dd_size
                and not off % unit
                and not ln % unit
            ):
                a, b = off // unit, (off + ln) // unit
                bits = self.bits
                if (
                    (not bits[a])
                    if b - a == 1
                    else (bits.find(_BODY, a, b) < 0 and bits.find(_START, a, b) < 0)
                ):
                    bits[a] = _START
                    if b - a > 1:
                        bits[a + 1 : b] = b"\1" * (b - a - 1)
                    self.owners[a] = meta
                    return None
        out = self.problems(meta)
        if out:
            more = f" (and {len(out) - 1} more)" if len(out) > 1 else ""
            why = f"{describe(meta)}: {out[0]}{more}; refused, not served"
            self.refused[meta.index] = why
            return why
        unit, bits = self.geo.unit, self.bits
        for _d, off, ln in meta.extents:
            a, b = off // unit, (off + ln) // unit
            bits[a] = _START
            if b - a > 1:
                bits[a + 1 : b] = b"\1" * (b - a - 1)
            self.owners[a] = meta
        return None


def require_admitted(validator: Validator, meta: L.FileMeta) -> None:
    """For a caller about to hand ``meta``'s map to a kernel (famfs v1 ``FAMFSIOC_MAP_CREATE``, a
    GET_FMAP reply): FamfsError (exit 12) unless the validator admitted exactly this entry."""
    if meta.index in validator.refused:
        raise FamfsError(validator.refused[meta.index])
    problems = geometry_problems(meta, validator.geo)
    owned = [validator.owners.get(off // validator.geo.unit) for _d, off, _l in meta.extents]
    if problems or any(o is None or o.index != meta.index for o in owned):
        why = problems[0] if problems else "its extents are not the ones the validator admitted for it"
        raise FamfsError(f"{describe(meta)}: {why}; no map is handed to the kernel")


def validator_for(sb: L.Superblock, device_size: int | None = None) -> Validator:
    return Validator(Geometry.of(sb, device_size))
