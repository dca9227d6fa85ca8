"""What a famfs mount is made of, shared by the mount command and its server process."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import asdict, dataclass, field

from daxmode import errors as E
from daxmode.errors import DaxmodeError
from daxmode.famfs.mount.handlers import COPY, DAX
from daxmode.fuse import kernel as K

AUTO = "auto"
SUBTYPE = "famfs"
FSTYPE = K.fstype(SUBTYPE)
"""``fuse.famfs``: the fstype /proc/self/mountinfo shows (the source is /dev/daxX.Y)."""
V1 = "famfs-v1"
"""The standalone famfs kernel module serves the files (:mod:`daxmode.famfs.mount.v1`); no server."""
MODE_FOR = {COPY: "devdax", DAX: "fsdev", V1: "devdax"}
"""The device mode each data path needs while mounted."""


@dataclass
class Target:
    """What is being mounted: a dax device by name or an image file by path."""

    kind: str  # "device" or "image"
    source: str
    """Mount source, shown in mountinfo: /dev/daxX.Y, or the image's absolute path."""
    device: str | None = None
    mode: str | None = None
    size: int = 0


@dataclass
class MountResult:
    """What ``famfs mount`` did (docs/json.md: keys shared with every command)."""

    mountpoint: str
    source: str
    device: str | None
    data_path: str
    why: str
    """Why this data path (requested, stock kernel, famfs kernel offered FUSE_DAX_FMAP, ...)."""
    previous_mode: str | None
    mode: str | None
    server_pid: int
    fstype: str = FSTYPE
    steps: list[str] = field(default_factory=list)
    files: int = 0
    directories: int = 0
    entries: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The form the server hands the waiting command (every field)."""
        return asdict(self)

    def to_json(self) -> dict[str, object]:
        """``famfs mount --json``."""
        d = asdict(self)
        d["chardev"] = d.pop("device")
        return d

    def summary(self) -> str:
        return (
            f"mounted {self.source} at {self.mountpoint} (data path {self.data_path}), "
            f"server pid {self.server_pid}"
        )


@dataclass
class UmountResult:
    """What ``famfs umount`` did: always ends unmounted (or detached, with ``lazy``)."""

    mountpoint: str
    source: str | None = None
    device: str | None = None
    server_pid: int | None = None
    steps: list[str] = field(default_factory=list)
    lazy: bool = False
    """Detached while files were open; the server serves them and then restores the mode."""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.lazy:
            return f"unmounted {self.mountpoint} lazily: the server finishes when its open files close"
        return f"unmounted {self.mountpoint}"

    def lines(self) -> list[str]:
        """The steps, then the summary unless a step already said it."""
        said = any(s.startswith(f"unmounted {self.mountpoint}") for s in self.steps)
        return self.steps if said else [*self.steps, self.summary()]

    def to_json(self) -> dict[str, object]:
        return {
            "mountpoint": self.mountpoint,
            "source": self.source,
            "chardev": self.device,
            "server_pid": self.server_pid,
            "unmounted": True,
            "lazy": self.lazy,
            "steps": self.steps,
            "warnings": self.warnings,
        }


def report_error(wfd: int, e: BaseException) -> None:
    """Tell the waiting ``mount`` command why the server stopped (one JSON line)."""
    if isinstance(e, DaxmodeError):
        msg = {"ok": False, "type": type(e).__name__, "exit_code": e.exit_code, "message": str(e)}
    else:
        msg = {"ok": False, "type": "DaxmodeError", "exit_code": 1, "message": f"{type(e).__name__}: {e}"}
    with contextlib.suppress(OSError):
        os.write(wfd, (json.dumps(msg) + "\n").encode())


def error_from(msg: dict) -> DaxmodeError:
    cls = getattr(E, str(msg.get("type")), DaxmodeError)
    if not (isinstance(cls, type) and issubclass(cls, DaxmodeError)) or cls is E.SysfsError:
        cls = DaxmodeError
    err = cls(str(msg.get("message")))
    err.exit_code = int(msg.get("exit_code", 1))
    return err


def umount_refused(mountpoint: str, e: OSError) -> DaxmodeError:
    """The error for a failed umount2 of a famfs mount: busy (files open) is the user's to fix, so it
    says how; anything else is the kernel's refusal, with its reason."""
    if e.errno == errno.EBUSY:
        return E.DeviceBusy(f"{mountpoint} is busy: files on it are open (close them, or use --lazy)")
    return E.KernelRefused(f"umount {mountpoint}: {e.strerror}")
