"""The simulator's kernel rules, write by write (the same rules run on the real kernel in
tests/vm/guest/test_modes.py::test_kernel_rules_match_the_simulator)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from simworld import DEV, world

from daxmode import sim
from daxmode.errors import InvalidArgument, SysfsError
from daxmode.kernel import drivers

D = "sys/bus/dax/drivers"


def errno_of(sysfs, path: str, value: str) -> int:  # type: ignore[no-untyped-def]
    try:
        sysfs.write(path, value)
    except SysfsError as e:
        return e.errno
    return 0


def test_bind_unbind_errnos(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    assert errno_of(sysfs, f"{D}/device_dax/bind", DEV) == errno.EBUSY
    assert errno_of(sysfs, f"{D}/fsdev_dax/unbind", DEV) == errno.ENODEV
    assert errno_of(sysfs, f"{D}/device_dax/new_id", "bogus") == errno.EINVAL
    assert errno_of(sysfs, f"{D}/device_dax/new_id", "dax00.0") == errno.EINVAL  # not canonical
    assert errno_of(sysfs, f"{D}/device_dax/bind", "dax7.7") == errno.ENODEV
    assert errno_of(sysfs, f"{D}/device_dax/remove_id", DEV) == 0
    assert s.driver(DEV) == "device_dax"  # remove_id never unbinds
    assert errno_of(sysfs, f"{D}/device_dax/unbind", DEV) == 0
    assert s.driver(DEV) is None
    assert errno_of(sysfs, f"{D}/fsdev_dax/bind", DEV) == errno.ENODEV  # id list only
    assert errno_of(sysfs, f"{D}/fsdev_dax/new_id", DEV) == 0
    assert s.driver(DEV) == "fsdev_dax"  # new_id probes synchronously
    assert errno_of(sysfs, "sys/devices/system/memory/auto_online_blocks", "sometimes") == errno.EINVAL


def test_new_id_binds_other_unbound_matching_devices(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    assert s.driver("dax1.1") is None
    sysfs.write(f"{D}/kmem/new_id", "dax9.9")  # any name: driver_attach walks the whole bus
    assert s.driver("dax1.1") == "kmem"  # CXL region device matched kmem by type
    assert s.driver(DEV) == "device_dax"


def test_type_matching(tmp_path: Path) -> None:
    _, sysfs = world(tmp_path)
    sysfs.write(f"{D}/device_dax/unbind", DEV)
    assert errno_of(sysfs, f"{D}/kmem/bind", DEV) == errno.ENODEV  # static region: not kmem's type
    assert errno_of(sysfs, f"{D}/device_dax/bind", "dax1.1") == errno.ENODEV  # CXL: not device_dax's
    assert errno_of(sysfs, f"{D}/device_dax/bind", DEV) == 0


def test_kmem_probe_applies_policy_and_alignment(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path, auto_online="online_movable")
    sysfs.write(f"{D}/device_dax/unbind", DEV)
    sysfs.write(f"{D}/kmem/new_id", DEV)
    # 4 whole blocks: the 2 MiB head below the first boundary is dropped (kmem aligns inward)
    assert s.block_states(DEV) == {64: "online", 65: "online", 66: "online", 67: "online"}
    assert set(s.zones(DEV).values()) == {"Movable"}
    assert (s.p("sys/devices/system/node/node0/memory64")).is_symlink()
    assert errno_of(sysfs, "sys/devices/system/memory/memory64/state", "online") == errno.EINVAL
    assert errno_of(sysfs, "sys/devices/system/memory/memory64/state", "bogus") == errno.EINVAL
    assert errno_of(sysfs, "sys/devices/system/memory/memory64/state", "offline") == 0
    assert errno_of(sysfs, "sys/devices/system/memory/memory64/state", "offline") == errno.EINVAL


def test_kmem_unbind_with_online_block_leaks(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    sysfs.write(f"{D}/device_dax/unbind", DEV)
    sysfs.write(f"{D}/kmem/new_id", DEV)
    sysfs.write("sys/devices/system/memory/memory65/state", "online_movable")
    assert errno_of(sysfs, f"{D}/kmem/unbind", DEV) == 0  # "succeeds"
    assert s.driver(DEV) is None
    assert s.block_states(DEV)[65] == "online"  # stuck until reboot
    assert s.leaked()
    assert errno_of(sysfs, f"{D}/device_dax/bind", DEV) == errno.EBUSY  # could not reserve range
    assert errno_of(sysfs, f"{D}/kmem/new_id", DEV) == 0 and s.driver(DEV) is None  # probe EBUSY


def test_kmem_rejections(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path)
    s.add_region(0, 1 << 34, 1 << 30)
    s.add_device("dax0.0", [(1 << 34, 64 << 20)])
    s.add_region(2, 1 << 36, 1 << 30)
    s.add_device("dax2.0", [(1 << 36, 1 << 30)], target_node=-1)
    sysfs = s.sysfs()
    for name in ("dax0.0", "dax2.0"):
        sysfs.write(f"{D}/device_dax/unbind", name)
        sysfs.write(f"{D}/kmem/new_id", name)  # probe fails (EINVAL), new_id itself succeeds
        assert s.driver(name) is None
        assert errno_of(sysfs, f"{D}/kmem/bind", name) == errno.EINVAL


def test_size_zero_probe_is_enxio(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path)
    s.add_region(3, 1 << 34, 1 << 30, dynamic=True)
    s.add_device("dax3.0", [], driver=None)
    assert errno_of(s.sysfs(), f"{D}/device_dax/bind", "dax3.0") == errno.ENXIO


def test_modprobe_attaches_by_type(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path, loaded=("device_dax",))
    s.add_region(1, 1 << 36, 1 << 30, dynamic=True, kmem=True)
    s.add_device("dax1.0", [(1 << 36, 1 << 30)], driver=None)
    assert not s.p(f"{D}/kmem").exists()
    drivers.load(s.sysfs(), "kmem")
    assert s.driver("dax1.0") == "kmem"
    with pytest.raises(Exception, match="modprobe nosuch"):
        drivers.load(s.sysfs(), "nosuch")


def test_fault_injection_counts_across_processes(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.fail_write(f"/{D}/device_dax/remove_id", errno.EPERM, nth=2)
    a = s.sysfs()
    assert errno_of(a, f"{D}/device_dax/remove_id", DEV) == 0
    b = s.sysfs()  # a new Sysfs (as a new process would open): the count lives on disk
    assert errno_of(b, f"{D}/device_dax/remove_id", DEV) == errno.EPERM
    assert [e.result for e in s.log()] == ["ok", "EPERM"]


def test_env_fault_injection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = world(tmp_path)
    monkeypatch.setenv("DAXMODE_FAULT", f"/{D}/device_dax/remove_id:EIO:2")
    sysfs = s.sysfs()
    assert errno_of(sysfs, f"{D}/device_dax/remove_id", DEV) == 0
    assert errno_of(sysfs, f"{D}/device_dax/remove_id", DEV) == errno.EIO
    assert len(s.log()) == 1  # the injected failure never reached the kernel
    monkeypatch.setenv("DAXMODE_FAULT", "nonsense")
    with pytest.raises(InvalidArgument, match="DAXMODE_FAULT"):
        s.sysfs()
