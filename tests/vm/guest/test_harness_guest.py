"""In-guest: what the harness promises every guest suite (device, memory policy, private state)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DAX = Path("/sys/bus/dax/devices")


def test_device_is_devdax_with_char_node(dax_dev: str) -> None:
    link = DAX / dax_dev / "driver"
    assert link.is_symlink(), f"{dax_dev} has no driver"
    assert os.path.basename(os.readlink(link)) == "device_dax"
    assert Path(f"/dev/{dax_dev}").is_char_device()
    assert int((DAX / dax_dev / "size").read_text()) > 0


def test_memory_is_not_auto_onlined() -> None:
    # memhp_default_state=offline: CXL memory must never become RAM behind the tests' back.
    assert Path("/sys/devices/system/memory/auto_online_blocks").read_text().strip() == "offline"


def test_running_kernel_modules_are_usable() -> None:
    release = os.uname().release
    assert Path(f"/lib/modules/{release}/modules.dep").is_file()
    r = subprocess.run(["modinfo", "-F", "name", "device_dax"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "device_dax"


def test_root_is_private_and_writable(host_index: int) -> None:
    # famfs keeps per-host state in /opt/famfs; the overlay root must take writes and keep them local.
    p = Path("/opt/famfs-harness-check")
    p.mkdir(parents=True, exist_ok=True)
    (p / "host").write_text(str(host_index))
    assert (p / "host").read_text() == str(host_index)


def test_backend_matches_device_parent(dax_dev: str, backend: str) -> None:
    path = os.path.realpath(DAX / dax_dev)
    if backend == "cxl":
        assert "ACPI0017" in path and "/region" in path, path  # under the CXL root (cxl_acpi) and a region
    else:
        assert "/ndbus" in path, path
