"""Fixtures for the operations tests: a simulated machine with nvdimm and CXL topology."""

from __future__ import annotations

from pathlib import Path

import pytest
from opsworld import CXL_UUID, DAX_UUID, NS_UUID

from daxmode import sim
from daxmode.sysfs import Sysfs


@pytest.fixture
def world(tmp_path: Path) -> tuple[sim.Sim, Sysfs]:
    """dax0.0 (pmem, namespace0.0, devdax), dax1.0 (CXL kmem, offline) and dax1.1 (unbound)."""
    s = sim.standard(tmp_path / "root")
    sim.add_namespace(s, 0, "namespace0.0", NS_UUID, DAX_UUID)
    sim.add_cxl_region(s, 1, CXL_UUID)
    return s, s.sysfs()
