"""Reading and writing kernel attributes under a movable root.

This is the only module that touches sysfs, devfs and procfs files.  Paths are
given relative to the root (``"sys/bus/dax/devices"``), so tests and the
simulator move the whole world by choosing another root (``--root`` or
``DAXMODE_ROOT``).  A failed read or write becomes :class:`SysfsError`, which
names the file, the value and the errno.

A *kernel hook* may be attached: writes and module loads then go to the hook,
which plays the kernel's part (the simulator in :mod:`daxmode.sim`).  Without a
hook, writes are single ``write(2)`` calls like ``echo`` and modules load with
``modprobe``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Protocol

from daxmode.errors import KernelRefused, SysfsError

SIM_MARKER = ".daxmode-sim"
"""A directory of this name under a root says the tree is simulated (see daxmode.sim)."""


class KernelHook(Protocol):
    """What stands in for the kernel when the tree is simulated."""

    def write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        """Apply a write to ``rel`` or raise ``OSError(errno, ...)`` like the kernel."""

    def modprobe(self, sysfs: Sysfs, module: str) -> None:
        """Load ``module`` or raise ``OSError``."""


class Sysfs:
    """Attribute I/O under ``root``; nothing here knows what the attributes mean."""

    def __init__(self, root: str | os.PathLike[str] = "/", hook: KernelHook | None = None) -> None:
        self.root = Path(root)
        self.hook = hook

    @property
    def is_real(self) -> bool:
        """True when this is the running kernel's own tree (udev events apply)."""
        return self.hook is None and self.root == Path("/")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def shown(self, rel: str) -> str:
        """The path as a user should see it in messages: absolute, as on a real system."""
        return "/" + rel.lstrip("/")

    def read(self, rel: str) -> str:
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as f:
                return f.read().rstrip("\n")
        except OSError as e:
            raise SysfsError("read", self.shown(rel), e.errno or errno.EIO) from None

    def read_int(self, rel: str, base: int = 0) -> int:
        text = self.read(rel).strip()
        try:
            return int(text, base)
        except ValueError:
            raise KernelRefused(f"read {self.shown(rel)}: not a number: {text!r}") from None

    def write(self, rel: str, value: str) -> None:
        if self.hook is not None:
            try:
                self.hook.write(self, rel, value)
            except OSError as e:
                raise SysfsError("write", self.shown(rel), e.errno or errno.EIO, value) from None
            return
        data = (value + "\n").encode()
        try:
            fd = os.open(self.path(rel), os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            raise SysfsError("write", self.shown(rel), e.errno or errno.EIO, value) from None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        return self.path(rel).is_dir()

    def listdir(self, rel: str) -> list[str]:
        """Sorted entries; an absent directory is empty (sysfs directories come and go)."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SysfsError("list", self.shown(rel), e.errno or errno.EIO) from None

    def link_name(self, rel: str) -> str | None:
        """Basename of what the symlink ``rel`` resolves to, or None if there is no link."""
        p = self.path(rel)
        if not p.is_symlink():
            return None
        return os.path.basename(os.path.realpath(p))

    def realpath(self, rel: str) -> str:
        """``rel`` with symlinks resolved, relative to the root again."""
        real = Path(os.path.realpath(self.path(rel)))
        try:
            return str(real.relative_to(self.root.resolve()))
        except ValueError:
            return str(real)

    def modprobe(self, module: str) -> None:
        if self.hook is not None:
            try:
                self.hook.modprobe(self, module)
            except OSError as e:
                raise KernelRefused(f"modprobe {module} failed: {os.strerror(e.errno or errno.EIO)}") from None
            return
        try:
            proc = subprocess.run(["modprobe", module], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise KernelRefused(f"modprobe {module} failed: modprobe not found") from None
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            raise KernelRefused(f"modprobe {module} failed: {why}")


def open_root(root: str | os.PathLike[str] | None = None) -> Sysfs:
    """The Sysfs for ``root`` (default ``$DAXMODE_ROOT`` or ``/``), simulated if marked so."""
    if root is None:
        root = os.environ.get("DAXMODE_ROOT") or "/"
    base = Path(root)
    if (base / SIM_MARKER).is_dir():
        from daxmode.sim import SimKernel  # only simulated trees need it

        return Sysfs(base, SimKernel())
    return Sysfs(base)
