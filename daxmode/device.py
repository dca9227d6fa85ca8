"""The device model: dax devices, their regions, their address ranges and memory blocks.

Everything is read through a :class:`~daxmode.sysfs.Sysfs`.  A device's mode is the
driver its ``driver`` link points at; its memory blocks are computed from its real
ranges (every ``mappingN``, falling back to ``resource`` + ``size``), not from
daxctl's ``[resource, resource+size)`` span, which miscounts discontiguous devices.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from daxmode.errors import BadMode, SysfsError, UnknownDevice
from daxmode.sysfs import Sysfs

DAX_BUS = "sys/bus/dax"
DAX_DEVICES = "sys/bus/dax/devices"
DAX_CLASS = "sys/class/dax"
MEMORY = "sys/devices/system/memory"
_NAME_RE = re.compile(r"^dax(\d+)\.(\d+)$")


class Mode(enum.Enum):
    """The three modes daxmode manages; the value is the name users type and see."""

    DEVDAX = "devdax"
    FSDEV = "fsdev"
    SYSTEM_RAM = "system-ram"

    @property
    def driver(self) -> str:
        """The kernel driver (= module) that puts a device in this mode."""
        return _DRIVER_OF[self]

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Accept the names and daxctl's ``famfs`` alias; anything else is :class:`BadMode`."""
        key = text.strip().lower().replace("_", "-")
        key = {"famfs": "fsdev", "system_ram": "system-ram", "ram": "system-ram", "kmem": "system-ram"}.get(
            key, key
        )
        for m in cls:
            if m.value == key:
                return m
        raise BadMode(f"unknown mode {text!r}: use devdax, fsdev (or famfs), or system-ram")

    @classmethod
    def of_driver(cls, driver: str | None) -> Mode | None:
        return _MODE_OF.get(driver) if driver else None

    def __str__(self) -> str:
        return self.value


_DRIVER_OF = {Mode.DEVDAX: "device_dax", Mode.FSDEV: "fsdev_dax", Mode.SYSTEM_RAM: "kmem"}
_MODE_OF = {v: k for k, v in _DRIVER_OF.items()}


@dataclass(frozen=True)
class Range:
    """One physical extent of a device; ``end`` is inclusive, as sysfs prints it."""

    start: int
    end: int
    page_offset: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Region:
    id: int
    path: str  # relative to the Sysfs root, e.g. "sys/devices/platform/.../dax0.0"
    size: int | None
    align: int | None  # dax_region/align is 0400
    available_size: int | None  # only dynamic regions have it
    dynamic: bool

    @property
    def shown_path(self) -> str:
        """As daxctl prints it: without the ``/sys/devices`` prefix."""
        p = "/" + self.path
        return p.removeprefix("/sys/devices")


@dataclass
class DaxDevice:
    name: str
    path: str  # the device directory, relative to the root
    legacy: bool = False
    size: int = 0
    align: int = 0
    target_node: int = -1
    driver: str | None = None
    region: Region | None = None
    ranges: list[Range] | None = None  # None: unreadable (resource and mappingN are 0400)
    has_chardev: bool = True

    @property
    def mode(self) -> Mode | None:
        return Mode.of_driver(self.driver)

    @property
    def bound(self) -> bool:
        return self.driver is not None

    @property
    def state(self) -> str:
        return "enabled" if self.bound else "disabled"

    @property
    def mode_name(self) -> str:
        """What ``list`` shows: the mode, "unbound", or "unknown(<driver>)"."""
        if self.driver is None:
            return "unbound"
        m = self.mode
        return m.value if m else f"unknown({self.driver})"


@dataclass(frozen=True)
class MemoryBlock:
    id: int
    state: str  # online / offline / going-offline
    zones: str | None = None  # valid_zones, if read
    removable: bool | None = None

    @property
    def name(self) -> str:
        return f"memory{self.id}"

    @property
    def online(self) -> bool:
        return self.state.startswith("online")


@dataclass
class DeviceMemory:
    """The memory blocks a device's ranges cover, with those currently present in sysfs."""

    block_size: int
    ids: list[int]  # every whole block inside the ranges (what kmem would hot-add)
    blocks: list[MemoryBlock] = field(default_factory=list)  # present ones, in id order

    @property
    def online(self) -> list[MemoryBlock]:
        return [b for b in self.blocks if b.online]

    @property
    def offline(self) -> list[MemoryBlock]:
        return [b for b in self.blocks if not b.online]


# --------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------


def dev_rel(name: str) -> str:
    return f"{DAX_DEVICES}/{name}"


def valid_name(name: str) -> bool:
    return _NAME_RE.match(name) is not None


def _sort_key(name: str) -> tuple[int, int]:
    m = _NAME_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else (1 << 30, 0)


def device_names(sysfs: Sysfs) -> list[str]:
    """Names on the dax bus plus legacy class devices, in region/id order."""
    names = {n for n in sysfs.listdir(DAX_DEVICES) if valid_name(n)}
    names |= {n for n in sysfs.listdir(DAX_CLASS) if valid_name(n)}
    return sorted(names, key=_sort_key)


def _int(sysfs: Sysfs, rel: str, default: int | None = None, base: int = 0) -> int | None:
    text = sysfs.read_or(rel)
    if text is None:
        return default
    try:
        return int(text.strip(), base)
    except ValueError:
        return default


def read_region(sysfs: Sysfs, region_path: str) -> Region:
    attrs = f"{region_path}/dax_region"
    rid = _int(sysfs, f"{attrs}/id")
    avail = _int(sysfs, f"{attrs}/available_size")
    return Region(
        id=rid if rid is not None else -1,
        path=region_path,
        size=_int(sysfs, f"{attrs}/size"),
        align=_int(sysfs, f"{attrs}/align"),
        available_size=avail,
        dynamic=avail is not None,  # available_size is hidden on static regions (bus.c)
    )


def read_ranges(sysfs: Sysfs, devpath: str, size: int) -> list[Range] | None:
    """Every ``mappingN`` (0400); else ``resource`` + size as one range; None if unreadable."""
    ranges: list[Range] = []
    i = 0
    while True:
        base = f"{devpath}/mapping{i}"
        if not sysfs.exists(base):
            break
        try:
            ranges.append(
                Range(
                    int(sysfs.read(f"{base}/start"), 16),
                    int(sysfs.read(f"{base}/end"), 16),
                    int(sysfs.read(f"{base}/page_offset"), 16),
                )
            )
        except (SysfsError, ValueError):
            return None
        i += 1
    if ranges:
        return ranges
    if size == 0:
        return []
    res = _int(sysfs, f"{devpath}/resource", base=16)
    if not res:
        return None
    return [Range(res, res + size - 1, 0)]


def read_device(sysfs: Sysfs, name: str) -> DaxDevice:
    """Read one device; :class:`UnknownDevice` if it is on neither the bus nor the class."""
    if sysfs.exists(dev_rel(name)):
        devpath = sysfs.realpath(dev_rel(name))
        size = _int(sysfs, f"{devpath}/size", 0) or 0
        return DaxDevice(
            name=name,
            path=devpath,
            size=size,
            align=_int(sysfs, f"{devpath}/align", 0) or 0,
            target_node=_int(sysfs, f"{devpath}/target_node", -1),  # type: ignore[arg-type]
            driver=sysfs.link_name(f"{devpath}/driver"),
            region=read_region(sysfs, os.path.dirname(devpath)),
            ranges=read_ranges(sysfs, devpath, size),
            has_chardev=sysfs.exists(f"dev/{name}"),
        )
    if sysfs.exists(f"{DAX_CLASS}/{name}"):
        devpath = sysfs.realpath(f"{DAX_CLASS}/{name}")
        # legacy layout: regionX/dax/daxX.Y -> the region is two levels up
        return DaxDevice(
            name=name,
            path=devpath,
            legacy=True,
            size=_int(sysfs, f"{devpath}/size", 0) or 0,
            driver=None,
            has_chardev=sysfs.exists(f"dev/{name}"),
        )
    raise unknown_device(sysfs, name)


def unknown_device(sysfs: Sysfs, name: str) -> UnknownDevice:
    have = device_names(sysfs)
    listing = ", ".join(have) if have else "none"
    return UnknownDevice(f"no dax device {name!r} (existing: {listing})")


def normalize_name(name: str) -> str:
    """``/dev/dax0.0`` and ``dax0.0`` both name dax0.0."""
    return os.path.basename(name.rstrip("/"))


def get_device(sysfs: Sysfs, name: str) -> DaxDevice:
    return read_device(sysfs, normalize_name(name))


def find_devices(sysfs: Sysfs, names: Iterable[str] | None = None) -> list[DaxDevice]:
    """All devices, or the named ones (UnknownDevice for the first that does not exist)."""
    if names is None:
        return [read_device(sysfs, n) for n in device_names(sysfs)]
    return [get_device(sysfs, n) for n in names]


# --------------------------------------------------------------------------------------
# memory blocks
# --------------------------------------------------------------------------------------


def block_size(sysfs: Sysfs) -> int:
    """``block_size_bytes`` is hex without ``0x`` (drivers/base/memory.c)."""
    return int(sysfs.read(f"{MEMORY}/block_size_bytes").strip(), 16)


def block_ids(ranges: Iterable[Range], bsize: int) -> list[int]:
    """The whole blocks inside each range, exactly those kmem hot-adds (it aligns inward)."""
    ids: list[int] = []
    for r in ranges:
        first = -(-r.start // bsize)
        last = (r.end + 1) // bsize  # exclusive
        ids.extend(range(first, last))
    return ids


def block_runs(ranges: Iterable[Range], bsize: int) -> list[range]:
    """The block ids of each range, as kmem hot-adds them: one run per range."""
    out = []
    for r in ranges:
        first = -(-r.start // bsize)
        last = (r.end + 1) // bsize
        if last > first:
            out.append(range(first, last))
    return out


def present_blocks(sysfs: Sysfs, ranges: Iterable[Range], bsize: int) -> list[int]:
    """The device's blocks that exist, without listing the (huge) memory directory.

    Memory is added and removed a whole range at a time: add_memory() creates every block
    device of the range or none, and remove_memory() removes all of them only if all are
    offline (mm/memory_hotplug.c), so kmem's ranges are present or absent as a unit.  Two
    existence checks per range (first and last block) therefore decide; a range that is
    only partly there (not something the kernel produces) is resolved block by block.
    """
    out: list[int] = []
    for run in block_runs(ranges, bsize):
        first = sysfs.exists(f"{MEMORY}/memory{run[0]}")
        last = sysfs.exists(f"{MEMORY}/memory{run[-1]}")
        if first and last:
            out.extend(run)
        elif first or last:
            out.extend(b for b in run if sysfs.exists(f"{MEMORY}/memory{b}"))
    return out


def block_rel(bid: int, attr: str) -> str:
    return f"{MEMORY}/memory{bid}/{attr}"


def present_block_ids(sysfs: Sysfs) -> set[int]:
    """One directory scan of all memory blocks; the block id is the number in ``memoryN``
    (the kernel names the block device after its block id, = ``phys_index``)."""
    out = set()
    for n in sysfs.listdir(MEMORY):
        if n.startswith("memory") and n[6:].isdigit():
            out.add(int(n[6:]))
    return out


def read_blocks(
    sysfs: Sysfs, ids: Iterable[int], *, zones: bool = False, removable: bool = False
) -> list[MemoryBlock]:
    """State (and optionally valid_zones/removable) of the given blocks; absent ones skipped."""
    ids = list(ids)
    states = sysfs.read_under(MEMORY, [f"memory{b}/state" for b in ids])
    zs = sysfs.read_under(MEMORY, [f"memory{b}/valid_zones" for b in ids]) if zones else [None] * len(ids)
    rms = sysfs.read_under(MEMORY, [f"memory{b}/removable" for b in ids]) if removable else [None] * len(ids)
    out = []
    for bid, st, z, rm in zip(ids, states, zs, rms, strict=True):
        if st is None:
            continue  # block went away (or never existed)
        out.append(
            MemoryBlock(
                bid,
                st.strip(),
                z.strip() if z is not None else None,
                None if rm is None else rm.strip() != "0",
            )
        )
    return out


_ZONE_NAMES = {"DMA", "DMA32", "Normal", "Movable", "Device", "none"}


def scan_blocks(sysfs: Sysfs, ids: Iterable[int]) -> list[MemoryBlock]:
    """State and zone of each present block with ONE read per block where the format allows.

    ``valid_zones`` of an online block is the single name of its zone ("none" if it spans
    zones); of an offline block, the default zone followed by the other allowed zone(s),
    so always two or more names (drivers/base/memory.c valid_zones_show).  Anything else
    (absent attribute without CONFIG_MEMORY_HOTREMOVE, odd output) falls back to ``state``.
    """
    ids = list(ids)
    zs = sysfs.read_under(MEMORY, [f"memory{b}/valid_zones" for b in ids])
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
    """valid_zones of each block (None if unreadable)."""
    ids = list(ids)
    zs = sysfs.read_under(MEMORY, [f"memory{b}/valid_zones" for b in ids])
    return {b: (z.strip() if z is not None else None) for b, z in zip(ids, zs, strict=True)}


def device_memory(sysfs: Sysfs, dev: DaxDevice, *, zones: bool = False) -> DeviceMemory | None:
    """The device's memory blocks, or None when its ranges are unreadable (not root)."""
    if dev.ranges is None:
        return None
    bsize = block_size(sysfs)
    ids = block_ids(dev.ranges, bsize)
    del zones  # scan_blocks always yields the zone of online blocks
    return DeviceMemory(bsize, ids, scan_blocks(sysfs, present_blocks(sysfs, dev.ranges, bsize)))


def compress_blocks(ids: Iterable[int]) -> str:
    """``memory32-39,memory41`` for messages; "none" if empty."""
    s = sorted(set(ids))
    if not s:
        return "none"
    parts = []
    start = prev = s[0]
    for b in [*s[1:], None]:  # type: ignore[list-item]
        if b is not None and b == prev + 1:
            prev = b
            continue
        parts.append(f"memory{start}" if start == prev else f"memory{start}-{prev}")
        if b is not None:
            start = prev = b
    return ",".join(parts)
