"""Shared pieces of the simulator: paths, errors and file writes (no kernel rules here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

SIM_MARKER = ".daxmode-sim"
"""The directory under a simulated root that holds the kernel's hidden state."""

MiB = 1 << 20
GiB = 1 << 30

DAX_BUS = "sys/bus/dax"
MEMORY = "sys/devices/system/memory"
NODE = "sys/devices/system/node"
DRIVERS = ("device_dax", "kmem", "fsdev_dax")
ONLINE_ZONE = {"online": "Normal", "online_kernel": "Normal", "online_movable": "Movable"}
BLOCK_STATE_RE = re.compile(r"^sys/devices/system/(?:memory|node/node\d+)/memory(\d+)/state$")
DRIVER_ATTR_RE = re.compile(r"^sys/bus/dax/drivers/([^/]+)/(bind|unbind|new_id|remove_id)$")
DEV_NAME_RE = re.compile(r"^dax(\d+)\.(\d+)$")


def err(code: int, why: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({why})")


def put(path: Path | str, text: str, mode: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    if mode is not None:
        os.chmod(path, mode)


def symlink(link: Path, target: Path) -> None:
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def dev_node(path: Path | str, size: int) -> None:
    """The device node ``/dev/daxX.Y`` as a sparse file of the device's size: what a devdax
    mapping of the whole device reaches, so famfs and ``mmap`` work on a simulated tree.

    Existing bytes are kept (a resize keeps the memory under the ranges that stay), like the
    memory itself; a new node reads as zeros, like fresh memory in QEMU's backends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
