"""``daxmode sim create`` and ``--sim DIR``: a simulated machine from the command line, whose
device nodes famfs can format, map and mount like a devdax device."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from daxmode import sim
from daxmode.cli import main

GiB = 1 << 30


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_create_then_list_and_set(tmp_path: Path) -> None:
    d = str(tmp_path / "m")
    code, out, _ = cli("sim", "create", d, "--devices", "3", "--size", "256M")
    assert code == 0 and "dax0.0, dax1.0, dax2.0 (256 MiB each, devdax)" in out
    code, out, _ = cli("--sim", d, "list", "--json")
    rows = json.loads(out)
    assert [(r["chardev"], r["mode"], r["size"]) for r in rows] == [
        (f"dax{i}.0", "devdax", 256 << 20) for i in range(3)
    ]
    assert cli("--sim", d, "set", "dax1.0", "system-ram")[0] == 0
    assert set(sim.Sim(d).zones("dax1.0").values()) == {"Movable"}
    code, out, _ = cli(f"--sim={d}", "list", "--json", "dax1.0")
    assert json.loads(out)[0]["online_memblocks"] == 2
    # the device node is the device's memory: sparse, of its size
    st = os.stat(Path(d) / "dev/dax0.0")
    assert st.st_size == 256 << 20 and st.st_blocks == 0


def test_sim_dir_is_root_dir_sim(tmp_path: Path) -> None:
    d = tmp_path / "m"
    sim.machine(d, devices=1, size=GiB)
    assert cli("--sim", str(d), "list")[1] == cli("--root", str(d), "--sim", "list")[1]
    code, out, _ = cli("sim", "create", str(tmp_path / "j"), "--devices", "1", "--json")
    assert json.loads(out)["devices"] == [{"chardev": "dax0.0", "size": GiB, "mode": "devdax"}]
    code, _, err = cli("--root", str(d), "--sim", str(d), "list")
    assert code == 2 and "give one of them" in err
    code, _, err = cli("--sim", str(tmp_path / "nothing"), "list")
    assert code == 11 and "daxmode sim create" in err


def test_create_refuses_what_it_would_clobber_or_cannot_model(tmp_path: Path) -> None:
    d = tmp_path / "m"
    sim.machine(d, devices=1, size=GiB)
    code, _, err = cli("sim", "create", str(d))
    assert code == 11 and "already a simulated kernel" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert "not empty" in cli("sim", "create", str(tmp_path / "full"))[2]
    code, _, err = cli("sim", "create", str(tmp_path / "odd"), "--size", "100M")
    assert code == 11 and "multiple of 128 MiB" in err and not (tmp_path / "odd").exists()
    assert cli("sim", "create", str(tmp_path / "many"), "--devices", "17")[0] == 2


def test_famfs_on_a_simulated_device(tmp_path: Path) -> None:
    d = str(tmp_path / "m")
    sim.machine(d, devices=1, size=GiB)
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    assert cli("--sim", d, "famfs", "mkfs", "dax0.0")[0] == 0
    code, out, _ = cli("--sim", d, "famfs", "cp", "dax0.0", str(src), "/a.bin")
    assert code == 0, out
    r = CliRunner().invoke(main, ["--sim", d, "famfs", "cat", "dax0.0", "/a.bin"])
    assert r.exit_code == 0 and r.stdout_bytes == src.read_bytes()
    assert cli("--sim", d, "famfs", "fsck", "dax0.0")[0] == 0
    # the bytes are in the device node, where a devdax mapping of the device would find them
    node = (Path(d) / "dev/dax0.0").read_bytes()
    assert src.read_bytes() in node


def test_resize_keeps_the_node_the_size_of_the_device(tmp_path: Path) -> None:
    s = sim.Sim.create(tmp_path)
    s.add_region(0, 64 << 27, 8 << 27, dynamic=True, kmem=True)
    sysfs = s.sysfs()
    region = "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax_region"
    sysfs.write(f"{region}/create", "1")
    assert sysfs.read(f"{region}/create") == "dax0.0"
    assert os.stat(s.p("dev/dax0.0")).st_size == 0
    sysfs.write("sys/bus/dax/devices/dax0.0/size", str(2 << 27))
    assert os.stat(s.p("dev/dax0.0")).st_size == 2 << 27
