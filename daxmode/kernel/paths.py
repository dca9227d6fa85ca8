"""Every kernel path daxmode touches, relative to the Sysfs root.

The kernel layer is the only code that names these; everything above it asks the layer
for devices, blocks and drivers.  Sources: the kernel's Documentation/ABI/testing/sysfs-bus-dax
and sysfs-devices-memory, drivers/dax/bus.c (``dev_dax_attributes[]``, the region's
``dax_region/`` group, the drivers' ``new_id``/``remove_id``), drivers/base/memory.c.
"""

from __future__ import annotations

DAX_BUS = "sys/bus/dax"
DAX_DEVICES = f"{DAX_BUS}/devices"
DAX_DRIVERS = f"{DAX_BUS}/drivers"
DAX_CLASS = "sys/class/dax"  # the legacy device model (dax_pmem_compat)
MEMORY = "sys/devices/system/memory"
NODE = "sys/devices/system/node"
AUTO_ONLINE = f"{MEMORY}/auto_online_blocks"
BLOCK_SIZE = f"{MEMORY}/block_size_bytes"
CXL_DEVICES = "sys/bus/cxl/devices"
MOUNTINFO = "proc/self/mountinfo"
PROC_LOCKS = "/proc/locks"  # the real system's, never under a moved root
PROC_SELF_FD = "/proc/self/fd"  # magic links to what a descriptor holds (kernel.mountpoint)
UDEV_CONTROL = "run/udev/control"


def device_dir(name: str) -> str:
    """The bus link of a device (``sys/bus/dax/devices/daxX.Y``); resolve it for the real directory."""
    return f"{DAX_DEVICES}/{name}"


def driver_dir(driver: str) -> str:
    return f"{DAX_DRIVERS}/{driver}"


def driver_attr(driver: str, attr: str) -> str:
    """``bind``, ``unbind``, ``new_id`` or ``remove_id`` of a dax driver."""
    return f"{DAX_DRIVERS}/{driver}/{attr}"


def block_attr(block_id: int, attr: str) -> str:
    return f"{MEMORY}/memory{block_id}/{attr}"


def proc_stat(pid: int) -> str:
    return f"/proc/{pid}/stat"


def fuse_bdi_attr(connection: int, attr: str) -> str:
    """A FUSE connection's backing-device attribute (``/sys/class/bdi/0:N/read_ahead_kb``)."""
    return f"/sys/class/bdi/0:{connection}/{attr}"


def fd_path(fd: int) -> str:
    """``/proc/self/fd/N``: the magic link through which the kernel reaches what ``fd`` holds (a path
    under a held directory, or a socket name beyond ``sun_path``'s 108 bytes)."""
    return f"{PROC_SELF_FD}/{fd}"


def dev_node(name: str) -> str:
    """The character device (``dev/daxX.Y``)."""
    return f"dev/{name}"
