"""``daxmode famfs status``: what this host can do with famfs, and what is mounted, changing nothing.

Mounting needs only root and ``/dev/fuse``: daxmode's own server serves famfs on any kernel.  The
data path a mount would get depends on the kernel: ``dax`` on a famfs (V10 fuse series) kernel with
the fsdev_dax driver, ``copy`` everywhere else.  famfs's own tools are listed but optional.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from daxmode.errors import DaxmodeError
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.identity import read_system_uuid
from daxmode.famfs.media.volume import has_superblock
from daxmode.famfs.mount.command import mounts
from daxmode.fsdev import map_device, mounted_at
from daxmode.fuse.kernel import DEV_FUSE
from daxmode.kernel.features import KernelSupport, detect_kernel, find_tools
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
    if ks.fuse_famfs and ks.fsdev_driver:
        return "dax", "famfs fuse kernel with fsdev_dax: the kernel maps files by DAX (if INIT offers it)"
    if ks.fuse_famfs:
        return "copy", "famfs fuse kernel but no fsdev_dax driver: data is copied by the server"
    return "copy", "stock kernel: data is copied by the server from the devdax mapping"


def status(sysfs: Sysfs) -> dict[str, object]:
    """Kernel support, tools, host role, every dax device's mode and every daxmode famfs mount."""
    from daxmode.kernel.devices import find_devices

    ks = detect_kernel(sysfs)
    ours = mounts(sysfs)
    by_device: dict[str, list[dict[str, object]]] = {}
    for m in ours:
        if m["device"]:
            by_device.setdefault(str(m["device"]), []).append(m)
    devices = []
    for dev in find_devices(sysfs):
        d: dict[str, object] = {"device": dev.name, "mode": dev.mode_name, "size": dev.size}
        where = mounted_at(sysfs, dev.name)
        if where:
            d["mounted_at"] = where
        if dev.name in by_device:
            d["mounts"] = [
                {"mountpoint": m["mountpoint"], "data_path": m["data_path"]} for m in by_device[dev.name]
            ]
        if dev.mode_name == "devdax" and not where:
            d["famfs"] = _peek(sysfs, dev.name)
        elif dev.mode_name == "fsdev" and not where:
            d["famfs"] = "unknown (fsdev devices cannot be read without switching to devdax)"
        devices.append(d)
    sysuuid = read_system_uuid(sysfs)
    path, why = best_data_path(ks)
    return {
        "kernel": asdict(ks) | {"data_path": path, "data_path_why": why},
        "tools": asdict(find_tools()),
        "system_uuid": str(sysuuid) if sysuuid else None,
        "missing_for_mount": missing_for_mount(sysfs),
        "devices": devices,
        "mounts": ours,
    }


def _peek(sysfs: Sysfs, name: str) -> str:
    try:
        with map_device(sysfs, name, writable=False) as m:
            if not has_superblock(m.buf):
                return "no famfs superblock"
            sb = L.unpack_superblock(memoryview(m.buf)[: L.SB_SIZE])
            me = read_system_uuid(sysfs)
            role = "master" if me == sb.system_uuid else "client"
            return f"famfs v{sb.version}, uuid {sb.uuid}, this host is {role}"
    except DaxmodeError as e:
        return f"unreadable: {e}"
