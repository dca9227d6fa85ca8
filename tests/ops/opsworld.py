"""Helpers shared by the operations tests."""

from __future__ import annotations

from pathlib import Path

from daxmode.sysfs import Sysfs

NS_UUID = "2b9f7c1e-6a43-4a57-9b8f-0f3d9a1c5e77"
DAX_UUID = "7d4f0e2a-1c3b-4e5f-8a9b-0c1d2e3f4a5b"
CXL_UUID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
MiB = 1 << 20
REGION1 = "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region1/dax_region1/dax_region"


def write_conf(sysfs: Sysfs, name: str, text: str, d: str = "etc/daxmode.d") -> Path:
    p = sysfs.path(f"{d}/{name}")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p
