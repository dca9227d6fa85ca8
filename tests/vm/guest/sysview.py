"""The kernel's own view of a dax device, read straight from sysfs without daxmode.

This is the oracle the guest tests and the guest benchmark check daxmode against, so it must
share no code with ``daxmode.kernel``: a bug there would otherwise agree with itself.
"""

from __future__ import annotations

import os
from pathlib import Path

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BUS = Path("/sys/bus/dax")
MEM = Path("/sys/devices/system/memory")


def driver(dev: str = DEV) -> str | None:
    """The driver bound to ``dev``, or None (the link may go between two looks while a driver is
    being changed)."""
    try:
        return os.path.basename(os.readlink(BUS / "devices" / dev / "driver"))
    except OSError:
        return None


def block_ids(dev: str = DEV) -> list[int]:
    """Whole memory blocks inside the device's mappingN ranges (what kmem hot-adds)."""
    bs = int((MEM / "block_size_bytes").read_text(), 16)
    ids: list[int] = []
    d = BUS / "devices" / dev
    i = 0
    while (d / f"mapping{i}").is_dir():
        start = int((d / f"mapping{i}" / "start").read_text(), 16)
        end = int((d / f"mapping{i}" / "end").read_text(), 16)
        ids.extend(range(-(-start // bs), (end + 1) // bs))
        i += 1
    return ids


def block_states(ids: list[int]) -> dict[int, tuple[str, str]]:
    """(state, valid_zones) of each block in ``ids`` that exists now."""
    out = {}
    for b in ids:
        d = MEM / f"memory{b}"
        if d.is_dir():
            out[b] = ((d / "state").read_text().strip(), (d / "valid_zones").read_text().strip())
    return out


def blocks(dev: str = DEV) -> dict[int, str]:
    """State of each of the device's memory blocks that exists now."""
    return {b: st for b, (st, _zones) in block_states(block_ids(dev)).items()}
