"""Reading and writing kernel attributes under a movable root.

This is the only module that touches sysfs, devfs and procfs files.  Paths are
given relative to the root (``"sys/bus/dax/devices"``), so tests and the
simulator move the whole world by choosing another root (``--root`` or
``DAXMODE_ROOT``).  A failed read or write becomes :class:`SysfsError`, which
names the file, the value and the errno.

A *kernel hook* may be attached by whoever builds the Sysfs (tests, or the CLI's
``--sim``): writes and module loads then go to the hook, which plays the kernel's part
(the simulator, :mod:`daxmode.sim`).  This module never looks for one.  Without a hook,
writes are single ``write(2)`` calls like ``echo``.
"""

from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

from daxmode.errors import InvalidArgument, SysfsError

if TYPE_CHECKING:
    from pathlib import Path


class KernelHook(Protocol):
    """What stands in for the kernel when the tree is simulated."""

    def write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        """Apply a write to ``rel`` or raise ``OSError(errno, ...)`` like the kernel."""

    def modprobe(self, sysfs: Sysfs, module: str) -> None:
        """Load ``module`` or raise ``OSError``."""


FAULT_ENV = "DAXMODE_FAULT"
"""Test-only fault injection, honoured on real and simulated roots alike.

``DAXMODE_FAULT="PATH:ERRNO:NTH[,PATH:ERRNO:NTH...]"`` makes the NTH (1-based) write to PATH
in this process fail with ERRNO (a name such as ``EBUSY`` or a number) *without* reaching the
kernel.  This is how the VM suite proves rollback on a real kernel, where most failures cannot
be provoked on demand.  PATH is absolute as a user sees it (``/sys/bus/dax/drivers/kmem/bind``).
"""


DELAY_ENV = "DAXMODE_WRITE_DELAY"
"""Test-only: seconds every write waits before reaching the kernel, so a VM test can deliver a
signal (or a SIGKILL) in the middle of a transition on the real kernel, where onlining a few
blocks takes well under a second."""


def parse_delay(text: str) -> float:
    try:
        delay = float(text or 0)
    except ValueError:
        delay = -1.0
    if not 0 <= delay <= 60:  # also refuses nan
        raise InvalidArgument(f"{DELAY_ENV}: {text!r} is not a number of seconds between 0 and 60")
    return delay


class Fault(NamedTuple):
    path: str
    err: int
    nth: int


def parse_faults(spec: str) -> list[Fault]:
    """Parse a ``DAXMODE_FAULT`` value; a malformed entry is an error, not silently ignored."""
    faults: list[Fault] = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        try:
            path, err_s, nth_s = item.rsplit(":", 2)
            err = int(err_s) if err_s.isdigit() else getattr(errno, err_s)
            faults.append(Fault("/" + path.lstrip("/"), int(err), int(nth_s)))
            if int(nth_s) < 1 or int(err) < 1:
                raise ValueError
        except (ValueError, AttributeError, TypeError):
            raise InvalidArgument(
                f"{FAULT_ENV}: bad entry {item!r} (want PATH:ERRNO:NTH, e.g. "
                "/sys/bus/dax/drivers/kmem/bind:EBUSY:1)"
            ) from None
    return faults


class WriteStats:
    """Where time goes: writes (the kernel's work) apart from everything the tool does."""

    __slots__ = ("count", "cpu_seconds", "per_path", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # this thread's CPU time inside writes (immune to preemption)
        self.per_path: dict[str, int] = {}  # kept only while DAXMODE_FAULT is set


class Sysfs:
    """Attribute I/O under ``root``; nothing here knows what the attributes mean."""

    def __init__(self, root: str | os.PathLike[str] = "/", hook: KernelHook | None = None) -> None:
        self.root = os.fspath(root)
        self.hook = hook
        self.stats = WriteStats()
        self.faults = parse_faults(os.environ.get(FAULT_ENV, ""))
        self.delay = parse_delay(os.environ.get(DELAY_ENV, ""))
        self._root_s = self.root
        self._real_root: str | None = None

    @property
    def is_real(self) -> bool:
        """True when this is the running kernel's own tree (udev events apply)."""
        return self.hook is None and os.path.normpath(self.root) == "/"

    def path(self, rel: str) -> Path:
        """``rel`` under the root as a Path (pathlib is imported here, not at start-up: it costs
        ~6 ms of every ``daxmode list``, and the hot paths use :meth:`fspath`)."""
        from pathlib import Path

        return Path(self.root) / rel.lstrip("/")

    def _p(self, rel: str) -> str:
        return os.path.join(self._root_s, rel.lstrip("/"))

    def shown(self, rel: str) -> str:
        """The path as a user should see it in messages: absolute, as on a real system."""
        return "/" + rel.lstrip("/")

    def read(self, rel: str) -> str:
        # os-level calls: a system-ram switch of a 1 TiB device reads ~20k attributes.
        try:
            fd = os.open(self._p(rel), os.O_RDONLY)
            try:
                data = os.read(fd, 65536)
                while len(data) % 65536 == 0 and data:
                    more = os.read(fd, 65536)
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
        except OSError as e:
            raise SysfsError("read", self.shown(rel), e.errno or errno.EIO) from None
        return data.decode("utf-8", "replace").rstrip("\n")

    def read_under(self, dir_rel: str, names: list[str]) -> list[str | None]:
        """Read many attributes below one directory (``memory64/state``...); None where absent.

        Opens relative to a directory descriptor: on slow path walks (sandboxes, deep test
        roots) this is several times cheaper than a full path per file, and a system-ram
        switch of a 1 TiB device reads thousands of block attributes."""
        try:
            dfd = os.open(self._p(dir_rel), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return [None] * len(names)
        out: list[str | None] = []
        try:
            for n in names:
                try:
                    fd = os.open(n, os.O_RDONLY, dir_fd=dfd)
                except OSError:
                    out.append(None)
                    continue
                try:
                    out.append(os.read(fd, 4096).decode("utf-8", "replace").rstrip("\n"))
                except OSError:
                    out.append(None)
                finally:
                    os.close(fd)
        finally:
            os.close(dfd)
        return out

    def read_or(self, rel: str, default: str | None = None) -> str | None:
        """The attribute, or ``default`` if it is absent or unreadable (hidden/0400 attributes)."""
        try:
            return self.read(rel)
        except SysfsError:
            return default

    def write(self, rel: str, value: str) -> None:
        """One write(2) of ``value``; time spent here is accounted to the kernel (``stats``)."""
        if self.faults:
            shown = self.shown(rel)
            n = self.stats.per_path.get(shown, 0) + 1
            self.stats.per_path[shown] = n
            for f in self.faults:
                if f.path == shown and f.nth == n:
                    raise SysfsError("write", shown, f.err, value)
        if self.delay:
            time.sleep(self.delay)
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            if self.hook is not None:
                self.hook.write(self, rel, value)
            else:
                fd = os.open(self._p(rel), os.O_WRONLY)
                try:
                    os.write(fd, (value + "\n").encode())
                finally:
                    os.close(fd)
        except OSError as e:
            raise SysfsError("write", self.shown(rel), e.errno or errno.EIO, value) from None
        finally:
            self.stats.count += 1
            self.stats.seconds += time.perf_counter() - t0
            self.stats.cpu_seconds += time.thread_time() - c0

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self._p(rel))

    def fspath(self, rel: str) -> str:
        """The absolute path of ``rel`` as a string (pathlib costs ~10x more on hot paths)."""
        return self._p(rel)

    def is_dir(self, rel: str) -> bool:
        return os.path.isdir(self._p(rel))

    def listdir(self, rel: str) -> list[str]:
        """Sorted entries; an absent directory is empty (sysfs directories come and go)."""
        try:
            return sorted(os.listdir(self._p(rel)))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SysfsError("list", self.shown(rel), e.errno or errno.EIO) from None

    def link_name(self, rel: str) -> str | None:
        """Basename of what the symlink ``rel`` resolves to, or None if there is no link."""
        try:
            target = os.readlink(self._p(rel))
        except OSError:
            return None
        return os.path.basename(target.rstrip("/"))

    def realpath(self, rel: str) -> str:
        """``rel`` with symlinks resolved, relative to the root again."""
        real = os.path.realpath(self._p(rel))
        if self._real_root is None:
            self._real_root = os.path.realpath(self._root_s)
        base = self._real_root.rstrip("/") + "/"
        return real[len(base) :] if real.startswith(base) else real
