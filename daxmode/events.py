"""Waiting for the kernel: a driver link or a device node to appear or go.

Probe and remove are synchronous in the kernel, so the condition usually holds at
the first check.  When it does not (udev still creating ``/dev`` nodes, a slow
probe), wait on udev events for the dax subsystem if this is the real root and
udevd runs; otherwise poll sysfs with a short back-off.  Always bounded by a timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from daxmode.errors import KernelRefused
from daxmode.sysfs import Sysfs

UDEV_CONTROL = "/run/udev/control"


def _udev_running(sysfs: Sysfs) -> bool:
    return sysfs.is_real and os.path.exists(UDEV_CONTROL)


def wait_until(sysfs: Sysfs, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return once ``check()`` is true; KernelRefused naming ``what`` after ``timeout`` s."""
    if check():
        return
    deadline = time.monotonic() + timeout
    monitor = None
    if _udev_running(sysfs):
        try:
            import pyudev

            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("dax")
            monitor.start()
        except Exception:  # no netlink permission, no libudev: polling still works
            monitor = None
    delay = 0.001
    while True:
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


def wait_driver(sysfs: Sysfs, devpath: str, driver: str | None, timeout: float = 10.0) -> None:
    """Wait until ``<devpath>/driver`` points at ``driver`` (None: no link)."""
    what = f"/{devpath}/driver -> {driver}" if driver else f"/{devpath}/driver to go away"
    wait_until(sysfs, lambda: sysfs.link_name(f"{devpath}/driver") == driver, what, timeout)


def wait_node(sysfs: Sysfs, name: str, present: bool = True, timeout: float = 10.0) -> None:
    """Wait until ``/dev/<name>`` exists (or is gone)."""
    what = f"/dev/{name} to {'appear' if present else 'go away'}"
    wait_until(sysfs, lambda: sysfs.exists(f"dev/{name}") == present, what, timeout)
