"""In-guest: this guest is its own machine, whatever the host holds (issue 13).

Every guest's root is the host's root under a private overlay.  The harness gives each guest its
own machine-id, hostname and famfs system UUID (/opt/famfs/system_uuid decides who is the famfs
master) and hides the host's daxmode/daxctl configuration and udev rules.  To prove it on every
run it first plants decoy host state where the guests' lower layer sees it (a private mount
namespace on the host: the host's files are never written), and this test reads both sides: the
raw lower at /run/mhd/hostroot holds the decoys, the guest's own root does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HOSTROOT = Path("/run/mhd/hostroot")
DAXMODE = str(Path(sys.executable).parent / "daxmode")
DECOY_UDEV_MARKER = Path("/run/mhd-host-decoy-rule-ran")


def famfs_uuid(root: Path = Path("/")) -> str:
    return (root / "opt/famfs/system_uuid").read_bytes().split(b"\0", 1)[0].decode().strip()


def test_own_machine_id_hostname_and_famfs_uuid() -> None:
    env = os.environ
    assert Path("/etc/machine-id").read_text().strip() == env["DAXMODE_VM_MACHINE_ID"]
    assert Path("/etc/hostname").read_text().strip() == env["DAXMODE_VM_HOSTNAME"] == os.uname().nodename
    assert famfs_uuid() == env["DAXMODE_VM_SYSTEM_UUID"]
    # famfs's own format: 36 characters and a NUL, read-only for everyone
    raw = Path("/opt/famfs/system_uuid").read_bytes()
    assert len(raw) == 37 and raw.endswith(b"\0")
    assert Path("/opt/famfs/system_uuid").stat().st_mode & 0o777 == 0o444
    for key, mine in (
        ("MHD_HOST_MACHINE_ID", env["DAXMODE_VM_MACHINE_ID"]),
        ("MHD_HOST_SYSTEM_UUID", env["DAXMODE_VM_SYSTEM_UUID"]),
    ):
        if env.get(key):  # the host's own (read by the harness before planting anything)
            assert env[key] != mine, f"{key}: this guest has the host's identity"


@pytest.mark.parametrize("d", ["etc/daxmode.d", "etc/daxctl.conf.d", "etc/udev/rules.d", "opt/famfs"])
def test_no_host_file_reaches_the_guest(d: str) -> None:
    """Nothing of the host's device configuration, udev rules or famfs state is in this guest."""
    host, mine = HOSTROOT / d, Path("/") / d
    host_files = sorted(f.name for f in host.iterdir()) if host.is_dir() else []
    leaked = [
        n for n in host_files if (mine / n).exists() and (mine / n).read_bytes() == (host / n).read_bytes()
    ]
    assert not leaked, f"/{d}: the host's {leaked} reached the guest"


def test_planted_host_state_stays_on_the_host(dax_dev: str) -> None:
    if os.environ.get("MHD_HOST_PLANTED") != "1":
        pytest.skip("host state not planted (the harness needs root and mount namespaces for it)")
    planted = os.environ["MHD_DECOY_FILES"].split()
    assert "/opt/famfs/system_uuid" in planted and "/etc/daxmode.d/00-mhd-host-decoy.toml" in planted
    for p in planted:
        lower = HOSTROOT / p.lstrip("/")
        assert lower.is_file(), f"the decoy {p} is not in the guest's lower root: nothing was proven"
        mine = Path(p)
        assert not mine.exists() or mine.read_bytes() != lower.read_bytes(), f"{p}: the host's file leaked"
    assert famfs_uuid(HOSTROOT) == os.environ["MHD_DECOY_SYSTEM_UUID"] != famfs_uuid()
    assert (HOSTROOT / "etc/machine-id").read_text().strip() == os.environ["MHD_DECOY_MACHINE_ID"]
    # The planted daxmode.d rule would move every dax device to system-ram: apply must not see it.
    r = subprocess.run([DAXMODE, "apply", "--dry-run", "--json", dax_dev], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["status"] == "no-rule", r.stdout
    # The planted udev rule would leave a marker on every dax "add" event.
    if Path("/run/udev/control").exists():
        subprocess.run(["udevadm", "trigger", "--action=add", f"/sys/bus/dax/devices/{dax_dev}"], check=True)
        subprocess.run(["udevadm", "settle", "--timeout=60"], check=True)
        assert not DECOY_UDEV_MARKER.exists(), "the host's udev rule ran in the guest"
