"""fsck: every check famfs makes, plus the ones it misses, as a list of problems.

famfs's fsck checks the superblock, entry seqnums/CRCs and allocation collisions, and exits with
the collision count only.  We also check the log header (CRC, counters, layout), extents past the
device end or inside the superblock/log, misaligned or zero-length extents, overlaps (naming
both files), duplicate paths, missing parents, ``fm_size`` beyond the allocation, invalid or
non-relative paths, flags/mode bits, and version/layout consistency (ADD_DAXDEV in a v47 log,
OMF version).  It never raises on corrupt input: everything becomes a line in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daxmode.famfs.media import layout as L
from daxmode.famfs.media.extents import validator_for
from daxmode.famfs.media.log import LogScan, play, scan_log
from daxmode.famfs.media.names import has_control


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    superblock: L.Superblock | None = None
    header: L.LogHeader | None = None
    stats: dict[str, int] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    """Log index -> why the extent validator refuses that file (it is never played or served)."""

    @property
    def fatal(self) -> list[str]:
        """Problems that make the whole volume unusable (superblock; log header magic, CRC, length);
        the others name entries a mount skips while serving the rest, or counters it reads past
        (it plays only the slots that check)."""
        return [
            p
            for p in self.problems
            if p.startswith(("superblock", "log:")) or (p.startswith("log header") and "next_" not in p)
        ]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "superblock": self.superblock.to_dict() if self.superblock else None,
            "log_header": self.header.to_dict() if self.header else None,
            "stats": self.stats,
            "refused": {str(i): why for i, why in self.refused.items()},
        }


def fsck(buf: L.Bytes, device_size: int | None = None) -> FsckReport:
    """Check the famfs metadata at the start of ``buf`` (a whole device or image)."""
    mv = memoryview(buf)
    try:
        return _fsck(mv, len(mv) if device_size is None else device_size)
    finally:
        mv.release()


def _fsck(mv: memoryview, device_size: int) -> FsckReport:
    rep = FsckReport()
    rep.problems += L.superblock_problems(mv, device_size)
    if len(mv) < L.SB_SIZE:
        return rep
    sb = L.unpack_superblock(mv)
    if sb.magic != L.SUPERBLOCK_MAGIC:
        return rep
    rep.superblock = sb
    rep.notes += L.superblock_notes(sb)
    log_len = sb.log_len
    if not L.is_pow2(log_len) or log_len < L.MIN_LOG_LEN or L.LOG_OFFSET + log_len > len(mv):
        rep.problems.append("log: not inspected (log length or placement is invalid)")
        return rep
    lm = mv[L.LOG_OFFSET : L.LOG_OFFSET + log_len]
    try:
        scan = scan_log(lm, log_len)
    finally:
        lm.release()
    rep.header = scan.header
    rep.problems += scan.header_problems
    if scan.header.magic != L.LOG_MAGIC:
        return rep
    rep.problems += [why for _i, why in scan.bad]
    if scan.torn_tail:
        rep.notes.append(
            f"slot {scan.header.next_index} after the last entry holds data: an append was interrupted "
            "before its counters were written; it is not part of the log"
        )
    _check_records(rep, sb, scan, device_size)
    return rep


def _check_records(rep: FsckReport, sb: L.Superblock, scan: LogScan, device_size: int) -> None:
    validator = validator_for(sb, device_size)
    unit = validator.geo.unit
    reserved_end = validator.geo.reserved_end
    seen: dict[str, int] = {}
    nfiles = ndirs = 0
    P = rep.problems
    for r in scan.records:
        if isinstance(r, L.DaxdevMeta):
            if sb.version == L.VERSION_47:
                P.append(f"entry {r.index}: ADD_DAXDEV entry in a version 47 log (v47 tools skip it)")
            rep.notes.append(f"entry {r.index}: ADD_DAXDEV index {r.dd_index}, {r.dd_size} bytes (not used)")
            continue
        where = f"entry {r.index} ({r.path!r})"
        if not r.path_ok:
            P.append(f"{where}: invalid path")
        elif has_control(r.path):
            rep.notes.append(f"{where}: the name holds control characters (listings escape them)")
        if r.path in seen:
            P.append(f"{where}: duplicate path, first logged by entry {seen[r.path]}")
        else:
            seen[r.path] = r.index
        if r.mode & ~0o7777:
            P.append(f"{where}: mode {r.mode:#o} has bits outside the permission bits")
        if isinstance(r, L.DirMeta):
            ndirs += 1
            continue
        nfiles += 1
        if r.flags not in (L.FM_ALL_HOSTS_RO, L.FM_ALL_HOSTS_RW):
            P.append(f"{where}: fm_flags={r.flags} is neither ALL_HOSTS_RO (1) nor ALL_HOSTS_RW (2)")
        if r.size == 0:
            P.append(f"{where}: fm_size is 0 (famfs never creates empty files)")
        if r.interleaved and len({e[2] for e in r.extents}) > 1:
            rep.notes.append(f"{where}: strips differ in length ({sorted({e[2] for e in r.extents})})")
    # the one validator (daxmode.famfs.media.extents), in log order, as every mount plays it
    tree = play(scan.records, validator)
    rep.refused = dict(validator.refused)
    P.extend(validator.refused.values())
    for e in tree.errors:
        if "parent directory" in e:
            P.append(e)
    allocated = (len(validator.bits) - validator.bits.count(0)) * unit
    hdr = scan.header
    cap = L.log_capacity(sb.log_len)
    rep.stats = {
        "log_entries": hdr.next_index,
        "log_capacity": cap,
        "log_free": max(cap - hdr.next_index, 0),
        "files": nfiles,
        "directories": ndirs,
        "bad_entries": len(scan.bad),
        "device_size": sb.dd_size,
        "allocated_bytes": allocated,
        "free_bytes": max((sb.dd_size - reserved_end) - allocated, 0) if sb.dd_size else 0,
    }
