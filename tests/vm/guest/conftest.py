"""Fixtures for the in-guest suite (tests/vm/guest), run by the QEMU harness inside each guest.

Outside a harness guest every test here is skipped: the harness marks its guests with
/run/mhd/host and exports DAXMODE_VM_HOST / DAXMODE_TEST_DEV (mhd/host/run.py).

Inside one, subprocesses that run the venv's Python (``daxmode ...``, ``python -m daxmode.cli``,
``python -c``) are forked by the guest's pristine warm zygote instead of starting a new interpreter,
which costs 4-9 s each under TCG (mhd/guest/zygote.py and warm.py say what the fork resets and when
a command is exec'd instead, e.g. with ``preexec_fn``).  They are still real processes: own pid,
exit status, stdout/stderr, signals, ``user=``/``group=``/``extra_groups=``.  A test for which a new
interpreter is the point carries ``@pytest.mark.real_process``.  Programs started by others
(udev's RUN, a shell pipeline) are never affected.

Markers: ``shared_media`` -- the test writes the shared device's contents; the harness runs such
tests one guest at a time, after the rest of the suite ran on all guests at once (and fails the run
if the device changed during that parallel stage).  Skips must be declared in the kernel's file under
qemu/skips/ (docs/harness.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhd.constants import GUEST_RUN, GUEST_SHARE, SHARED_MEDIA
from mhd.guest import facts as guest_facts
from mhd.guest import warm, zygote

AUTO_ONLINE = Path("/sys/devices/system/memory/auto_online_blocks")
SHARE = Path(GUEST_SHARE)


def in_harness_guest() -> bool:
    return Path(GUEST_RUN, "host").is_file() and "DAXMODE_VM_HOST" in os.environ


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{SHARED_MEDIA}: writes the shared device's contents (run one guest at a time)"
    )
    config.addinivalue_line(
        "markers", "real_process: subprocesses start a new interpreter instead of a warm fork"
    )
    if in_harness_guest() and warm.enabled() and os.path.exists(zygote.SOCKET):
        config._mhd_warm = zygote.install_popen_hook()  # type: ignore[attr-defined]
        config._mhd_stats = dict(warm.stats)  # type: ignore[attr-defined]  # (inherited from the agent)


def pytest_unconfigure(config: pytest.Config) -> None:
    hook = getattr(config, "_mhd_warm", None)
    if hook is None:
        return
    hook.close()
    base = getattr(config, "_mhd_stats", {})
    if SHARE.is_dir():
        with open(SHARE / "warm-stats.jsonl", "a") as f:
            f.write(json.dumps({k: v - base.get(k, 0) for k, v in warm.stats.items()}) + "\n")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not in_harness_guest():
        pytest.skip("runs only inside a harness guest (qemu/cxl-mhd.sh --suite tests/vm)")


@pytest.fixture(autouse=True)
def _real_process_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    hook = getattr(request.config, "_mhd_warm", None)
    if hook is None or request.node.get_closest_marker("real_process") is None:
        yield
        return
    with warm.suspended():
        yield


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
    """Skip unless the running kernel can mount famfs (fuse-famfs or famfsv1).

    The harness judges this skip with the same facts (mhd/guest/facts.py): declare it in the stock
    kernel's qemu/skips/debian.toml with ``when = { fuse_famfs = false, famfsv1 = false }``.
    """
    release = os.uname().release
    if kernel_has_famfs():
        return release
    pytest.skip(
        f"kernel {release} lacks fuse-famfs (CONFIG_FUSE_FAMFS_DAX) and famfsv1; "
        "boot a famfs kernel: make qemu-test KERNEL=<bzImage> MODULES=<dir>"
    )


@pytest.fixture(scope="session")
def fsdev_kernel() -> str:
    """Skip unless the running kernel has the fsdev_dax driver (fs-dax on devdax, Linux >= 7.1).

    The standalone famfs kernel (6.12, ``make famfs-v1-kernel-test``) has none, so fsdev mode does
    not exist there.  Declared in qemu/skips/famfs-v1.toml with ``when = { fsdev = false }``."""
    release = os.uname().release
    if guest_facts.gather()["fsdev"]:
        return release
    pytest.skip(f"kernel {release} has no fsdev_dax driver: fsdev mode does not exist on it")


def kernel_has_famfs() -> bool:
    f = guest_facts.gather()
    return bool(f["fuse_famfs"] or f["famfsv1"])


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


@pytest.fixture
def devdax_policy_offline() -> Iterator[None]:
    """The test device starts in devdax with auto_online_blocks at offline (restore_auto_online
    puts the policy back) and is put back in devdax after the test if it is not."""
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.sysfs import Sysfs

    from .sysview import DEV, driver

    assert driver() == "device_dax", f"{DEV} not in devdax at test start: {driver()}"
    AUTO_ONLINE.write_text("offline")
    yield
    if driver() != "device_dax":
        set_mode(Sysfs("/"), DEV, Mode.DEVDAX, Options(force=True))
    assert driver() == "device_dax"
