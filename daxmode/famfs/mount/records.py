"""What a running (or killed) famfs mount server leaves behind: one record per mount point.

``/run/daxmode/mounts/<mount point, %-quoted>.json`` (directory root-owned, 0700) says which
device or image is mounted where, with which data path, which mode the device had before the
mount and which it was put in, and the server's pid and start time.  ``daxmode famfs umount``
reads it to unmount and restore the mode even when the server was killed with SIGKILL; the
server deletes it after a clean unmount.  /run is a tmpfs, so records never outlive a reboot,
and neither do the mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daxmode.kernel import paths
from daxmode.kernel.procs import process_start
from daxmode.sysfs import Sysfs

STATE_DIR = paths.RUN_MOUNTS


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


def state_dir(sysfs: Sysfs) -> Path:
    return Path(sysfs.path(STATE_DIR))


def _key(mountpoint: str) -> str:
    return urllib.parse.quote(os.path.abspath(mountpoint), safe="")


def record_path(sysfs: Sysfs, mountpoint: str) -> Path:
    return state_dir(sysfs) / f"{_key(mountpoint)}.json"


def log_path(sysfs: Sysfs, mountpoint: str) -> Path:
    return state_dir(sysfs) / f"{_key(mountpoint)}.log"


def ensure_dir(sysfs: Sysfs) -> Path:
    """run/daxmode (created 0700 and checked by the kernel layer), then its mounts/ (0700)."""
    from daxmode.kernel import locks

    os.close(locks.open_run_dir(sysfs))
    d = state_dir(sysfs)
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, 0o700)
    if d.is_symlink() or not d.is_dir():
        from daxmode.errors import UnsafePath

        raise UnsafePath(f"{d} is a symlink or not a directory; remove it")
    os.chmod(d, 0o700)
    return d


def save(sysfs: Sysfs, rec: MountRecord) -> None:
    """Write the record atomically (a reader never sees half of it)."""
    ensure_dir(sysfs)
    path = record_path(sysfs, rec.mountpoint)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(rec.to_dict(), f, indent=1)
    os.replace(tmp, path)


def load(sysfs: Sysfs, mountpoint: str) -> MountRecord | None:
    return _read(record_path(sysfs, mountpoint))


def _read(path: Path) -> MountRecord | None:
    try:
        data = json.loads(path.read_text())
        return MountRecord(**{k: v for k, v in data.items() if k in MountRecord.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def remove(sysfs: Sysfs, mountpoint: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(sysfs, mountpoint).unlink()


def records(sysfs: Sysfs) -> list[MountRecord]:
    d = state_dir(sysfs)
    if not d.is_dir():
        return []
    out = [r for p in sorted(d.glob("*.json")) if (r := _read(p)) is not None]
    return out


def for_device(sysfs: Sysfs, device: str) -> list[MountRecord]:
    return [r for r in records(sysfs) if r.device == device]


def server_alive(rec: MountRecord) -> bool:
    if rec.pid <= 0:
        return False
    start = process_start(rec.pid)
    return start is not None and (rec.pid_start == 0 or start == rec.pid_start)
