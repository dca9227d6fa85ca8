"""The errors daxmode reports, each with its own documented exit code.

Every failure the CLI can meet is one of these; the CLI prints ``str(err)`` as a
single stderr line and exits with ``err.exit_code``.  Codes are stable API
(docs/modes.md, "Exit codes"): scripts branch on them.
"""

from __future__ import annotations

import errno as _errno
import os


class DaxmodeError(Exception):
    """Base class: one line of text, an exit code, and what else the user should be told
    (``warnings``: printed before the error, e.g. what was repaired of an interrupted run)."""

    exit_code = 1

    def __init__(self, *args: object, warnings: list[str] | None = None) -> None:
        super().__init__(*args)
        self.warnings: list[str] = list(warnings or [])


class UnknownDevice(DaxmodeError):
    exit_code = 3


class BadMode(DaxmodeError):
    exit_code = 4


class NotRoot(DaxmodeError):
    exit_code = 5


class LegacyDeviceModel(DaxmodeError):
    exit_code = 6


class DeviceBusy(DaxmodeError):
    """Mounted, memory online without --force, or otherwise in use."""

    exit_code = 7


class KernelRefused(DaxmodeError):
    """A sysfs write or read failed; the device was not changed."""

    exit_code = 8


class RolledBack(DaxmodeError):
    """A step failed after changes began; the device is back in its starting mode."""

    exit_code = 9


class LeftPartial(DaxmodeError):
    """A step failed and so did the rollback; the message names the state left."""

    exit_code = 10


class InvalidArgument(DaxmodeError):
    """Bad input other than device or mode (sizes, config files, paths)."""

    exit_code = 11


class FamfsError(DaxmodeError):
    """famfs metadata is missing or corrupt (and any famfs failure without a code of its own)."""

    exit_code = 12


class FamfsNoSpace(FamfsError):
    """No room: not enough free allocation units, or every log slot is used."""

    exit_code = 14


class FamfsExists(FamfsError):
    """The name is taken (a file or directory of that name is already in the log)."""

    exit_code = 15


class FamfsNotFound(FamfsError):
    """No such famfs file or directory (or parent directory) in the log."""

    exit_code = 16


class FamfsClientHost(FamfsError):
    """This host is a famfs client: only the master (the superblock's system UUID) may write."""

    exit_code = 17


class UnsafePath(DaxmodeError):
    """A file or directory daxmode trusts as root is not safe: wrong owner, group/other
    writable, or a symlink where a real file must be (another user may have planted it)."""

    exit_code = 13


class SysfsError(KernelRefused):
    """An attribute read or write failed; names the file and the errno."""

    def __init__(self, op: str, path: str, err: int, value: str | None = None) -> None:
        self.op = op
        self.path = path
        self.errno = err
        self.value = value
        name = _errno.errorcode.get(err, str(err))
        what = f"{op} {value!r} to {path}" if value is not None else f"{op} {path}"
        super().__init__(f"{what} failed: {os.strerror(err)} ({name})")


EXIT_CODES: dict[int, str] = {
    0: "success (including: device already in the requested mode)",
    1: "unexpected internal error",
    2: "usage error (unknown option, missing argument)",
    UnknownDevice.exit_code: "unknown device",
    BadMode.exit_code: "unknown or disallowed mode",
    NotRoot.exit_code: "needs root",
    LegacyDeviceModel.exit_code: "device uses the legacy /sys/class/dax model",
    DeviceBusy.exit_code: "device busy: mounted, or memory online without --force",
    KernelRefused.exit_code: "the kernel refused a sysfs read or write; nothing changed",
    RolledBack.exit_code: "a step failed; the device was rolled back to its starting mode",
    LeftPartial.exit_code: "a step and its rollback failed; the message names the state left",
    InvalidArgument.exit_code: "invalid argument or configuration file",
    FamfsError.exit_code: "famfs metadata missing or corrupt (fsck found problems)",
    FamfsNoSpace.exit_code: "famfs: no space (allocation units or log slots)",
    FamfsExists.exit_code: "famfs: the name exists (cp needs --overwrite)",
    FamfsNotFound.exit_code: "famfs: no such file or directory in the log",
    FamfsClientHost.exit_code: "famfs: this host is a client; only the master may write",
    UnsafePath.exit_code: "unsafe file or directory: wrong owner or mode, or a symlink (another user's?)",
    130: "interrupted by SIGINT, SIGTERM or SIGHUP; a transition in progress was rolled back",
}
