"""Device model helpers and mountinfo parsing."""

from __future__ import annotations

from pathlib import Path

from simworld import world

from daxmode.kernel.devices import Range, find_devices, get_device
from daxmode.kernel.memory import block_ids, compress_blocks, scan_blocks
from daxmode.kernel.mounts import mounts_using, parse_mountinfo
from daxmode.sysfs import Sysfs


def test_compress_blocks() -> None:
    assert compress_blocks([]) == "none"
    assert compress_blocks([39, 32, 33, 34, 35, 36, 37, 38, 41]) == "memory32-39,memory41"
    assert compress_blocks([5]) == "memory5"


def test_block_ids_are_per_range_and_aligned_inward() -> None:
    mb = 1 << 20
    bs = 128 * mb
    # two ranges with a hole: daxctl's [resource, resource+size) span would be wrong here
    ranges = [Range(bs - 2 * mb, 3 * bs - 1), Range(10 * bs, 11 * bs + 64 * mb)]
    assert block_ids(ranges, bs) == [1, 2, 10]


def test_devices_and_regions(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    devs = {d.name: d for d in find_devices(sysfs)}
    assert devs["dax1.0"].ranges and len(devs["dax1.0"].ranges) == 2
    assert devs["dax1.0"].region and devs["dax1.0"].region.dynamic
    assert devs["dax0.0"].region and not devs["dax0.0"].region.dynamic
    assert devs["dax1.1"].driver is None and devs["dax1.1"].mode_name == "unbound"
    assert get_device(sysfs, "/dev/dax0.0").name == "dax0.0"
    s.add_legacy_device("dax5.0", 1 << 30)
    assert get_device(sysfs, "dax5.0").legacy


def test_scan_blocks_reads_state_from_valid_zones(tmp_path: Path) -> None:
    d = tmp_path / "sys/devices/system/memory"
    for bid, zones, state in [
        (1, "Movable", "online"),
        (2, "Normal Movable", "offline"),
        (3, "weird", "online"),
    ]:
        (d / f"memory{bid}").mkdir(parents=True)
        (d / f"memory{bid}/valid_zones").write_text(zones + "\n")
        (d / f"memory{bid}/state").write_text(state + "\n")
    got = {b.id: (b.state, b.zones) for b in scan_blocks(Sysfs(tmp_path), [1, 2, 3, 4])}
    assert got == {1: ("online", "Movable"), 2: ("offline", None), 3: ("online", "weird")}


def test_mountinfo() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "40 22 0:50 / /mnt/fam\\040fs rw,relatime shared:9 - fuse famfs rw,user_id=0,daxdev=/dev/dax0.0\n"
        "41 22 0:51 / /mnt/x rw - famfs /dev/dax1.0 rw\n"
    )
    ms = parse_mountinfo(text)
    assert ms[1].mount_point == "/mnt/fam fs" and ms[1].fstype == "fuse"


def test_mounts_using(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    s.add_mount("famfs", "/mnt/f", "fuse", "rw,daxdev=/dev/dax0.0")
    s.add_mount("/dev/dax1.0", "/mnt/g", "famfs", "rw")
    assert [m.mount_point for m in mounts_using(sysfs, "dax0.0")] == ["/mnt/f"]
    assert [m.mount_point for m in mounts_using(sysfs, "dax1.0")] == ["/mnt/g"]
    assert mounts_using(sysfs, "dax1.1") == []
