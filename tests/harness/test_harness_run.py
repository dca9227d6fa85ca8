"""What a run sets up and records: per-guest identities and planted host state, timing, guest facts,
the guest suite's argv, the media digest, the private network, plain pytest collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mhd.guest import facts, guestnet
from mhd.host import (
    identity,
    suiterun,
    suites,
    timing,
    verdict,
)

PROJECT = Path(__file__).resolve().parents[2]

# ---- identity, timing, facts, suites, network, KVM cache ----------------------------------------


def test_identities_are_distinct_per_guest_and_famfs_shaped() -> None:
    import random
    import uuid

    ids = identity.identities(3)
    assert len({i.machine_id for i in ids}) == len({i.system_uuid for i in ids}) == 3
    assert all(len(i.machine_id) == 32 and str(uuid.UUID(i.system_uuid)) == i.system_uuid for i in ids)
    assert [i.hostname for i in ids] == ["daxmode-host0", "daxmode-host1", "daxmode-host2"]
    assert identity.identities(2, random.Random(1)) == identity.identities(2, random.Random(1))
    assert ids[1].env()["DAXMODE_VM_SYSTEM_UUID"] == ids[1].system_uuid


def test_masked_paths_cover_the_host_specific_state() -> None:
    env = identity.mask_env()
    for p in ("/opt/famfs", "/etc/machine-id", "/etc/daxmode.d", "/etc/daxctl.conf.d", "/etc/udev/rules.d"):
        assert p in env.split()
    for bad in (("relative",), ("/a b",), ("/etc/../x",)):
        with pytest.raises(ValueError):
            identity.mask_env(bad)


def test_decoys_would_change_a_verdict_if_a_guest_saw_them() -> None:
    import fnmatch
    import tomllib

    d = identity.identities(1)[0]
    files = identity.decoy_files(d)
    assert files["/opt/famfs/system_uuid"] == d.system_uuid + "\0"  # famfs's format: 36 chars and NUL
    assert files["/etc/machine-id"] == d.machine_id + "\n"
    # every decoy lies under a path the guests mask
    assert all(any(p == m or p.startswith(m + "/") for m in identity.MASKED) for p in files)
    # the daxmode.d decoy asks for system-ram on every dax device (the guest test applies it)
    (rule,) = tomllib.loads(files["/etc/daxmode.d/00-mhd-host-decoy.toml"])["device"]
    assert rule["mode"] == "system-ram" and fnmatch.fnmatchcase("dax0.0", rule["match"]["name"])
    assert identity.DECOY_UDEV_MARKER in files["/etc/udev/rules.d/00-mhd-host-decoy.rules"]


def test_planting_skips_directories_that_hold_the_run() -> None:
    prot = [Path("/opt/checkout"), Path("/work/results")]
    assert identity.plant_tops(("/etc", "/opt"), prot, exists=lambda p: True) == ["/etc"]
    assert identity.plant_tops(("/etc", "/opt"), [Path("/work")], exists=lambda p: p == "/etc") == ["/etc"]


@pytest.mark.skipif(os.geteuid() != 0, reason="planting needs root (a private mount namespace)")
def test_planted_state_is_seen_inside_the_namespace_only(tmp_path: Path) -> None:
    before = Path("/etc/machine-id").read_bytes() if Path("/etc/machine-id").exists() else None
    code = (
        "import sys, json; from pathlib import Path;"
        "from mhd.host import identity;"
        "d = identity.identities(1)[0];"
        "planted, note = identity.plant_host_state(Path(sys.argv[1]), d, [Path(sys.argv[1])]);"
        "print(json.dumps([planted, note, d.machine_id, Path('/etc/machine-id').read_text(),"
        " Path('/etc/daxmode.d/00-mhd-host-decoy.toml').exists()]))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    planted, note, mid, seen, rule = json.loads(r.stdout)
    if not planted:
        pytest.skip(note)
    assert seen == mid + "\n" and rule and "/etc/machine-id" in planted
    after = Path("/etc/machine-id").read_bytes() if Path("/etc/machine-id").exists() else None
    assert after == before and not Path("/etc/daxmode.d/00-mhd-host-decoy.toml").exists()


def test_timing_table_lists_phases_load_and_total() -> None:
    now = [100.0]
    t = timing.Timing(clock=lambda: now[0], load_start="1.50")
    with t.phase("boot") as p:
        now[0] += 20.0
        p.detail = "host0 19.5"
    t.add("teardown", 1.25, "parallel poweroff")
    now[0] += 2.0
    t.load_end = "1.80"
    table = t.table()
    assert "load average 1.50 at start, 1.80 at end" in table
    assert "  boot        20.0  host0 19.5" in table and "  teardown     1.2  parallel poweroff" in table
    assert table.splitlines()[-1].split() == ["total", "22.0"]
    assert json.loads(t.to_json())["phases"][0] == {"name": "boot", "seconds": 20.0, "detail": "host0 19.5"}


def test_boot_marks_become_a_breakdown() -> None:
    marks = timing.boot_marks("init 4.5\nstage2 6.7\nudev 7.8\nagent 8.1\nwarm 14.0\njunk\ninit 99\n")
    assert marks["init"] == 4.5  # the first mark of a name counts
    assert timing.boot_detail(marks) == "kernel 4.5, init 2.2, udev 1.1, setup 0.3, warm-up 5.9"
    assert timing.boot_detail({"init": 3.0}) == "kernel 3.0"


def test_kernel_facts_from_config_or_kallsyms(tmp_path: Path) -> None:
    cfg = facts.parse_config("CONFIG_FUSE_FS=y\n# CONFIG_FUSE_FAMFS_DAX is not set\nCONFIG_X=m\n")
    assert cfg == {"CONFIG_FUSE_FS": "y", "CONFIG_X": "m"}
    assert not facts.has_fuse_famfs(cfg, b"ffff famfs_fuse_x\n")  # the config is decisive
    assert facts.has_fuse_famfs({**cfg, "CONFIG_FUSE_FAMFS_DAX": "y"}, None)
    assert facts.has_fuse_famfs(None, b"ffffffff t famfs_file_init\n")
    assert not facts.has_fuse_famfs(None, None)
    rel = "6.14.11-famfs"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/fs/famfs/famfsv1.ko.xz: kernel/fs/dax.ko\n")
    assert facts.has_famfsv1(rel, str(tmp_path)) and not facts.has_famfsv1("other", str(tmp_path))
    (tree / "config").write_text("CONFIG_FUSE_FS=y\nCONFIG_FUSE_FAMFS_DAX=y\n")
    assert facts.kernel_config(rel, str(tmp_path))["CONFIG_FUSE_FAMFS_DAX"] == "y"
    got = facts.gather()
    assert set(got) == {"kernel", "fuse_famfs", "famfsv1", "fsdev", "udev", "daxctl", "famfs_tools"}
    assert set(got) <= set(verdict.FACTS)


def test_guest_pytest_argv_and_collect_count() -> None:
    argv = suites.pytest_argv("/v/python", "/p", ["tests/vm/guest"], "/run/j.xml", "not shared_media")
    assert argv[:3] == ["/v/python", "-m", "pytest"] and argv[-3:] == [
        "-m",
        "not shared_media",
        "tests/vm/guest",
    ]
    assert "junit_family=xunit1" in argv and "--junitxml=/run/j.xml" in argv
    assert suiterun.deselected("....s\n22 passed, 3 skipped, 2 deselected in 30.0s\n") == 2
    assert suiterun.deselected("22 passed in 30.0s\n") == 0


def test_media_digest_sees_any_change(tmp_path: Path) -> None:
    f = tmp_path / "m.raw"
    with open(f, "wb") as fh:
        fh.truncate(16 << 20)
    a = suites.media_digest(f)
    with open(f, "r+b") as fh:
        fh.seek(9 << 20)
        fh.write(b"\1")
    assert suites.media_digest(f) != a


def test_guest_network_batch() -> None:
    by_mac = {guestnet.mac(1, 1): "eth0", guestnet.mac(0, 2): "mhd2"}
    assert guestnet.batch(1, [1], by_mac) == [
        "link set dev lo up",
        "link set dev eth0 down",
        "link set dev eth0 name mhd1",
        "link set dev mhd1 up",
        "addr replace 10.77.1.2/24 dev mhd1",
    ]
    assert guestnet.batch(0, [2], by_mac)[1:] == [
        "link set dev mhd2 up",
        "addr replace 10.77.2.1/24 dev mhd2",
    ]


def test_plain_pytest_collects_both_test_modes_modules() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:]
    assert "tests/test_modes.py::" in r.stdout and "tests/vm/guest/test_modes.py::" in r.stdout
