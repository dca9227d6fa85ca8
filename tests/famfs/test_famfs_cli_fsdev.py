"""The famfs CLI on images and on the simulated kernel: device access, mode round trips, up/down."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from daxmode import sim
from daxmode.cli import main
from daxmode.errors import BadMode, DeviceBusy, FamfsError, RolledBack
from daxmode.famfs import bringup as updown
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.identity import SYSTEM_UUID_PATH, ensure_system_uuid, read_system_uuid
from daxmode.famfs.medium import open_famfs
from daxmode.famfs.mount import command as famfs_mount
from daxmode.fsdev import create_image, map_device
from daxmode.kernel import features as kernelsupport
from daxmode.modes import Mode, set_mode
from daxmode.sysfs import Sysfs

MiB = 1 << 20


def run(root: Path, *args: str) -> tuple[int, str, str]:
    simulated = ["--sim"] if sim.is_simulated(root) else []  # the test injects the simulator
    r = CliRunner().invoke(main, ["--root", str(root), *simulated, "famfs", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def img(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    p = tmp_path / "f.img"
    create_image(p, 512 * MiB)
    return root, p


def test_cli_round_trip_on_image(img: tuple[Path, Path], tmp_path: Path) -> None:
    root, p = img
    rc, out, err = run(root, "mkfs", str(p), "--json")
    assert rc == 0 and "4 GiB" in err
    sb = json.loads(out)["superblock"]
    assert sb["version"] == 48 and sb["system_uuid"] == str(read_system_uuid(Sysfs(root)))
    assert oct(os.stat(root / SYSTEM_UUID_PATH).st_mode & 0o777) == "0o444"
    assert run(root, "mkfs", str(p))[0] == 15  # FamfsExists: a superblock is there
    assert run(root, "mkdir", str(p), "-p", "x/y", "-m", "1777")[0] == 0
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * MiB + 17))
    rc, out, _ = run(root, "cp", str(p), str(src), "x/y")
    assert rc == 0 and "x/y/src.bin" in out
    r = CliRunner().invoke(main, ["--root", str(root), "famfs", "cat", str(p), "x/y/src.bin"])
    assert r.stdout_bytes == src.read_bytes()
    rc, out, _ = run(
        root, "read", str(p), "x/y/src.bin", "--offset", "5", "--length", "10", "-o", str(tmp_path / "o")
    )
    assert (tmp_path / "o").read_bytes() == src.read_bytes()[5:15]
    rc, out, _ = run(root, "ls", str(p), "x", "--json")
    assert json.loads(out) == [
        {"type": "dir", "path": "x/y", "mode": "01777", "uid": 0, "gid": 0, "index": 1},
    ]
    rc, out, _ = run(root, "getmap", str(p), "x/y/src.bin", "--json")
    assert json.loads(out)["extents"] == [{"devindex": 0, "offset": 10 * MiB, "length": 4 * MiB}]
    rc, out, _ = run(root, "logplay", str(p), "--json")
    d = json.loads(out)
    assert rc == 0 and (d["entries"], d["files"], d["directories"], d["role"]) == (3, 1, 2, "master")
    rc, out, _ = run(root, "fsck", str(p))
    assert rc == 0 and "3 of 15420 entries" in out
    rc, out, _ = run(root, "creat", str(p), "big", "-s", "64M", "-N", "2", "-C", "2M")
    assert rc == 11 and "1 GiB per bucket" in _
    rc, out, _ = run(
        root, "creat", str(p), "big", "-s", "64M", "-N", "2", "-C", "2M", "--small-buckets", "--json"
    )
    assert rc == 0 and json.loads(out)["interleave"]["nstrips"] == 2


def test_cli_client_refused_and_errors(img: tuple[Path, Path], tmp_path: Path) -> None:
    root, p = img
    assert run(root, "mkfs", str(p), "--version", "47")[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    rc, _, err = run(other, "mkdir", str(p), "d")
    assert rc == 17 and "famfs client (no system UUID)" in err and err.count("\n") == 1
    assert run(other, "ls", str(p))[0] == 0  # reading is fine
    rc, _, err = run(root, "mkfs", str(p), "--version", "49")
    assert rc == 2  # click rejects the choice
    rc, _, err = run(root, "creat", str(p), "f", "-s", "ten")
    assert rc == 2 and "expected bytes" in err and err.count("\n") == 1
    rc, _, err = run(root, "ls", str(tmp_path / "missing.img"))
    assert rc == 11
    # corrupt the log header: fsck lists it, exits 12
    with open(p, "r+b") as f:
        f.seek(L.LOG_OFFSET + 3)
        f.write(b"\xff")
    rc, out, err = run(root, "fsck", str(p))
    assert rc == 12 and "problem: log header field famfs_log_magic" in out


def test_access_api_views(img: tuple[Path, Path]) -> None:
    root, p = img
    sysfs = Sysfs(root)
    assert run(root, "mkfs", str(p))[0] == 0
    assert run(root, "creat", str(p), "one", "-s", "3M")[0] == 0
    with open_famfs(str(p), sysfs, writable=True) as fs:
        f = fs.open("one")
        v = f.view()
        assert len(v) == 3 * MiB and f.contiguous
        v[:5] = b"hello"  # a view is the device memory itself
        del v
        assert f.read(0, 5) == b"hello"
        assert f.reader().read(5) == b"hello"
        assert fs.listdir() == ["one"]
        with pytest.raises(FamfsError, match="no such famfs file"):
            fs.open("two")


# --- simulated kernel: fsdev devices are switched to devdax for the operation and back -------
@pytest.fixture
def world(tmp_path: Path) -> tuple[sim.Sim, Sysfs]:
    s = sim.standard(tmp_path / "sim", blocks=4)
    sysfs = s.sysfs()
    size = int((s.p("sys/bus/dax/devices/dax0.0/size")).read_text())
    os.truncate(s.p("dev/dax0.0"), size)  # the simulated device node holds the memory
    ensure_system_uuid(sysfs)
    return s, sysfs


def test_fsdev_device_switched_and_restored(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    set_mode(sysfs, "dax0.0", Mode.FSDEV)
    rc, out, err = run(s.root, "mkfs", "dax0.0")
    assert rc == 0, err
    assert "switched from fsdev to devdax for this operation and back" in err
    assert s.driver("dax0.0") == "fsdev_dax"
    with open(s.p("dev/dax0.0"), "rb") as f:
        assert L.superblock_problems(f.read(200), None) == []
    assert run(s.root, "mkdir", "/dev/dax0.0", "d")[0] == 0
    rc, out, _ = run(s.root, "ls", "dax0.0")
    assert out == "d/\n" and s.driver("dax0.0") == "fsdev_dax"


def test_mounted_and_wrong_mode_refused(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    s.add_mount("/dev/dax0.0", "/mnt/famfs", "fuse", "rw,daxdev=/dev/dax0.0")
    with pytest.raises(DeviceBusy, match="mounted at /mnt/famfs"), map_device(sysfs, "dax0.0"):
        pass
    with pytest.raises(BadMode, match="system-ram mode"), map_device(sysfs, "dax1.0"):
        pass
    with pytest.raises(BadMode, match="no driver bound"), map_device(sysfs, "dax1.1"):
        pass


def test_up_no_mount_formats_and_leaves_fsdev(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    with pytest.raises(FamfsError, match="use --format"):
        updown.up(sysfs, "dax0.0", str(s.root / "mnt"), mount=False)
    assert s.driver("dax0.0") == "device_dax"  # nothing changed
    res = updown.up(sysfs, "dax0.0", str(s.root / "mnt"), format=True, mount=False)
    assert res.formatted and not res.mounted and res.previous_mode == "devdax"
    assert s.driver("dax0.0") == "fsdev_dax"
    assert updown.down(sysfs, str(s.root / "mnt"), restore_mode=True)[-1] == "dax0.0: returned to devdax mode"
    assert s.driver("dax0.0") == "device_dax"


def test_up_checks_the_mount_point_before_formatting(world: tuple[sim.Sim, Sysfs]) -> None:
    s, _sysfs = world
    mnt = s.root / "mnt"
    mnt.mkdir()
    (mnt / "junk").write_text("x")
    rc, _, err = run(s.root, "up", "dax0.0", str(mnt), "--format")
    assert rc == 11 and "not empty" in err and err.count("\n") == 1
    with open(s.p("dev/dax0.0"), "rb") as f:
        assert L.superblock_problems(f.read(200))  # not formatted
    assert s.driver("dax0.0") == "device_dax"


def test_mount_refusing_the_log_restores_the_mode(world: tuple[sim.Sim, Sysfs]) -> None:
    """fsdev -> devdax for the copy path, then fsck fails: back to fsdev, exit 9, the fsck problem named."""
    s, sysfs = world
    assert run(s.root, "mkfs", "dax0.0")[0] == 0
    with open(s.p("dev/dax0.0"), "r+b") as f:
        f.seek(L.LOG_OFFSET + 3)
        f.write(b"\xff")  # the log magic
    set_mode(sysfs, "dax0.0", Mode.FSDEV)
    (s.root / "mnt").mkdir()
    with pytest.raises(RolledBack, match=r"fails fsck: log header field famfs_log_magic.*returned to fsdev"):
        famfs_mount.mount(sysfs, "dax0.0", str(s.root / "mnt"), data_path="copy", foreground=True)
    assert s.driver("dax0.0") == "fsdev_dax"
    assert not list((s.root / "run/daxmode/mounts").glob("*.json"))


def test_mount_refuses_online_system_ram_and_unbound(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    (s.root / "mnt").mkdir()
    set_mode(sysfs, "dax0.0", Mode.SYSTEM_RAM)
    rc, _, err = run(s.root, "mount", "dax0.0", str(s.root / "mnt"))
    assert rc == 7 and "memory block(s) online" in err and err.count("\n") == 1
    assert s.driver("dax0.0") == "kmem"
    rc, _, err = run(s.root, "mount", "dax1.1", str(s.root / "mnt"))
    assert rc == 4 and "no driver bound" in err


def test_kernel_detection_ignores_module_tag(tmp_path: Path) -> None:
    root = tmp_path
    (root / "proc").mkdir()
    (root / "proc/kallsyms").write_text("0 t famfs_fuse_iomap_begin\n0 T other\n")
    ks = kernelsupport.detect_kernel(Sysfs(root))
    assert ks.fuse_famfs and not ks.famfs_v1 and ks.mountable
    (root / "proc/kallsyms").write_text("0 t famfs_fuse_iomap_begin\t[fuse]\n")
    assert kernelsupport.detect_kernel(Sysfs(root)).fuse_famfs
    (root / "proc/kallsyms").write_text("0 t fuse_dev_read\n")
    (root / "proc/filesystems").write_text("nodev\tfuse\nnodev\tfamfs\n")
    ks = kernelsupport.detect_kernel(Sysfs(root))
    assert ks.famfs_v1 and not ks.fuse_famfs
    (root / "proc/filesystems").write_text("nodev\tfuse\n")
    ks = kernelsupport.detect_kernel(Sysfs(root))
    assert not ks.mountable


def test_data_path_choice_on_a_stock_kernel(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    t = famfs_mount.resolve_target(sysfs, "dax0.0")
    path, why = famfs_mount.choose_data_path(sysfs, t, "auto")
    assert path == "copy" and "stock kernel" in why
    with pytest.raises(FamfsError, match="no famfs fuse support"):
        famfs_mount.choose_data_path(sysfs, t, "dax")
    (s.root / "mnt").mkdir()
    rc, _, err = run(s.root, "mount", "dax0.0", str(s.root / "mnt"), "--data-path", "dax")
    assert rc == 12 and err.startswith("daxmode: --data-path dax") and err.count("\n") == 1
    assert s.driver("dax0.0") == "device_dax"


def test_status_plain_words(world: tuple[sim.Sim, Sysfs]) -> None:
    s, sysfs = world
    rc, out, _ = run(s.root, "status")
    assert rc == 0
    assert "famfs support: none" in out and "data path for new mounts: copy (stock kernel" in out
    assert "dax0.0: devdax" in out and "no famfs superblock" in out
    st = json.loads(run(s.root, "status", "--json")[1])
    assert st["kernel"]["data_path"] == "copy" and st["system_uuid"] == str(read_system_uuid(sysfs))
    assert st["mounts"] == []
    assert uuid.UUID(st["system_uuid"])


@pytest.mark.parametrize(
    ("fstype", "source", "opts"),
    [
        ("famfs", "/dev/dax0.0", "rw"),  # the famfs v1 kernel's own mount
        ("fuse", "/dev/dax0.0", "rw,user_id=0"),  # famfs's fuse mount names the device as its source
        ("fuse", "famfs", "rw,daxdev=/dev/dax0.0"),  # or in its options
        ("fuse.famfs", "/dev/dax0.0", "rw"),  # daxmode's (its server is gone: no live record)
    ],
)
def test_mkfs_refuses_a_mounted_device_even_with_force(
    world: tuple[sim.Sim, Sysfs], fstype: str, source: str, opts: str
) -> None:
    s, _sysfs = world
    assert run(s.root, "mkfs", "dax0.0")[0] == 0
    s.add_mount(source, "/mnt/f", fstype, opts)
    for extra in ([], ["--force"], ["--force", "--kill"]):
        rc, _out, err = run(s.root, "mkfs", *extra, "dax0.0")
        assert rc == 7 and "mounted at /mnt/f" in err, (extra, err)
