"""Sub-devices of dynamic regions on the simulator: the kernel's rules and our rollback."""

from __future__ import annotations

import errno
import json

import pytest
from click.testing import CliRunner
from opsworld import REGION1, MiB

from daxmode import sim
from daxmode.cli import main
from daxmode.errors import DeviceBusy, InvalidArgument, LeftPartial, RolledBack, SysfsError, UnknownDevice
from daxmode.modes import Mode, Options, set_mode
from daxmode.ops.subdevices import create_device, destroy_device, resize_device

DEV = "sys/bus/dax/devices"


def avail(sysfs) -> int:
    return int(sysfs.read(f"{REGION1}/available_size"))


def names(sysfs) -> list[str]:
    return sorted(n for n in sysfs.listdir(DEV) if n.startswith("dax1."))


# --- the simulator's kernel rules ------------------------------------------------------------------


def test_sim_create_seed_delete_rules(world):
    _, sysfs = world
    start = avail(sysfs)
    assert start == 384 * MiB
    for bad, err in (("2", errno.EINVAL), ("x", errno.EINVAL)):
        with pytest.raises(SysfsError) as e:
            sysfs.write(f"{REGION1}/create", bad)
        assert e.value.errno == err
    sysfs.write(f"{REGION1}/create", "1")
    sysfs.write(f"{REGION1}/create", "1")
    assert sysfs.read(f"{REGION1}/seed") == "dax1.2"  # the first unbound one stays the seed
    assert sysfs.read(f"{REGION1}/create") == "dax1.3"  # youngest
    assert sysfs.read(f"{DEV}/dax1.2/size") == "0"
    with pytest.raises(SysfsError) as e:
        sysfs.write(f"{REGION1}/delete", "dax1.9")
    assert e.value.errno == errno.ENXIO
    with pytest.raises(SysfsError) as e:
        sysfs.write(f"{REGION1}/delete", "dax1.0")  # sized and bound
    assert e.value.errno == errno.EBUSY
    sysfs.write(f"{REGION1}/delete", "dax1.2")
    assert sysfs.read(f"{REGION1}/seed") == ""
    assert not sysfs.exists("dev/dax1.2")
    sysfs.write(f"{REGION1}/create", "1")
    assert sysfs.read(f"{REGION1}/create") == "dax1.2"  # lowest free id again


def test_sim_size_rules(world):
    s, sysfs = world
    sysfs.write(f"{REGION1}/create", "1")
    size = f"{DEV}/dax1.2/size"
    cases = [
        ("3M", "0x300000", errno.EINVAL),
        ("nan", "zz", errno.EINVAL),
        ("too big", hex(512 * MiB), errno.ENOSPC),
    ]
    for _, value, err in cases:
        with pytest.raises(SysfsError) as e:
            sysfs.write(size, value)
        assert e.value.errno == err
    sysfs.write(size, hex(256 * MiB))  # 128M hole after dax1.1, then 128M after dax1.0's 2nd range
    assert sysfs.read(f"{DEV}/dax1.2/mapping0/start") == "0x2018000000"
    assert sysfs.read(f"{DEV}/dax1.2/mapping1/start") == "0x2030000000"
    assert avail(sysfs) == 128 * MiB
    sysfs.write(size, hex(64 * MiB))  # shrink drops the last range, trims the first
    assert not sysfs.exists(f"{DEV}/dax1.2/mapping1")
    assert sysfs.read(f"{DEV}/dax1.2/mapping0/end") == hex(0x2018000000 + 64 * MiB - 1)
    sysfs.write(f"{DEV}/dax1.2/size", hex(128 * MiB))  # grows in place: still one range
    assert not sysfs.exists(f"{DEV}/dax1.2/mapping1")
    sysfs.write("sys/bus/dax/drivers/device_dax/new_id", "dax1.2")
    with pytest.raises(SysfsError) as e:
        sysfs.write(size, hex(64 * MiB))
    assert e.value.errno == errno.EBUSY
    sim.set_region_driver(s, 1, False)
    with pytest.raises(SysfsError) as e:
        sysfs.write(f"{DEV}/dax1.1/size", hex(64 * MiB))
    assert e.value.errno == errno.ENXIO
    with pytest.raises(SysfsError) as e:
        sysfs.write(f"{DEV}/dax0.0/size", "0")  # static region: read-only
    assert e.value.errno == errno.EACCES


def test_sim_align_rules(world):
    _, sysfs = world
    sysfs.write(f"{REGION1}/create", "1")
    align = f"{DEV}/dax1.2/align"
    with pytest.raises(SysfsError) as e:
        sysfs.write(align, "0x3000")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(SysfsError) as e:
        sysfs.write(align, "junk")
    assert e.value.errno == errno.ENXIO
    sysfs.write(align, hex(1 << 30))
    with pytest.raises(SysfsError) as e:
        sysfs.write(f"{DEV}/dax1.2/size", hex(128 * MiB))  # not a multiple of 1G
    assert e.value.errno == errno.EINVAL


def test_bound_seed_stops_being_the_seed(world):
    _, sysfs = world
    sysfs.write(f"{REGION1}/create", "1")
    sysfs.write(f"{DEV}/dax1.2/size", hex(128 * MiB))
    sysfs.write("sys/bus/dax/drivers/device_dax/new_id", "dax1.2")
    assert sysfs.read(f"{REGION1}/seed") == ""


# --- create ------------------------------------------------------------------------------------------


def test_create_sizes_binds_and_reports(world):
    s, sysfs = world
    res = create_device(sysfs, "region1", size="128M")
    assert (res.device, res.size, res.mode) == ("dax1.2", 128 * MiB, "devdax")
    assert s.driver("dax1.2") == "device_dax"
    assert s.driver("dax1.1") is None  # new_id side effect undone by the mode manager
    assert "0x8000000 > /sys/bus/dax/devices/dax1.2/size" in res.steps
    assert [e.value for e in s.log() if e.path.endswith("/size")] == ["0x8000000"]  # hex, like daxctl


def test_create_default_takes_all_available(world):
    _, sysfs = world
    res = create_device(sysfs, 1)
    assert res.size == 384 * MiB
    assert avail(sysfs) == 0
    with pytest.raises(InvalidArgument, match="region1 has no space left"):
        create_device(sysfs, 1)


def test_create_fsdev_and_align(world):
    s, sysfs = world
    res = create_device(sysfs, "1", size="128M", align="2M", mode=Mode.FSDEV)
    assert s.driver(res.device) == "fsdev_dax"


def test_create_rejects_bad_requests_before_touching_anything(world):
    s, sysfs = world
    s.clear_log()
    with pytest.raises(InvalidArgument, match="not a multiple of 2 MiB"):
        create_device(sysfs, 1, size="3M")
    with pytest.raises(InvalidArgument, match=r"0x40000000 bytes wanted, 0x18000000 available"):
        create_device(sysfs, 1, size="1G")
    with pytest.raises(InvalidArgument, match="align 0x3000"):
        create_device(sysfs, 1, size="128M", align="12K")
    with pytest.raises(InvalidArgument, match="region0 is static"):
        create_device(sysfs, 0, size="128M")
    with pytest.raises(UnknownDevice, match="unknown dax region 5; regions: region0, region1"):
        create_device(sysfs, "region5", size="128M")
    with pytest.raises(InvalidArgument, match="bad region"):
        create_device(sysfs, "r1")
    assert s.log() == []


def test_create_dry_run(world):
    s, sysfs = world
    s.clear_log()
    res = create_device(sysfs, 1, size="128M", dry_run=True)
    assert res.dry_run and res.steps[0].startswith("1 > /sys/devices/")
    assert s.log() == [] and names(sysfs) == ["dax1.0", "dax1.1"]


@pytest.mark.parametrize(
    "fault",
    [
        "sys/bus/dax/devices/dax1.2/size",
        "sys/bus/dax/drivers/device_dax/new_id",
        "sys/bus/dax/drivers/device_dax/bind",
    ],
)
def test_create_failure_after_create_leaves_no_half_made_device(world, fault):
    s, sysfs = world
    s.fail_write(fault, errno.EIO)
    if fault.endswith("/bind"):
        s.fail_write("sys/bus/dax/drivers/device_dax/new_id", errno.EIO)  # so that bind is needed
    with pytest.raises(RolledBack, match=r"create-device failed: .*; dax1\.2 deleted"):
        create_device(sysfs, 1, size="128M")
    assert names(sysfs) == ["dax1.0", "dax1.1"]
    assert avail(sysfs) == 384 * MiB
    assert sysfs.read(f"{REGION1}/seed") == ""


def test_create_failure_and_failed_undo_says_what_is_left(world):
    s, sysfs = world
    s.fail_write("sys/bus/dax/drivers/device_dax/new_id", errno.EIO)
    s.fail_write("sys/bus/dax/drivers/device_dax/bind", errno.EIO)
    s.fail_write(f"{REGION1}/delete", errno.EIO)
    with pytest.raises(LeftPartial) as e:
        create_device(sysfs, 1, size="128M")
    assert str(e.value).endswith("dax1.2 is unbound, size 0x0")
    assert e.value.exit_code == 10


def test_create_reuses_an_existing_seed_and_leaves_it_as_found_on_failure(world):
    s, sysfs = world
    sysfs.write(f"{REGION1}/create", "1")  # someone left an empty seed
    s.clear_log()
    s.fail_write("sys/bus/dax/devices/dax1.2/size", errno.EIO)
    with pytest.raises(RolledBack, match=r"dax1\.2 left as found"):
        create_device(sysfs, 1, size="128M")
    assert names(sysfs) == ["dax1.0", "dax1.1", "dax1.2"]
    assert not any(e.path.endswith("/create") for e in s.log())
    res = create_device(sysfs, 1, size="128M")
    assert res.device == "dax1.2"


def test_create_enospc_from_the_kernel(world):
    s, sysfs = world
    s.fail_write(f"{REGION1}/create", errno.ENOSPC)
    with pytest.raises(SysfsError, match="No space left"):
        create_device(sysfs, 1, size="128M")
    assert names(sysfs) == ["dax1.0", "dax1.1"]


# --- destroy -----------------------------------------------------------------------------------------


def test_destroy_unbound_and_bound_with_force(world):
    _, sysfs = world
    destroy_device(sysfs, "dax1.1")
    assert names(sysfs) == ["dax1.0"]
    dev = create_device(sysfs, 1, size="128M").device
    with pytest.raises(DeviceBusy, match=r"is active \(devdax\); use --force"):
        destroy_device(sysfs, dev)
    destroy_device(sysfs, dev, force=True)
    assert names(sysfs) == ["dax1.0"]
    assert avail(sysfs) == 512 * MiB  # the whole region but dax1.0


def test_destroy_system_ram_goes_through_the_mode_manager(world):
    s, sysfs = world
    set_mode(sysfs, "dax1.0", Mode.SYSTEM_RAM, Options(online=True))
    assert set(s.block_states("dax1.0").values()) == {"online"}
    res = destroy_device(sysfs, "dax1.0", force=True)
    assert res.note == "dax1.0 kept with size 0: device 0 of a region is never deleted"
    assert sysfs.read(f"{DEV}/dax1.0/size") == "0"
    assert s.block_states("dax1.0") == {} and not s.leaked()


def test_destroy_refuses_mounted_fsdev(world):
    s, sysfs = world
    dev = create_device(sysfs, 1, size="128M", mode=Mode.FSDEV).device
    s.add_mount(f"/dev/{dev}", "/mnt/famfs", "famfs")
    with pytest.raises(DeviceBusy, match=r"mounted on /mnt/famfs"):
        destroy_device(sysfs, dev, force=True)
    assert s.driver(dev) == "fsdev_dax"


def test_destroy_size_failure_rebinds(world):
    s, sysfs = world
    dev = create_device(sysfs, 1, size="128M").device
    s.fail_write(f"sys/bus/dax/devices/{dev}/size", errno.EIO)
    with pytest.raises(RolledBack, match=f"{dev} is back in devdax"):
        destroy_device(sysfs, dev, force=True)
    assert s.driver(dev) == "device_dax"


def test_destroy_delete_failure_is_partial(world):
    s, sysfs = world
    s.fail_write(f"{REGION1}/delete", errno.EIO)
    with pytest.raises(LeftPartial, match=r"dax1\.1 is unbound, size 0x0"):
        destroy_device(sysfs, "dax1.1")


def test_destroy_static_and_dry_run(world):
    s, sysfs = world
    with pytest.raises(InvalidArgument, match="static"):
        destroy_device(sysfs, "dax0.0", force=True)
    s.clear_log()
    res = destroy_device(sysfs, "dax1.0", force=True, dry_run=True)
    assert res.steps[0] == "daxmode set dax1.0 devdax --force"
    assert s.log() == [] and s.driver("dax1.0") == "kmem"


# --- resize ------------------------------------------------------------------------------------------


def test_resize_unbound(world):
    s, sysfs = world
    res = resize_device(sysfs, "dax1.1", "256M")
    assert res.size == 256 * MiB and s.driver("dax1.1") is None


def test_resize_bound_needs_force_and_rebinds(world):
    s, sysfs = world
    dev = create_device(sysfs, 1, size="128M", mode=Mode.FSDEV).device
    with pytest.raises(DeviceBusy, match="resize needs it unbound"):
        resize_device(sysfs, dev, "64M")
    res = resize_device(sysfs, dev, "64M", force=True)
    assert (res.size, res.mode) == (64 * MiB, "fsdev")
    assert s.driver(dev) == "fsdev_dax"


def test_resize_rejects(world):
    _, sysfs = world
    with pytest.raises(InvalidArgument, match="not a multiple"):
        resize_device(sysfs, "dax1.1", "1M")
    with pytest.raises(InvalidArgument, match="needs more than region1's 0x18000000 available"):
        resize_device(sysfs, "dax1.1", "1G")


def test_resize_rebind_failure_rolls_back_size_and_mode(world):
    s, sysfs = world
    dev = create_device(sysfs, 1, size="128M").device
    s.fail_write("sys/bus/dax/drivers/device_dax/new_id", errno.EIO, nth=1)
    s.fail_write("sys/bus/dax/drivers/device_dax/bind", errno.EIO, nth=1)
    with pytest.raises(RolledBack, match=rf"{dev} is back at size 0x8000000, devdax"):
        resize_device(sysfs, dev, "64M", force=True)
    assert s.driver(dev) == "device_dax"
    assert int(sysfs.read(f"{DEV}/{dev}/size")) == 128 * MiB


# --- CLI ---------------------------------------------------------------------------------------------


def cli(sysfs, *args: str):
    return CliRunner().invoke(main, ["--root", str(sysfs.root), "--sim", *args])


def test_cli_create_resize_destroy(world):
    _, sysfs = world
    r = cli(sysfs, "create-device", "region1", "--size", "128M")
    assert r.exit_code == 0, r.output
    assert r.output == "dax1.2: size 0x8000000 (128 MiB), align 0x200000, devdax\n"
    r = cli(sysfs, "resize", "dax1.2", "--size", "64M")
    assert r.exit_code == 7 and "resize needs it unbound" in r.stderr
    r = cli(sysfs, "resize", "dax1.2", "--size", "64M", "--force", "--json")
    assert json.loads(r.output)["size"] == 64 * MiB
    r = cli(sysfs, "destroy-device", "dax1.2", "--force")
    assert (r.exit_code, r.output) == (0, "destroyed dax1.2\n")
    r = cli(sysfs, "create-device", "1", "--size", "3M")
    assert r.exit_code == 11
    assert r.stderr == "daxmode: region1: size 0x300000 is not a multiple of 2 MiB (max(align, 2 MiB))\n"
