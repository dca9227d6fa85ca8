"""Fixtures for the in-guest suite (tests/vm/guest), run by the QEMU harness inside each guest.

Outside a harness guest every test here is skipped: the harness marks its guests with
/run/mhd/host and exports DAXMODE_VM_HOST / DAXMODE_TEST_DEV (qemu/mhd/harness.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

AUTO_ONLINE = Path("/sys/devices/system/memory/auto_online_blocks")


def in_harness_guest() -> bool:
    return Path("/run/mhd/host").is_file() and "DAXMODE_VM_HOST" in os.environ


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not in_harness_guest():
        pytest.skip("runs only inside a harness guest (qemu/cxl-mhd.sh --suite tests/vm)")


@pytest.fixture(scope="session")
def dax_dev() -> str:
    """The harness's shared dax device in this guest (e.g. dax0.0), in devdax mode at start."""
    dev = os.environ.get("DAXMODE_TEST_DEV", "")
    if not dev:
        pytest.fail("DAXMODE_TEST_DEV is not set: device bring-up did not finish")
    return dev


@pytest.fixture(scope="session")
def backend() -> str:
    return os.environ.get("DAXMODE_VM_BACKEND", "")


@pytest.fixture(scope="session")
def host_index() -> int:
    return int(os.environ.get("DAXMODE_VM_HOST", "0"))


@pytest.fixture(scope="session")
def host_count() -> int:
    return int(os.environ.get("DAXMODE_VM_HOSTS", "1"))


@pytest.fixture(scope="session")
def online_ok() -> bool:
    """True only where onlining the device's memory as RAM is safe (nvdimm, single host)."""
    return os.environ.get("DAXMODE_VM_ONLINE_OK") == "1"


@pytest.fixture(scope="session")
def famfs_kernel() -> str:
    """Skip unless the running kernel can mount famfs (fuse-famfs or famfsv1)."""
    release = os.uname().release
    if kernel_has_famfs():
        return release
    pytest.skip(
        f"kernel {release} lacks fuse-famfs (CONFIG_FUSE_FAMFS_DAX) and famfsv1; "
        "boot a famfs kernel: make qemu-test KERNEL=<bzImage> MODULES=<dir>"
    )


def kernel_has_famfs() -> bool:
    """fuse-famfs is built into fuse (its symbols start with famfs_); famfsv1 is a module."""
    try:
        with open("/proc/kallsyms") as f:
            if any(" famfs_" in line for line in f):
                return True
    except OSError:
        pass
    if Path("/sys/module/famfsv1").is_dir():
        return True
    release = os.uname().release
    return any(Path(f"/lib/modules/{release}").rglob("famfsv1.ko*"))


@pytest.fixture(autouse=True)
def restore_auto_online() -> Iterator[None]:
    """Tests may change the kernel's onlining policy; put it back so later tests see the boot value."""
    try:
        saved = AUTO_ONLINE.read_text().strip()
    except OSError:
        yield
        return
    yield
    try:
        if AUTO_ONLINE.read_text().strip() != saved:
            AUTO_ONLINE.write_text(saved)
    except OSError:
        pass
