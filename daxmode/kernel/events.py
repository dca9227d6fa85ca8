"""Waiting for the kernel: a driver link or a device node to appear or go.

Probe and remove are synchronous in the kernel, so the condition usually holds at the first
check.  When it does not (udev still creating ``/dev`` nodes, a slow probe), wait on udev
events for the dax subsystem if this is the real root and udevd runs; otherwise poll sysfs
with a short back-off.  Always bounded by a timeout, and a deferred signal (daxmode.signals)
ends the wait at once so the transition can roll back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from daxmode import signals
from daxmode.errors import KernelRefused
from daxmode.kernel import paths
from daxmode.sysfs import Sysfs


def _udev_monitor(sysfs: Sysfs) -> Any:
    """A started pyudev monitor of dax events (pyudev has no type information: Any), or None."""
    if not (sysfs.is_real and sysfs.exists(paths.UDEV_CONTROL)):
        return None
    try:
        import pyudev  # only when a wait is actually needed: it costs ~40 ms to import

        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("dax")
        monitor.start()
        return monitor
    except Exception:  # no netlink permission, no libudev: polling still works
        return None


def wait_until(sysfs: Sysfs, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return once ``check()`` is true; KernelRefused naming ``what`` after ``timeout`` s."""
    if check():
        return
    deadline = time.monotonic() + timeout
    monitor = _udev_monitor(sysfs)
    delay = 0.001
    while True:
        signals.checkpoint()
        if check():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise KernelRefused(f"timed out after {timeout:g} s waiting for {what}")
        if monitor is not None:
            monitor.poll(timeout=min(left, 0.1))  # any dax event: re-check
        else:
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)


def wait_driver(sysfs: Sysfs, name: str, driver: str | None, timeout: float = 10.0) -> None:
    """Wait until the device's ``driver`` link points at ``driver`` (None: no link)."""
    link = f"{paths.device_dir(name)}/driver"
    what = f"/{link} -> {driver}" if driver else f"/{link} to go away"
    wait_until(sysfs, lambda: sysfs.link_name(link) == driver, what, timeout)


def wait_node(sysfs: Sysfs, name: str, present: bool = True, timeout: float = 10.0) -> None:
    """Wait until ``/dev/<name>`` exists (or is gone)."""
    what = f"/dev/{name} to {'appear' if present else 'go away'}"
    wait_until(sysfs, lambda: sysfs.exists(paths.dev_node(name)) == present, what, timeout)
