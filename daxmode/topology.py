"""Where a dax device sits: its dax region, nvdimm namespace and CXL region.

Configuration entries (daxmode.d, daxctl.conf.d) name devices by these facts
rather than by ``daxX.Y``, because device names can change when namespaces or
regions are re-created while the namespace / CXL region identity stays.

Layouts this module reads (all relative to the Sysfs root):

* every device: ``sys/bus/dax/devices/daxX.Y`` is a link into ``/sys/devices``;
  the *region directory* is the parent of its target and holds ``dax_region/``
  (daxctl.md 1.1, 1.3).  The region id is parsed from the name, as daxctl does.
* pmem (libnvdimm): the region directory is the nd_dax device
  ``.../ndbusN/regionN/daxX.Y``; its ``namespace`` attribute names the backing
  namespace (``namespaceX.Y``, a sibling directory with ``uuid``), and its own
  ``uuid`` is the dax info-block uuid, which ``ndctl list`` reports as ``uuid``
  and daxctl.conf.d calls ``nvdimm.uuid`` (ndctl ``util/json.c`` uses
  ``ndctl_dax_get_uuid`` for devdax namespaces; the namespace's own uuid is
  ``raw_uuid``).
* CXL: the region directory is ``.../regionN/dax_regionN``; an ancestor named
  ``regionN`` that is also ``sys/bus/cxl/devices/regionN`` is the CXL region,
  with ``uuid`` (empty or all-zero for RAM regions on some kernels).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

from daxmode.errors import InvalidArgument, SysfsError, UnknownDevice
from daxmode.sysfs import Sysfs

DAX_DEVICES = "sys/bus/dax/devices"
CXL_DEVICES = "sys/bus/cxl/devices"

_NAME = re.compile(r"^dax(\d+)\.(\d+)$")
_NULL_UUID = "00000000-0000-0000-0000-000000000000"


def parse_name(name: str) -> tuple[int, int]:
    """``"dax3.1"`` -> ``(3, 1)``; accepts ``/dev/dax3.1`` like daxctl (basename)."""
    m = _NAME.match(os.path.basename(name.strip()))
    if not m:
        raise UnknownDevice(f"{name!r} is not a dax device name (expected daxX.Y)")
    return int(m.group(1)), int(m.group(2))


def normalize_name(name: str) -> str:
    region, dev = parse_name(name)
    return f"dax{region}.{dev}"


def device_names(sysfs: Sysfs) -> list[str]:
    """All devices on the dax bus, in (region, id) order."""
    names = [n for n in sysfs.listdir(DAX_DEVICES) if _NAME.match(n)]
    return sorted(names, key=parse_name)


def region_dir(sysfs: Sysfs, name: str) -> str:
    """The directory (relative to the root) holding ``dax_region/`` for a device."""
    rel = f"{DAX_DEVICES}/{name}"
    if not sysfs.exists(rel):
        raise UnknownDevice(_unknown(sysfs, name))
    return os.path.dirname(sysfs.realpath(rel))


def _unknown(sysfs: Sysfs, name: str) -> str:
    known = device_names(sysfs)
    return f"unknown device {name}; devices: {', '.join(known) if known else 'none'}"


def _read_opt(sysfs: Sysfs, rel: str) -> str | None:
    """An attribute's text, or None if absent, unreadable (root-only) or empty."""
    try:
        text = sysfs.read(rel).strip()
    except SysfsError:
        return None
    return text or None


def _uuid(sysfs: Sysfs, rel: str) -> str | None:
    text = _read_opt(sysfs, rel)
    if text is None or text == _NULL_UUID:
        return None
    return text.lower()


@dataclass(frozen=True)
class DeviceFacts:
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
        return {k: v for k, v in asdict(self).items() if v is not None}


def device_facts(sysfs: Sysfs, name: str) -> DeviceFacts:
    name = normalize_name(name)
    region_id, _ = parse_name(name)
    rdir = region_dir(sysfs, name)
    size_text = _read_opt(sysfs, f"{DAX_DEVICES}/{name}/size")
    size = int(size_text, 0) if size_text is not None and size_text.isdigit() else None

    namespace = namespace_uuid = nvdimm_uuid = None
    ns = _read_opt(sysfs, f"{rdir}/namespace")
    if ns is not None:
        # pmem: rdir is the nd_dax device; the namespace is its sibling.
        namespace = ns
        namespace_uuid = _uuid(sysfs, f"{os.path.dirname(rdir)}/{ns}/uuid")
        nvdimm_uuid = _uuid(sysfs, f"{rdir}/uuid")

    cxl_region = cxl_uuid = None
    cxl = _cxl_region_of(sysfs, rdir)
    if cxl is not None:
        cxl_region = cxl
        cxl_uuid = _uuid(sysfs, f"{CXL_DEVICES}/{cxl}/uuid")

    return DeviceFacts(
        name=name,
        region_id=region_id,
        region_path=rdir,
        size=size,
        namespace=namespace,
        namespace_uuid=namespace_uuid,
        nvdimm_uuid=nvdimm_uuid,
        cxl_region=cxl_region,
        cxl_region_uuid=cxl_uuid,
    )


def _cxl_region_of(sysfs: Sysfs, rdir: str) -> str | None:
    """The nearest ancestor of ``rdir`` that is a device on the CXL bus named regionN."""
    path = rdir
    while path and path not in ("/", "."):
        base = os.path.basename(path)
        if re.fullmatch(r"region\d+", base):
            link = f"{CXL_DEVICES}/{base}"
            if sysfs.exists(link) and sysfs.realpath(link) == path:
                return base
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return None


# --- dax regions -----------------------------------------------------------------------------------


def parse_region(text: str) -> int:
    """A dax region as the user names it: ``N``, ``regionN`` or ``daxN`` (daxctl -r accepts the first two)."""
    m = re.fullmatch(r"(?:region|dax)?(\d+)", text.strip())
    if not m:
        raise InvalidArgument(f"bad region {text!r}: expected N or regionN")
    return int(m.group(1))


def region_devices(sysfs: Sysfs, region_id: int) -> list[str]:
    return [n for n in device_names(sysfs) if parse_name(n)[0] == region_id]


def region_attr_dir(sysfs: Sysfs, region_id: int) -> str:
    """``<regionpath>/dax_region`` for a region id; every live region has device .0 (bus.c keeps id 0)."""
    devices = region_devices(sysfs, region_id)
    if not devices:
        regions = sorted({parse_name(n)[0] for n in device_names(sysfs)})
        have = ", ".join(f"region{r}" for r in regions) or "none"
        raise UnknownDevice(f"unknown dax region {region_id}; regions: {have}")
    return f"{region_dir(sysfs, devices[0])}/dax_region"


def region_is_dynamic(sysfs: Sysfs, region_id: int) -> bool:
    """Dynamic (hmem, CXL RAM) regions show ``create``; static (pmem) ones hide it (dax_region_visible)."""
    return sysfs.exists(f"{region_attr_dir(sysfs, region_id)}/create")
