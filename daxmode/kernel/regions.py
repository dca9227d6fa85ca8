"""Dynamic dax regions (hmem, CXL RAM): sub-device create, size, align and delete.

The kernel interface (drivers/dax/bus.c ``create_store``/``delete_store``/``size_store``; ndctl
v81 ``daxctl/device.c`` ``do_create()`` uses it the same way): writing ``1`` to
``dax_region/create`` makes a 0-size unbound device, the region's *seed*; a device is sized
through its ``size`` (daxctl writes hex) while unbound; ``delete`` takes the name of an
unbound 0-size device (EBUSY for id 0, which is never deleted).  Static regions (pmem
namespaces) hide ``create``/``delete``/``available_size``.
"""

from __future__ import annotations

from daxmode.errors import InvalidArgument, KernelRefused
from daxmode.kernel import paths
from daxmode.kernel.devices import read_int, region_attr_dir
from daxmode.kernel.drivers import Action
from daxmode.kernel.memory import Write
from daxmode.sysfs import Sysfs

MiB = 1 << 20
SUBSECTION = 2 * MiB  # memremap_compat_align() on x86: the minimum device granularity
VALID_ALIGNS = (4096, 2 * MiB, 1 << 30)


def dynamic_region(sysfs: Sysfs, region_id: int) -> str:
    """The ``dax_region`` directory of a dynamic region; InvalidArgument for a static one."""
    attrs = region_attr_dir(sysfs, region_id)
    if not sysfs.exists(f"{attrs}/create"):
        raise InvalidArgument(
            f"region{region_id} is static (a pmem namespace): its device size is fixed; "
            "only hmem and CXL RAM regions have sub-devices"
        )
    return attrs


def available(sysfs: Sysfs, attrs: str) -> int:
    return read_int(sysfs, f"{attrs}/available_size", 0) or 0


def region_align(sysfs: Sysfs, attrs: str) -> int:
    """``dax_region/align`` is 0400: non-root falls back to the 2 MiB default hmem/CXL use."""
    return read_int(sysfs, f"{attrs}/align") or SUBSECTION


def seed(sysfs: Sysfs, attrs: str) -> str:
    return (sysfs.read_or(f"{attrs}/seed") or "").strip()


def granule(align: int) -> int:
    return max(align, SUBSECTION)


def check_size(size: int, align: int, what: str) -> None:
    g = granule(align)
    if size % g:
        unit = f"{g >> 20} MiB" if g >= MiB else f"{g >> 10} KiB"
        raise InvalidArgument(f"{what}: size {size:#x} is not a multiple of {unit} (max(align, 2 MiB))")


def device_size(sysfs: Sysfs, name: str) -> int:
    size = read_int(sysfs, f"{paths.device_dir(name)}/size")
    if size is None:
        raise KernelRefused(f"cannot read {sysfs.shown(paths.device_dir(name))}/size")
    return size


def create_action(attrs: str) -> Action:
    return Action("write", f"{attrs}/create", "1")


def create(sysfs: Sysfs, write: Write, attrs: str) -> str:
    """A new 0-size device; returns its name (the new seed).  Call under the bus lock:
    two creates at once would both read the same seed."""
    write(f"{attrs}/create", "1")
    name = seed(sysfs, attrs)
    if not name:
        raise KernelRefused(f"create succeeded but {sysfs.shown(attrs)}/seed is empty")
    return name


def size_action(name: str, size: int) -> Action:
    return Action("write", f"{paths.device_dir(name)}/size", f"{size:#x}")  # daxctl writes "%#llx"


def set_size(sysfs: Sysfs, write: Write, name: str, size: int) -> None:
    """Resize an unbound device and verify the kernel took it."""
    write(f"{paths.device_dir(name)}/size", f"{size:#x}")
    got = device_size(sysfs, name)
    if got != size:
        raise KernelRefused(f"{name}: size reads {got:#x} after writing {size:#x}")


def align_action(name: str, align: int) -> Action:
    return Action("write", f"{paths.device_dir(name)}/align", f"{align:#x}")


def set_align(write: Write, name: str, align: int) -> None:
    write(f"{paths.device_dir(name)}/align", f"{align:#x}")


def delete_action(attrs: str, name: str) -> Action:
    return Action("write", f"{attrs}/delete", name)


def delete(write: Write, attrs: str, name: str) -> None:
    write(f"{attrs}/delete", name)
