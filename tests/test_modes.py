"""Mode transitions on the simulated kernel: every pair, every single fault, rollback, locking."""

from __future__ import annotations

import errno
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from simworld import DEV, check_sane, put_in, world

from daxmode import sim
from daxmode.errors import (
    BadMode,
    DeviceBusy,
    KernelRefused,
    LeftPartial,
    LegacyDeviceModel,
    RolledBack,
    UnknownDevice,
)
from daxmode.modes import TRANSITIONS, Mode, Options, set_mode, temporary_mode
from daxmode.runstate.locks import device_lock
from daxmode.sysfs import Sysfs

MODES = [Mode.DEVDAX, Mode.FSDEV, Mode.SYSTEM_RAM]
PAIRS = [(a, b) for a in MODES for b in MODES]
STARTS = [*PAIRS, *((None, b) for b in MODES)]


def _id(p: tuple[Mode | None, Mode]) -> str:
    return f"{p[0] or 'unbound'}->{p[1]}"


def test_table_covers_every_pair() -> None:
    assert set(STARTS) == set(TRANSITIONS)


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
@pytest.mark.parametrize("policy", ["offline", "online"])
def test_all_pairs(tmp_path: Path, pair: tuple[Mode, Mode], policy: str) -> None:
    start, target = pair
    s, sysfs = world(tmp_path, auto_online=policy)
    put_in(s, sysfs, start)
    assert s.driver(DEV) == start.driver
    planned = set_mode(sysfs, DEV, target, Options(force=True, dry_run=True)).plan
    out = set_mode(sysfs, DEV, target, Options(force=True))
    assert s.driver(DEV) == target.driver
    assert out.changed == (start is not target)
    assert s.auto_online() == policy, "auto_online_blocks not restored"
    if target is Mode.SYSTEM_RAM:
        assert set(s.block_states(DEV).values()) == {"online"}
        assert set(s.zones(DEV).values()) == {"Movable"}
        assert out.online_blocks == out.total_blocks == 4 and out.movable is True
    check_sane(s, {target.driver})
    # what ran is exactly what --dry-run announced (new_id binds, so the fallback bind is skipped;
    # writes for dax1.1 undo new_id's side effect, reported as warnings)
    want = [(f"/{a.path}", a.value) for a in planned.actions if a.kind == "write" and "only if" not in a.note]
    did = [(e.path, e.value) for e in s.log() if e.path != "modprobe" and e.value != "dax1.1"]
    assert did == want
    side = [e for e in s.log() if e.value == "dax1.1"]
    assert bool(side) == any("side effect" in w for w in out.warnings)


@pytest.mark.parametrize("target", MODES, ids=str)
def test_from_unbound(tmp_path: Path, target: Mode) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, None)
    assert s.driver(DEV) is None
    set_mode(sysfs, DEV, target)
    assert s.driver(DEV) == target.driver
    check_sane(s, {target.driver})


def test_no_online_leaves_blocks_offline(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    out = set_mode(sysfs, DEV, Mode.SYSTEM_RAM, Options(online=False))
    assert set(s.block_states(DEV).values()) == {"offline"}
    assert out.online_blocks == 0 and out.total_blocks == 4
    # same mode again with onlining asked: onlines the offline blocks (documented no-op exception)
    out = set_mode(sysfs, DEV, Mode.SYSTEM_RAM, Options(movable=False))
    assert set(s.block_states(DEV).values()) == {"online"}
    assert set(s.zones(DEV).values()) == {"Normal"}
    assert out.changed
    # and now truly a no-op
    s.clear_log()
    out = set_mode(sysfs, DEV, Mode.SYSTEM_RAM)
    assert not out.changed and s.log() == []


def test_auto_online_policy_is_held_not_obeyed(tmp_path: Path) -> None:
    """daxctl aborts when auto_online_blocks=online; daxmode holds it at offline while kmem probes."""
    s, sysfs = world(tmp_path, auto_online="online")
    set_mode(sysfs, DEV, Mode.SYSTEM_RAM, Options(online=False))
    assert set(s.block_states(DEV).values()) == {"offline"}
    assert s.auto_online() == "online"
    writes = [(e.path, e.value) for e in s.log()]
    policy = "/sys/devices/system/memory/auto_online_blocks"
    i = writes.index(("/sys/bus/dax/drivers/kmem/new_id", DEV))
    last_kmem = max(j for j, (path, _) in enumerate(writes) if "/kmem/" in path)
    assert writes[i - 1] == (policy, "offline")
    assert writes[last_kmem + 1] == (policy, "online")


def test_policy_restored_even_when_bind_fails(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path, auto_online="online_movable")
    s.fail_write("/sys/bus/dax/drivers/kmem/new_id", errno.ENOMEM)
    s.fail_write("/sys/bus/dax/drivers/kmem/bind", errno.ENXIO)
    with pytest.raises(RolledBack) as ei:
        set_mode(sysfs, DEV, Mode.SYSTEM_RAM)
    assert "back in devdax" in str(ei.value)
    assert s.auto_online() == "online_movable"
    check_sane(s, {"device_dax"})


def test_leaving_system_ram_needs_force(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    with pytest.raises(DeviceBusy, match=r"memory64-67.*--force"):
        set_mode(sysfs, DEV, Mode.DEVDAX)
    with pytest.raises(DeviceBusy):
        set_mode(sysfs, DEV, Mode.FSDEV)
    assert s.log() == [] and s.driver(DEV) == "kmem"


def test_leaving_offline_system_ram_needs_no_force(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM, online=False)
    set_mode(sysfs, DEV, Mode.FSDEV)
    assert s.driver(DEV) == "fsdev_dax"
    check_sane(s, {"fsdev_dax"})


def test_ram_to_fsdev_goes_through_devdax(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    set_mode(sysfs, DEV, Mode.FSDEV, Options(force=True))
    drivers = [e.path.split("/")[5] for e in s.log() if "/drivers/" in e.path]
    assert drivers.index("kmem") < drivers.index("device_dax") < drivers.index("fsdev_dax")


def test_unremovable_block_explained_and_rolled_back(tmp_path: Path) -> None:
    """removable=0 (kernels before 5.9) is consulted when an offline fails, to say why."""
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    s.set_unremovable(66)
    s.refuse_offline(66)
    with pytest.raises(RolledBack, match=r"memory66.*removable=0.*back in system-ram"):
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    assert set(s.block_states(DEV).values()) == {"online"}


def test_block_refusing_offline_rolls_back(tmp_path: Path) -> None:
    """ndctl issue #256: offlining fails midway; daxctl leaves the blocks mixed, daxmode re-onlines."""
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    s.refuse_offline(66)
    with pytest.raises(RolledBack, match=r"memory66.*onlined again memory64-65.*back in system-ram"):
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    assert set(s.block_states(DEV).values()) == {"online"}
    assert set(s.zones(DEV).values()) == {"Movable"}, "re-onlined into another zone"
    check_sane(s, {"kmem"})


def test_rollback_restores_original_zones(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    set_mode(sysfs, DEV, Mode.SYSTEM_RAM, Options(movable=False))
    assert set(s.zones(DEV).values()) == {"Normal"}
    s.fail_write("/sys/bus/dax/drivers/device_dax/new_id", errno.EIO)
    s.fail_write("/sys/bus/dax/drivers/device_dax/bind", errno.EIO)
    with pytest.raises(RolledBack):
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    assert s.driver(DEV) == "kmem"
    assert set(s.block_states(DEV).values()) == {"online"}
    assert set(s.zones(DEV).values()) == {"Normal"}


def test_first_write_refused_is_exit_8_not_rollback(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    s.fail_write("/sys/bus/dax/drivers/device_dax/remove_id", errno.EINVAL)
    with pytest.raises(KernelRefused, match="nothing was changed") as ei:
        set_mode(sysfs, DEV, Mode.FSDEV)
    assert type(ei.value) is KernelRefused and ei.value.exit_code == 8
    assert s.driver(DEV) == "device_dax"


def test_left_partial_names_driver_and_blocks(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    for drv in ("device_dax", "kmem"):
        s.fail_write(f"/sys/bus/dax/drivers/{drv}/new_id", errno.EIO)
        s.fail_write(f"/sys/bus/dax/drivers/{drv}/bind", errno.ENXIO)
    with pytest.raises(LeftPartial) as ei:
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    msg = str(ei.value)
    assert ei.value.exit_code == 10
    assert "no driver bound (disabled)" in msg and "no memory blocks present" in msg, msg


def test_left_partial_with_mixed_blocks(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    s.refuse_offline(66)
    s.fail_write("/sys/devices/system/memory/memory65/state", errno.EBUSY, nth=2)  # the re-online
    with pytest.raises(LeftPartial) as ei:
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    msg = str(ei.value)
    assert "driver kmem bound" in msg
    assert "online: memory64,memory66-67; offline: memory65" in msg, msg


def test_kmem_rejects_no_node_and_small_devices(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path)
    s.add_region(0, 1 << 34, 1 << 30)
    s.add_device("dax0.0", [(1 << 34, 64 << 20)])  # smaller than one 128 MiB block
    s.add_region(2, 1 << 36, 1 << 30)
    s.add_device("dax2.0", [(1 << 36, 1 << 30)], target_node=-1)
    sysfs = s.sysfs()
    with pytest.raises(BadMode, match="no whole 128 MiB memory block"):
        set_mode(sysfs, "dax0.0", Mode.SYSTEM_RAM)
    with pytest.raises(BadMode, match="no target_node"):
        set_mode(sysfs, "dax2.0", Mode.SYSTEM_RAM)
    assert s.log() == []


def test_multi_range_device_blocks_are_exact(tmp_path: Path) -> None:
    """dax1.0 has two ranges with dax1.1's block between them: daxctl's span would count it."""
    s, sysfs = world(tmp_path)
    set_mode(sysfs, "dax1.0", Mode.SYSTEM_RAM)
    assert s.block_states("dax1.0") == {1024: "online", 1025: "online", 1028: "online", 1029: "online"}
    set_mode(sysfs, "dax1.0", Mode.DEVDAX, Options(force=True))
    assert s.driver("dax1.0") == "device_dax"
    assert s.driver("dax1.1") is None


def test_mounted_fsdev_is_busy(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.FSDEV)
    s.add_mount("/dev/dax0.0", "/mnt/famfs", "famfs", "rw")
    with pytest.raises(DeviceBusy, match="mounted on /mnt/famfs"):
        set_mode(sysfs, DEV, Mode.DEVDAX)
    s.set_mounts([("/dev/vda1", "/", "ext4", "rw"), ("famfs", "/mnt/f", "fuse", "rw,daxdev=/dev/dax0.0")])
    with pytest.raises(DeviceBusy, match="fuse"):
        set_mode(sysfs, DEV, Mode.SYSTEM_RAM)
    s.set_mounts([("/dev/vda1", "/", "ext4", "rw")])
    set_mode(sysfs, DEV, Mode.DEVDAX)


def test_leaked_range_detected(tmp_path: Path) -> None:
    """kmem unbind with online blocks 'succeeds' and leaks; daxmode never does it, but can see it."""
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    sysfs.write("sys/bus/dax/drivers/kmem/unbind", DEV)  # what daxctl guards against (#294)
    assert s.driver(DEV) is None and s.leaked()
    with pytest.raises(KernelRefused, match="EBUSY"):
        sysfs.write("sys/bus/dax/drivers/device_dax/bind", DEV)
    with pytest.raises(DeviceBusy, match="leaked"):
        set_mode(sysfs, DEV, Mode.DEVDAX)


def test_missing_module_is_loaded(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path, loaded=("device_dax", "kmem"))
    s.add_region(0, 1 << 34, 1 << 30)
    s.add_device(DEV, [(1 << 34, 1 << 30)])
    assert not s.p("sys/bus/dax/drivers/fsdev_dax").exists()
    set_mode(s.sysfs(), DEV, Mode.FSDEV)
    assert s.driver(DEV) == "fsdev_dax"
    assert any(e.path == "modprobe" and e.value == "fsdev_dax" for e in s.log())


def test_unknown_driver_and_legacy_refused(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    s.add_legacy_device("dax5.0", 1 << 30)
    with pytest.raises(LegacyDeviceModel, match="migrate-device-model"):
        set_mode(sysfs, "dax5.0", Mode.FSDEV)
    with pytest.raises(UnknownDevice, match=r"existing: dax0.0, dax1.0, dax1.1, dax5.0"):
        set_mode(sysfs, "dax7.0", Mode.FSDEV)
    # a driver daxmode does not know
    devdir = s.p(sysfs.realpath("sys/bus/dax/devices/dax1.1"))
    other = s.p("sys/bus/dax/drivers/mystery")
    other.mkdir()
    (devdir / "driver").symlink_to(other)
    with pytest.raises(DeviceBusy, match="mystery"):
        set_mode(sysfs, "dax1.1", Mode.DEVDAX)


def test_dry_run_touches_nothing(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path, auto_online="online")
    out = set_mode(sysfs, DEV, Mode.SYSTEM_RAM, Options(dry_run=True))
    assert s.log() == [] and s.driver(DEV) == "device_dax"
    lines = out.plan.render()
    assert lines[0] == "dax0.0: devdax -> system-ram"
    assert "write 'offline' > /sys/devices/system/memory/auto_online_blocks" in lines[3]
    assert sum("online_movable" in x for x in lines) == 4


# ------------------------------------------------------------------ every single fault


def _fault_cases() -> list[tuple[tuple[Mode | None, Mode], str]]:
    return [
        (p, pol)
        for p in STARTS
        if p[0] is not p[1] or p[0] is Mode.SYSTEM_RAM
        for pol in ("offline", "online")
    ]


@pytest.mark.parametrize("case", _fault_cases(), ids=lambda c: f"{_id(c[0])}-{c[1]}")
def test_every_single_fault(tmp_path: Path, case: tuple[tuple[Mode | None, Mode], str]) -> None:
    """Fail each write of the transition in turn: the device must end in the start or the target
    mode, never unbound (unless it started so), never with mixed blocks, never leaked."""
    (start, target), policy = case
    start_online = start is not Mode.SYSTEM_RAM or target is not Mode.SYSTEM_RAM  # RAM->RAM: onlining
    ref, sysfs = world(tmp_path / "ref", auto_online=policy)
    put_in(ref, sysfs, start, online=start_online)
    set_mode(sysfs, DEV, target, Options(force=True))
    writes = [(e.path, e.value) for e in ref.log() if e.path != "modprobe" and e.result == "ok"]
    assert writes, "transition did nothing"
    seen: dict[str, int] = {}
    allowed = {start.driver if start else None, target.driver}
    for i, (path, value) in enumerate(writes):
        seen[path] = seen.get(path, 0) + 1
        for err in (errno.EBUSY, errno.ENXIO):
            s, sysfs = world(tmp_path / f"f{i}-{err}", auto_online=policy)
            put_in(s, sysfs, start, online=start_online)
            s.fail_write(path, err, seen[path])
            what = f"fault {path}#{seen[path]} {errno.errorcode[err]}"
            warnings: list[str] = []
            try:
                warnings = set_mode(sysfs, DEV, target, Options(force=True)).warnings
                ended, rolled_back = target, False
            except (RolledBack, KernelRefused) as e:
                assert not isinstance(e, LeftPartial), f"{what}: {e}"
                ended, rolled_back = start, True
            assert s.driver(DEV) == (ended.driver if ended else None), what
            if value == "dax1.1":  # undoing new_id's side effect on another device failed
                assert any("dax1.1" in w and "could not unbind" in w for w in warnings), what
                assert s.driver("dax1.1") == "kmem"
                sysfs.write("sys/bus/dax/drivers/kmem/unbind", "dax1.1")
            check_sane(s, allowed)
            assert s.auto_online() == policy, what
            if ended is Mode.SYSTEM_RAM:
                want = "offline" if rolled_back and not start_online else "online"
                assert set(s.block_states(DEV).values()) == {want}, what


# ------------------------------------------------------------------ concurrency


class _SlowKernel(sim.SimKernel):
    def write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        time.sleep(0.002)
        super().write(sysfs, rel, value)


def test_concurrent_sets_serialize(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    errors: list[BaseException] = []

    def run(target: Mode) -> None:
        try:
            set_mode(Sysfs(tmp_path, _SlowKernel()), DEV, target, Options(force=True))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(m,)) for m in (Mode.SYSTEM_RAM, Mode.FSDEV)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # the two runs' writes must not interleave: drivers touched form two contiguous groups
    log = [e.path for e in s.log()]
    kinds = ["ram" if ("kmem" in p or "memory" in p) else "fs" for p in log if "dax1" not in p]
    changes = sum(1 for a, b in itertools.pairwise(kinds) if a != b)
    assert s.driver(DEV) in ("kmem", "fsdev_dax")
    check_sane(s, {"kmem", "fsdev_dax"})
    # devdax->ram then ram->fsdev (offline.. kmem.. device_dax.. fsdev) or devdax->fsdev then fsdev->ram
    assert changes <= 3, log


def test_lock_held_by_other_process_waits(tmp_path: Path) -> None:
    _, sysfs = world(tmp_path)
    marker = tmp_path / "released"
    code = (
        "import sys, time\n"
        "from daxmode.sysfs import Sysfs\n"
        "from daxmode.runstate.locks import device_lock\n"
        f"with device_lock(Sysfs({str(tmp_path)!r}), 'dax0.0'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(0.5)\n"
        f"    open({str(marker)!r}, 'w').close()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout and p.stdout.readline().strip() == "held"
    set_mode(sysfs, DEV, Mode.FSDEV)
    assert marker.exists(), "set_mode ran while another process held the device lock"
    assert p.wait() == 0


def test_lock_is_reentrant_for_temporary_mode(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    with temporary_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True)) as out:
        assert out.changed and s.driver(DEV) == "device_dax"
        set_mode(sysfs, DEV, Mode.FSDEV)  # nested under the same lock
        assert s.driver(DEV) == "fsdev_dax"
    assert s.driver(DEV) == "kmem"
    assert set(s.block_states(DEV).values()) == {"online"}
    assert set(s.zones(DEV).values()) == {"Movable"}
    with device_lock(sysfs, DEV), device_lock(sysfs, DEV):
        pass


def test_temporary_mode_from_unbound(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, None)
    with temporary_mode(sysfs, DEV, Mode.FSDEV):
        assert s.driver(DEV) == "fsdev_dax"
    assert s.driver(DEV) is None
    assert s.ids("fsdev_dax") == []
