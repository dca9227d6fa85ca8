"""What a running (or killed) famfs mount server leaves behind: one record per mount point.

``/run/daxmode/mounts/<mount point, %-quoted>.json`` (:mod:`daxmode.runstate`: root-owned 0700,
written atomically, one key encoding) says which device or image is mounted where, with which
data path, which mode the device had before the mount and which it was put in, and the server's
pid and start time.  ``daxmode famfs umount``
reads it to unmount and restore the mode even when the server was killed with SIGKILL; the
server deletes it after a clean unmount.  /run is a tmpfs, so records never outlive a reboot,
and neither do the mounts.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daxmode import runstate
from daxmode.kernel.procs import process_start
from daxmode.sysfs import Sysfs


@dataclass
class MountRecord:
    mountpoint: str
    source: str
    """The mount source shown in /proc/self/mountinfo: /dev/daxX.Y, or the image file's path."""
    device: str | None
    """The dax device name (dax0.0), None for an image file."""
    data_path: str
    fstype: str
    previous_mode: str | None = None
    """The device's mode before the mount; restored at unmount."""
    mode: str | None = None
    """The mode the mount needs (devdax for copy, fsdev for dax)."""
    pid: int = 0
    pid_start: int = 0
    """Server start time, clock ticks since boot (/proc/PID/stat field 22): guards against pid reuse."""
    phase: str = "starting"
    """starting -> live; a record left in "starting" belongs to a server that died while mounting."""
    started: float = field(default_factory=time.time)
    log: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_STORE = runstate.Records("mounts")


def state_dir(sysfs: Sysfs) -> Path:
    return Path(sysfs.fspath(f"{runstate.RUN_DIR}/{_STORE.sub}"))


def record_path(sysfs: Sysfs, mountpoint: str) -> Path:
    return Path(_STORE.path(sysfs, os.path.abspath(mountpoint)))


def log_path(sysfs: Sysfs, mountpoint: str) -> Path:
    return Path(_STORE.path(sysfs, os.path.abspath(mountpoint), ".log"))


def ensure_dir(sysfs: Sysfs) -> Path:
    """run/daxmode/mounts, created 0700 and checked (:func:`daxmode.runstate.run_dir`)."""
    return Path(runstate.run_dir(sysfs, _STORE.sub))


def save(sysfs: Sysfs, rec: MountRecord) -> None:
    """Write the record atomically (a reader never sees half of it)."""
    _STORE.save(sysfs, os.path.abspath(rec.mountpoint), rec.to_dict())


def load(sysfs: Sysfs, mountpoint: str) -> MountRecord | None:
    data = _STORE.load(sysfs, os.path.abspath(mountpoint))
    return None if data is None else _record(data)


def _record(data: dict[str, Any]) -> MountRecord | None:
    try:
        return MountRecord(**{k: v for k, v in data.items() if k in MountRecord.__dataclass_fields__})
    except TypeError:
        return None


def remove(sysfs: Sysfs, mountpoint: str) -> None:
    _STORE.remove(sysfs, os.path.abspath(mountpoint))


def records(sysfs: Sysfs) -> list[MountRecord]:
    return [r for d in _STORE.all(sysfs) if (r := _record(d)) is not None]


def for_device(sysfs: Sysfs, device: str) -> list[MountRecord]:
    return [r for r in records(sysfs) if r.device == device]


def server_alive(rec: MountRecord) -> bool:
    if rec.pid <= 0:
        return False
    start = process_start(rec.pid)
    return start is not None and (rec.pid_start == 0 or start == rec.pid_start)


def is_live(sysfs: Sysfs, rec: MountRecord) -> bool:
    """A live mount of this record: its server runs, or (famfs-v1, no server) the kernel still has
    the mount with the record's fstype."""
    if rec.pid > 0:
        return server_alive(rec)
    from daxmode.kernel.mounts import mount_at

    m = mount_at(sysfs, rec.mountpoint)
    return m is not None and m.fstype == rec.fstype
