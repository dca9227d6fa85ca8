"""``daxmode famfs status``: what this host can do with famfs, and what is mounted, changing nothing.

Mounting needs only root and ``/dev/fuse``: daxmode's own server serves famfs on any kernel.  The
data path a mount would get depends on the kernel: ``dax`` on a famfs (V10 fuse series) kernel with
the fsdev_dax driver, ``famfs-v1`` on a kernel with the standalone famfs module, ``copy`` everywhere
else.  famfs's own tools are listed but optional.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field

from daxmode.errors import DaxmodeError
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.identity import read_system_uuid
from daxmode.famfs.media.volume import has_superblock
from daxmode.famfs.medium import open_device
from daxmode.famfs.mount.command import MountStatus, mounts
from daxmode.fsdev import mounted_at
from daxmode.fuse.kernel import DEV_FUSE
from daxmode.kernel.features import KernelSupport, Tools, detect_kernel, find_tools
from daxmode.sysfs import Sysfs


def missing_for_mount(sysfs: Sysfs) -> list[str]:
    """Plain-words reasons ``daxmode famfs mount`` cannot work here; [] when it can."""
    out = []
    if sysfs.is_real and os.geteuid() != 0:
        out.append("mounting needs root")
    if not os.path.exists(DEV_FUSE):
        out.append(f"{DEV_FUSE} is missing: the kernel has no FUSE (modprobe fuse)")
    return out


def best_data_path(ks: KernelSupport) -> tuple[str, str]:
    """The data path ``--data-path auto`` picks on this kernel (before its INIT probe), and why."""
    if (ks.famfs_v1 or ks.v1_module_installed) and not ks.fuse_famfs:
        return "famfs-v1", "standalone famfs kernel module: the kernel maps each file (FAMFSIOC_MAP_CREATE)"
    if ks.fuse_famfs and ks.fsdev_driver:
        return "dax", "famfs fuse kernel with fsdev_dax: the kernel maps files by DAX (if INIT offers it)"
    if ks.fuse_famfs:
        return "copy", "famfs fuse kernel but no fsdev_dax driver: data is copied by the server"
    return "copy", "stock kernel: data is copied by the server from the devdax mapping"


@dataclass
class DeviceStatus:
    """One dax device as famfs sees it."""

    device: str
    mode: str
    size: int
    mounted_at: list[str] = field(default_factory=list)
    mounts: list[tuple[str, str]] = field(default_factory=list)
    """(mount point, data path) of daxmode's mounts of it."""
    famfs: str | None = None
    """What its superblock says, when it can be read without changing anything."""

    def line(self) -> str:
        extra = f", mounted at {', '.join(self.mounted_at)}" if self.mounted_at else ""
        fam = f"; {self.famfs}" if self.famfs is not None else ""
        return f"{self.device}: {self.mode}, {self.size} bytes{extra}{fam}"

    def to_json(self) -> dict[str, object]:
        return {
            "chardev": self.device,
            "mode": self.mode,
            "size": self.size,
            "mounted_at": self.mounted_at,
            "mounts": [{"mountpoint": mp, "data_path": dp} for mp, dp in self.mounts],
            "famfs": self.famfs,
        }


@dataclass
class Status:
    """``famfs status``: kernel support, tools, host identity, devices and daxmode's mounts."""

    kernel: KernelSupport
    data_path: str
    data_path_why: str
    tools: Tools
    system_uuid: uuid.UUID | None
    missing_for_mount: list[str]
    devices: list[DeviceStatus]
    mounts: list[MountStatus]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "kernel": asdict(self.kernel)
            | {"data_path": self.data_path, "data_path_why": self.data_path_why},
            "tools": asdict(self.tools),
            "system_uuid": str(self.system_uuid) if self.system_uuid else None,
            "missing_for_mount": self.missing_for_mount,
            "devices": [d.to_json() for d in self.devices],
            "mounts": [m.to_json() for m in self.mounts],
            "warnings": self.warnings,
        }


def status(sysfs: Sysfs) -> Status:
    """Kernel support, tools, host role, every dax device's mode and every daxmode famfs mount."""
    from daxmode.kernel.devices import find_devices

    ks = detect_kernel(sysfs)
    ours = mounts(sysfs)
    devices = []
    for dev in find_devices(sysfs):
        d = DeviceStatus(dev.name, dev.mode_name, dev.size, mounted_at(sysfs, dev.name))
        d.mounts = [(m.mountpoint, m.data_path) for m in ours if m.device == dev.name]
        if dev.mode_name == "devdax" and not d.mounted_at:
            d.famfs = _peek(sysfs, dev.name)
        elif dev.mode_name == "fsdev" and not d.mounted_at:
            d.famfs = "unknown (fsdev devices cannot be read without switching to devdax)"
        devices.append(d)
    path, why = best_data_path(ks)
    return Status(
        ks, path, why, find_tools(), read_system_uuid(sysfs), missing_for_mount(sysfs), devices, ours
    )


def _peek(sysfs: Sysfs, name: str) -> str:
    try:
        with open_device(sysfs, name, writable=False) as m:
            if not has_superblock(m.buf):
                return "no famfs superblock"
            sb = L.unpack_superblock(memoryview(m.buf)[: L.SB_SIZE])
            me = read_system_uuid(sysfs)
            role = "master" if me == sb.system_uuid else "client"
            return f"famfs v{sb.version}, uuid {sb.uuid}, this host is {role}"
    except DaxmodeError as e:
        return f"unreadable: {e}"
