"""Memory blocks of system-ram devices: which exist, their state and zone, onlining and offlining.

Block membership comes from a device's real ranges: kmem hot-adds exactly the whole blocks
inside each range (it aligns every range inward; drivers/dax/kmem.c).  States and zones are
read with as few reads as the format allows, because a system-ram switch of a 1 TiB device
touches thousands of blocks (drivers/base/memory.c: state, valid_zones, removable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from daxmode.errors import SysfsError
from daxmode.kernel import paths
from daxmode.kernel.devices import DaxDevice, Range
from daxmode.sysfs import Sysfs

Write = Callable[[str, str], None]
"""How a primitive writes an attribute: ``Sysfs.write``, or an executor's logging writer."""

ONLINE_VALUES = ("online", "online_kernel", "online_movable")
_ZONE_NAMES = {"DMA", "DMA32", "Normal", "Movable", "Device", "none"}


class MemoryBlock(NamedTuple):
    id: int
    state: str  # online / offline / going-offline
    zones: str | None = None  # valid_zones, if read

    @property
    def name(self) -> str:
        return f"memory{self.id}"

    @property
    def online(self) -> bool:
        return self.state.startswith("online")


class DeviceMemory(NamedTuple):
    """The memory blocks a device's ranges cover, with those currently present in sysfs."""

    block_size: int
    ids: list[int]  # every whole block inside the ranges (what kmem would hot-add)
    blocks: list[MemoryBlock]  # present ones, in id order

    @property
    def online(self) -> list[MemoryBlock]:
        return [b for b in self.blocks if b.online]

    @property
    def offline(self) -> list[MemoryBlock]:
        return [b for b in self.blocks if not b.online]


def block_size(sysfs: Sysfs) -> int:
    """``block_size_bytes`` is hex without ``0x`` (drivers/base/memory.c)."""
    return int(sysfs.read(paths.BLOCK_SIZE).strip(), 16)


def block_runs(ranges: Iterable[Range], bsize: int) -> list[range]:
    """The block ids of each range, as kmem hot-adds them: one run per range."""
    out = []
    for r in ranges:
        first = -(-r.start // bsize)
        last = (r.end + 1) // bsize
        if last > first:
            out.append(range(first, last))
    return out


def block_ids(ranges: Iterable[Range], bsize: int) -> list[int]:
    return [b for run in block_runs(ranges, bsize) for b in run]


def present_blocks(sysfs: Sysfs, ranges: Iterable[Range], bsize: int) -> list[int]:
    """The device's blocks that exist, without listing the (huge) memory directory.

    add_memory() creates every block device of a range or none, and remove_memory() removes all
    of them only if all are offline (mm/memory_hotplug.c), so a range is present or absent as a
    unit: its first and last block decide; a range only partly there is resolved block by block.
    """
    out: list[int] = []
    for run in block_runs(ranges, bsize):
        first = sysfs.exists(f"{paths.MEMORY}/memory{run[0]}")
        last = sysfs.exists(f"{paths.MEMORY}/memory{run[-1]}")
        if first and last:
            out.extend(run)
        elif first or last:
            out.extend(b for b in run if sysfs.exists(f"{paths.MEMORY}/memory{b}"))
    return out


def read_blocks(sysfs: Sysfs, ids: Iterable[int], *, zones: bool = False) -> list[MemoryBlock]:
    """State (and optionally valid_zones) of the given blocks; absent ones are skipped."""
    ids = list(ids)
    states = sysfs.read_under(paths.MEMORY, [f"memory{b}/state" for b in ids])
    zs = (
        sysfs.read_under(paths.MEMORY, [f"memory{b}/valid_zones" for b in ids])
        if zones
        else [None] * len(ids)
    )
    return [
        MemoryBlock(bid, st.strip(), z.strip() if z is not None else None)
        for bid, st, z in zip(ids, states, zs, strict=True)
        if st is not None
    ]


def scan_blocks(sysfs: Sysfs, ids: Iterable[int]) -> list[MemoryBlock]:
    """State and zone of each present block with ONE read per block where the format allows.

    ``valid_zones`` of an online block is the single name of its zone ("none" if it spans
    zones); of an offline block, the default zone followed by the other allowed ones, so always
    two or more names (drivers/base/memory.c valid_zones_show).  Anything else (no
    CONFIG_MEMORY_HOTREMOVE, odd output) falls back to reading ``state``.
    """
    ids = list(ids)
    zs = sysfs.read_under(paths.MEMORY, [f"memory{b}/valid_zones" for b in ids])
    out: list[MemoryBlock] = []
    unsure: list[int] = []
    for bid, z in zip(ids, zs, strict=True):
        words = z.split() if z is not None else []
        if len(words) == 1 and words[0] in _ZONE_NAMES:
            out.append(MemoryBlock(bid, "online", words[0]))
        elif len(words) >= 2 and all(w in _ZONE_NAMES for w in words):
            out.append(MemoryBlock(bid, "offline", None))
        else:
            unsure.append(bid)
    if unsure:
        out.extend(read_blocks(sysfs, unsure, zones=True))
        out.sort(key=lambda b: b.id)
    return out


def read_zones(sysfs: Sysfs, ids: Iterable[int]) -> dict[int, str | None]:
    ids = list(ids)
    zs = sysfs.read_under(paths.MEMORY, [f"memory{b}/valid_zones" for b in ids])
    return {b: (z.strip() if z is not None else None) for b, z in zip(ids, zs, strict=True)}


def removable(sysfs: Sysfs, block_id: int) -> bool | None:
    """``removable`` (kernels since 5.9 always say 1); None if unreadable."""
    text = sysfs.read_or(paths.block_attr(block_id, "removable"))
    return None if text is None else text.strip() != "0"


def block_state(sysfs: Sysfs, block_id: int) -> str:
    return (sysfs.read_or(paths.block_attr(block_id, "state"), "") or "").strip()


def device_memory(sysfs: Sysfs, dev: DaxDevice) -> DeviceMemory | None:
    """The device's memory blocks with state and zone, or None when its ranges are unreadable."""
    if dev.ranges is None:
        return None
    bsize = block_size(sysfs)
    ids = block_ids(dev.ranges, bsize)
    return DeviceMemory(bsize, ids, scan_blocks(sysfs, present_blocks(sysfs, dev.ranges, bsize)))


def present_in(sysfs: Sysfs, dev: DaxDevice) -> list[MemoryBlock]:
    """The device's present blocks and their states (no zones): for verification and messages."""
    if not dev.ranges:
        return []
    return read_blocks(sysfs, present_blocks(sysfs, dev.ranges, block_size(sysfs)))


def compress_blocks(ids: Iterable[int]) -> str:
    """``memory32-39,memory41`` for messages; "none" if empty."""
    s = sorted(set(ids))
    if not s:
        return "none"
    parts = []
    start = prev = s[0]
    for b in [*s[1:], None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        parts.append(f"memory{start}" if start == prev else f"memory{start}-{prev}")
        if b is not None:
            start = prev = b
    return ",".join(parts)


# --- the auto-online policy ------------------------------------------------------------------


def read_policy(sysfs: Sysfs) -> str | None:
    """``auto_online_blocks`` (offline / online / online_kernel / online_movable), None if absent."""
    text = sysfs.read_or(paths.AUTO_ONLINE)
    return text.strip() if text is not None else None


def write_policy(write: Write, value: str) -> None:
    write(paths.AUTO_ONLINE, value)


def policy_onlines(policy: str | None) -> bool:
    """daxctl_dev_will_auto_online_memory(): every value starting with "online"."""
    return bool(policy and policy.startswith("online"))


# --- onlining and offlining ------------------------------------------------------------------


class BlockPass:
    """What one pass over blocks did: the blocks it changed, and why the others failed."""

    __slots__ = ("changed", "failures")

    def __init__(self) -> None:
        self.changed: list[int] = []
        self.failures: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.failures


def zone_value(zone: str | None, movable: bool) -> str:
    """The state to write to online a block into ``zone`` again (rollback), or as asked."""
    if zone == "Movable":
        return "online_movable"
    if zone == "Normal":
        return "online_kernel"
    return "online_movable" if movable else "online"


def online_blocks(
    sysfs: Sysfs,
    write: Write,
    blocks: list[MemoryBlock],
    value_of: Callable[[MemoryBlock], str],
    *,
    keep_going: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BlockPass:
    """Online ``blocks``.  A failed write counts as done if the block is online afterwards
    (another agent, a udev rule, raced us: the kernel answers EINVAL for an online block).
    Stops at the first real failure unless ``keep_going`` (rollback tries every block)."""
    res = BlockPass()
    for i, b in enumerate(blocks, 1):
        try:
            write(paths.block_attr(b.id, "state"), value_of(b))
            res.changed.append(b.id)
        except SysfsError as e:
            if not block_state(sysfs, b.id).startswith("online"):
                res.failures.append(f"could not online {b.name}: {e}")
                if not keep_going:
                    break
        if progress:
            progress(i, len(blocks))
    return res


def offline_blocks(
    sysfs: Sysfs,
    write: Write,
    blocks: list[MemoryBlock],
    *,
    keep_going: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BlockPass:
    """Offline ``blocks`` in order.  A failure names ``removable=0`` when that is the reason
    (older kernels; daxctl refuses such blocks up front, ac46afe)."""
    res = BlockPass()
    for i, b in enumerate(blocks, 1):
        try:
            write(paths.block_attr(b.id, "state"), "offline")
            res.changed.append(b.id)
        except SysfsError as e:
            now = block_state(sysfs, b.id)
            if now and not now.startswith("online") and now != "going-offline":
                res.changed.append(b.id)  # someone else got there first
            else:
                why = (
                    " (removable=0: the kernel cannot offline it)" if removable(sysfs, b.id) is False else ""
                )
                res.failures.append(f"could not offline {b.name}: {e}{why}")
                if not keep_going:
                    break
        if progress:
            progress(i, len(blocks))
    return res
