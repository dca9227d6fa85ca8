"""Dax devices and their regions: naming, lookup, attributes, ranges and topology.

One naming rule for every command: a device is ``daxX.Y``, ``/dev/daxX.Y`` or its sysfs
directory (``/sys/bus/dax/devices/daxX.Y`` or the ``/sys/devices/...`` path it links to).
Anything else is refused (:class:`UnknownDevice`, exit 3) rather than cut to its basename,
so ``../devices/dax0.0`` or ``/tmp/x/dax0.0`` never switch dax0.0.

A device's mode is the driver its ``driver`` link points at.  Its memory is described by its
real ranges (every ``mappingN``, else ``resource`` + ``size``), not daxctl's
``[resource, resource+size)`` span, which miscounts discontiguous devices (ndctl v81
``daxctl/lib/libdaxctl.c`` ``memblock_in_dev()``).  Topology (nvdimm namespace, CXL region) is
what configuration matches on, because device names change when namespaces or regions are
re-created (the region is the parent of the device's real sysfs directory, drivers/dax/bus.c).
"""

from __future__ import annotations

import enum
import os
import re
from typing import NamedTuple

from daxmode.errors import BadMode, InvalidArgument, SysfsError, UnknownDevice
from daxmode.kernel import paths
from daxmode.sysfs import Sysfs

_NAME = re.compile(r"dax(\d+)\.(\d+)")
_NULL_UUID = "00000000-0000-0000-0000-000000000000"


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
        key = {"famfs": "fsdev", "ram": "system-ram", "kmem": "system-ram"}.get(key, key)
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
DRIVERS = tuple(_DRIVER_OF.values())


class Range(NamedTuple):
    """One physical extent of a device; ``end`` is inclusive, as sysfs prints it."""

    start: int
    end: int
    page_offset: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start + 1


class Region(NamedTuple):
    id: int
    path: str  # the region directory (holds dax_region/), relative to the root
    size: int | None
    align: int | None  # dax_region/align is 0400
    available_size: int | None  # only dynamic regions have it
    dynamic: bool

    @property
    def shown_path(self) -> str:
        """As daxctl prints it: without the ``/sys/devices`` prefix."""
        return ("/" + self.path).removeprefix("/sys/devices")


class DaxDevice(NamedTuple):
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
    def mode_name(self) -> str:
        """What ``list`` shows: the mode, "unbound", or "unknown(<driver>)"."""
        if self.driver is None:
            return "unbound"
        m = self.mode
        return m.value if m else f"unknown({self.driver})"


# --- naming ------------------------------------------------------------------------------------


def parse_name(name: str) -> tuple[int, int]:
    """``"dax3.1"`` -> ``(3, 1)``; only the bare name (see :func:`resolve_name` for user input)."""
    m = _NAME.fullmatch(name)
    if not m:
        raise UnknownDevice(f"{name!r} is not a dax device name (expected daxX.Y)")
    return int(m.group(1)), int(m.group(2))


def is_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def _sort_key(name: str) -> tuple[int, int]:
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else (1 << 30, 0)


def resolve_name(sysfs: Sysfs, arg: str) -> str:
    """The device a user's argument names: ``daxX.Y``, ``/dev/daxX.Y`` or its sysfs directory.

    A sysfs path must resolve to the device's own directory; a bare path that merely ends in
    ``daxX.Y`` names nothing."""
    text = arg.strip()
    if is_name(text):
        return text
    if text.startswith("/dev/") and is_name(text[5:]):
        return text[5:]
    base = os.path.basename(text.rstrip("/"))
    if (
        text.startswith("/sys/")
        and is_name(base)
        and sysfs.exists(paths.device_dir(base))
        and sysfs.realpath(text.lstrip("/")) == sysfs.realpath(paths.device_dir(base))
    ):
        return base
    raise UnknownDevice(
        f"{arg!r} does not name a dax device: use daxX.Y, /dev/daxX.Y or /sys/bus/dax/devices/daxX.Y"
    )


def device_names(sysfs: Sysfs) -> list[str]:
    """Names on the dax bus plus legacy class devices, in region/id order."""
    names = {n for n in sysfs.listdir(paths.DAX_DEVICES) if is_name(n)}
    names |= {n for n in sysfs.listdir(paths.DAX_CLASS) if is_name(n)}
    return sorted(names, key=_sort_key)


def bus_device_names(sysfs: Sysfs) -> list[str]:
    """Devices on the dax bus only (the ones that can be reconfigured)."""
    return sorted((n for n in sysfs.listdir(paths.DAX_DEVICES) if is_name(n)), key=_sort_key)


def unknown_device(sysfs: Sysfs, name: str) -> UnknownDevice:
    have = device_names(sysfs)
    return UnknownDevice(f"no dax device {name!r} (existing: {', '.join(have) if have else 'none'})")


# --- reading -----------------------------------------------------------------------------------


def read_int(sysfs: Sysfs, rel: str, default: int | None = None, base: int = 0) -> int | None:
    """An integer attribute, or ``default`` if absent, unreadable (0400) or not a number."""
    text = sysfs.read_or(rel)
    if text is None:
        return default
    try:
        return int(text.strip(), base)
    except ValueError:
        return default


def read_region(sysfs: Sysfs, region_path: str) -> Region:
    attrs = f"{region_path}/dax_region"
    rid = read_int(sysfs, f"{attrs}/id")
    avail = read_int(sysfs, f"{attrs}/available_size")
    return Region(
        id=rid if rid is not None else -1,
        path=region_path,
        size=read_int(sysfs, f"{attrs}/size"),
        align=read_int(sysfs, f"{attrs}/align"),
        available_size=avail,
        dynamic=avail is not None,  # available_size is hidden on static regions (bus.c)
    )


def read_ranges(sysfs: Sysfs, devpath: str, size: int) -> list[Range] | None:
    """Every ``mappingN`` (0400); else ``resource`` + size as one range; None if unreadable."""
    ranges: list[Range] = []
    i = 0
    while sysfs.exists(f"{devpath}/mapping{i}"):
        base = f"{devpath}/mapping{i}"
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
    res = read_int(sysfs, f"{devpath}/resource", base=16)
    if not res:
        return None
    return [Range(res, res + size - 1, 0)]


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def read_device(sysfs: Sysfs, name: str) -> DaxDevice:
    """Read one device by its bare name; :class:`UnknownDevice` if on neither the bus nor the class."""
    if sysfs.exists(paths.device_dir(name)):
        devpath = sysfs.realpath(paths.device_dir(name))
        size = read_int(sysfs, f"{devpath}/size", 0) or 0
        return DaxDevice(
            name=name,
            path=devpath,
            size=size,
            align=read_int(sysfs, f"{devpath}/align", 0) or 0,
            target_node=_or(read_int(sysfs, f"{devpath}/target_node"), -1),
            driver=sysfs.link_name(f"{devpath}/driver"),
            region=read_region(sysfs, os.path.dirname(devpath)),
            ranges=read_ranges(sysfs, devpath, size),
            has_chardev=sysfs.exists(paths.dev_node(name)),
        )
    if sysfs.exists(f"{paths.DAX_CLASS}/{name}"):
        devpath = sysfs.realpath(f"{paths.DAX_CLASS}/{name}")
        return DaxDevice(
            name=name,
            path=devpath,
            legacy=True,
            size=read_int(sysfs, f"{devpath}/size", 0) or 0,
            has_chardev=sysfs.exists(paths.dev_node(name)),
        )
    raise unknown_device(sysfs, name)


def existing_name(sysfs: Sysfs, arg: str) -> str:
    """The bare name of the device a user named, which exists (on the bus or the legacy class);
    UnknownDevice otherwise.  Reads no attribute."""
    name = resolve_name(sysfs, arg)
    if sysfs.exists(paths.device_dir(name)) or sysfs.exists(f"{paths.DAX_CLASS}/{name}"):
        return name
    raise unknown_device(sysfs, name)


def get_device(sysfs: Sysfs, arg: str) -> DaxDevice:
    """The device a user named (any accepted form), read from sysfs."""
    return read_device(sysfs, resolve_name(sysfs, arg))


def find_devices(sysfs: Sysfs, args: list[str] | None = None) -> list[DaxDevice]:
    """All devices, or the named ones (UnknownDevice for the first that does not exist)."""
    if args is None:
        return [read_device(sysfs, n) for n in device_names(sysfs)]
    return [get_device(sysfs, a) for a in args]


def driver_of(sysfs: Sysfs, name: str) -> str | None:
    """The driver bound to a bus device now, or None."""
    return sysfs.link_name(f"{paths.device_dir(name)}/driver")


def node_path(sysfs: Sysfs, name: str) -> str:
    """The character device's real path under the root (what famfs maps)."""
    return str(sysfs.path(paths.dev_node(name)))


def has_node(sysfs: Sysfs, name: str) -> bool:
    return sysfs.exists(paths.dev_node(name))


# --- topology ----------------------------------------------------------------------------------


class DeviceFacts(NamedTuple):
    """What configuration can match a device by; None where it does not apply."""

    name: str
    region_id: int
    region_path: str
    size: int | None
    namespace: str | None = None
    namespace_uuid: str | None = None
    nvdimm_uuid: str | None = None
    cxl_region: str | None = None
    cxl_region_uuid: str | None = None

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self._asdict().items() if v is not None}


def _read_opt(sysfs: Sysfs, rel: str) -> str | None:
    text = sysfs.read_or(rel)
    return text.strip() or None if text is not None else None


def _uuid(sysfs: Sysfs, rel: str) -> str | None:
    text = _read_opt(sysfs, rel)
    return None if text is None or text == _NULL_UUID else text.lower()


def region_dir(sysfs: Sysfs, name: str) -> str:
    """The directory holding ``dax_region/`` for a bus device: the parent of its real directory."""
    if not sysfs.exists(paths.device_dir(name)):
        raise unknown_device(sysfs, name)
    return os.path.dirname(sysfs.realpath(paths.device_dir(name)))


def device_facts(sysfs: Sysfs, name: str) -> DeviceFacts:
    """Namespace (pmem: the region directory is the nd_dax device, its ``namespace`` a sibling
    with ``uuid``; its own ``uuid`` is what daxctl.conf.d calls ``nvdimm.uuid``) and CXL region
    (the nearest ``regionN`` ancestor that is a device on the CXL bus)."""
    region_id, _ = parse_name(name)
    rdir = region_dir(sysfs, name)
    size = read_int(sysfs, f"{paths.device_dir(name)}/size")
    namespace = namespace_uuid = nvdimm_uuid = None
    ns = _read_opt(sysfs, f"{rdir}/namespace")
    if ns is not None:
        namespace = ns
        namespace_uuid = _uuid(sysfs, f"{os.path.dirname(rdir)}/{ns}/uuid")
        nvdimm_uuid = _uuid(sysfs, f"{rdir}/uuid")
    cxl = _cxl_region_of(sysfs, rdir)
    return DeviceFacts(
        name=name,
        region_id=region_id,
        region_path=rdir,
        size=size,
        namespace=namespace,
        namespace_uuid=namespace_uuid,
        nvdimm_uuid=nvdimm_uuid,
        cxl_region=cxl,
        cxl_region_uuid=_uuid(sysfs, f"{paths.CXL_DEVICES}/{cxl}/uuid") if cxl else None,
    )


def _cxl_region_of(sysfs: Sysfs, rdir: str) -> str | None:
    path = rdir
    while path and path not in ("/", "."):
        base = os.path.basename(path)
        if re.fullmatch(r"region\d+", base):
            link = f"{paths.CXL_DEVICES}/{base}"
            if sysfs.exists(link) and sysfs.realpath(link) == path:
                return base
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return None


def parse_region(text: str | int) -> int:
    """A dax region as the user names it: ``N``, ``regionN`` (daxctl -r) or ``daxN``."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(?:region|dax)?(\d+)", text.strip())
    if not m:
        raise InvalidArgument(f"bad region {text!r}: expected N or regionN")
    return int(m.group(1))


def region_devices(sysfs: Sysfs, region_id: int) -> list[str]:
    return [n for n in bus_device_names(sysfs) if parse_name(n)[0] == region_id]


def region_ids(sysfs: Sysfs) -> list[int]:
    return sorted({parse_name(n)[0] for n in bus_device_names(sysfs)})


def region_attr_dir(sysfs: Sysfs, region_id: int) -> str:
    """``<regionpath>/dax_region``; every live region has device .0 (bus.c never deletes id 0)."""
    devices = region_devices(sysfs, region_id)
    if not devices:
        have = ", ".join(f"region{r}" for r in region_ids(sysfs)) or "none"
        raise UnknownDevice(f"unknown dax region {region_id}; regions: {have}")
    return f"{region_dir(sysfs, devices[0])}/dax_region"
