"""The command line: one stderr line and a distinct exit code per error; real subprocess runs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from simworld import DEV, put_in, world

from daxmode import sim
from daxmode.cli import main
from daxmode.modes import Mode


def run(root: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--root", str(root), "--sim", *args])
    return r.exit_code, r.stdout, r.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("daxmode: ")
    return lines[0]


def test_list_table_and_json(tmp_path: Path) -> None:
    world(tmp_path)
    rc, out, _ = run(tmp_path, "list")
    assert rc == 0
    assert out.splitlines()[0].split()[:3] == ["DEVICE", "MODE", "SIZE"]
    assert "dax1.1  devdax (disabled)" in out
    rc, out, _ = run(tmp_path, "list", "--json")
    rows = {r["chardev"]: r for r in json.loads(out)}
    assert rows["dax0.0"]["mode"] == "devdax" and rows["dax0.0"]["target_node"] == 0
    assert rows["dax0.0"]["region"]["dynamic"] is False
    assert rows["dax1.0"]["mode"] == "system-ram"
    assert rows["dax1.0"]["online_memblocks"] == 0 and rows["dax1.0"]["total_memblocks"] == 4
    assert "movable" not in rows["dax1.0"]  # daxctl: only when every block is online
    assert rows["dax1.1"]["state"] == "disabled"
    assert rows["dax1.1"]["region"]["available_size"] > 0


def test_list_fsdev_name_and_named_devices(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.FSDEV)
    rc, out, _ = run(tmp_path, "list", "--json", "/dev/dax0.0")
    assert rc == 0
    (row,) = json.loads(out)
    assert row["mode"] == "fsdev"


def test_list_legacy(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.add_legacy_device("dax5.0", 1 << 30)
    rc, out, _ = run(tmp_path, "list", "--json", "dax5.0")
    assert rc == 0 and json.loads(out) == [{"chardev": "dax5.0", "size": 1 << 30, "model": "legacy"}]


def test_set_and_famfs_alias(tmp_path: Path) -> None:
    world(tmp_path)
    rc, out, err = run(tmp_path, "set", DEV, "famfs")
    assert (rc, out.strip(), err) == (0, "dax0.0: devdax -> fsdev", "")
    rc, out, _ = run(tmp_path, "set", DEV, "fsdev")
    assert (rc, out.strip()) == (0, "dax0.0: already fsdev")
    rc, out, _ = run(tmp_path, "set", DEV, "system-ram", "--no-movable")
    assert rc == 0 and out.strip() == "dax0.0: fsdev -> system-ram (4/4 memory blocks online, not movable)"


def test_dry_run_prints_writes(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    rc, out, _ = run(tmp_path, "set", DEV, "fsdev", "--dry-run")
    assert rc == 0
    assert out.splitlines() == [
        "dax0.0: devdax -> fsdev",
        "  write 'dax0.0' > /sys/bus/dax/drivers/device_dax/remove_id",
        "  write 'dax0.0' > /sys/bus/dax/drivers/device_dax/unbind",
        "  write 'dax0.0' > /sys/bus/dax/drivers/fsdev_dax/new_id",
        "  write 'dax0.0' > /sys/bus/dax/drivers/fsdev_dax/bind  # only if new_id did not bind it",
    ]
    assert s.log() == [] and s.driver(DEV) == "device_dax"


def test_error_unknown_device(tmp_path: Path) -> None:
    world(tmp_path)
    rc, _, err = run(tmp_path, "set", "dax9.0", "devdax")
    assert rc == 3
    assert one_line(err) == "daxmode: no dax device 'dax9.0' (existing: dax0.0, dax1.0, dax1.1)"
    rc, _, err = run(tmp_path, "list", "dax9.0")
    assert rc == 3 and one_line(err)


def test_error_bad_mode(tmp_path: Path) -> None:
    world(tmp_path)
    rc, _, err = run(tmp_path, "set", DEV, "invalidmode")
    assert rc == 4 and "unknown mode 'invalidmode'" in one_line(err)


def test_error_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    r = CliRunner().invoke(main, ["--root", "/", "set", DEV, "devdax"])
    assert r.exit_code == 5 and "needs root" in one_line(r.stderr)


def test_error_legacy(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.add_legacy_device("dax5.0", 1 << 30)
    rc, _, err = run(tmp_path, "set", "dax5.0", "devdax")
    assert rc == 6 and "daxctl migrate-device-model" in one_line(err)


def test_error_busy_memory_online(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    rc, _, err = run(tmp_path, "set", DEV, "devdax")
    assert rc == 7
    assert one_line(err) == (
        "daxmode: dax0.0: 4 memory block(s) online (memory64-67); use --force to offline them"
    )
    rc, out, _ = run(tmp_path, "set", DEV, "devdax", "--force")
    assert rc == 0 and out.strip() == "dax0.0: system-ram -> devdax"


def test_error_busy_mounted(tmp_path: Path) -> None:
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.FSDEV)
    s.add_mount("/dev/dax0.0", "/mnt/famfs", "famfs", "rw")
    rc, _, err = run(tmp_path, "set", DEV, "devdax")
    assert rc == 7 and "mounted on /mnt/famfs (famfs)" in one_line(err)


def test_error_kernel_refused(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.fail_write("/sys/bus/dax/drivers/device_dax/remove_id", errno.EPERM)
    rc, _, err = run(tmp_path, "set", DEV, "fsdev")
    line = one_line(err)
    assert rc == 8
    assert "/sys/bus/dax/drivers/device_dax/remove_id" in line and "(EPERM)" in line
    assert line.endswith("nothing was changed")


def test_error_rolled_back(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.fail_write("/sys/bus/dax/drivers/fsdev_dax/new_id", errno.ENOMEM)
    rc, _, err = run(tmp_path, "set", DEV, "fsdev")
    line = one_line(err)
    assert rc == 9
    assert "could not bind dax0.0 to fsdev_dax" in line and "(ENODEV)" in line  # fsdev: id list only
    assert line.endswith("rolled back, dax0.0 is back in devdax")
    assert s.driver(DEV) == "device_dax"


def test_error_left_partial(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    s.fail_write("/sys/bus/dax/drivers/fsdev_dax/new_id", errno.ENOMEM)
    s.fail_write("/sys/bus/dax/drivers/device_dax/new_id", errno.ENOMEM)
    s.fail_write("/sys/bus/dax/drivers/device_dax/bind", errno.EIO)
    rc, _, err = run(tmp_path, "set", DEV, "fsdev")
    line = one_line(err)
    assert rc == 10
    assert line.endswith("dax0.0 is left with no driver bound (disabled), no memory blocks present")


def test_error_invalid_argument_and_usage(tmp_path: Path) -> None:
    world(tmp_path)
    rc, _, err = run(tmp_path, "set", DEV, "devdax", "--no-online")
    assert rc == 11 and "only apply to system-ram" in one_line(err)
    rc, _, _ = run(tmp_path, "set", DEV)
    assert rc == 2
    rc, _, _ = run(tmp_path, "set", DEV, "devdax", "--bogus")
    assert rc == 2


def test_verbose_prints_writes(tmp_path: Path) -> None:
    world(tmp_path)
    r = CliRunner().invoke(main, ["--root", str(tmp_path), "--sim", "-v", "set", DEV, "fsdev"])
    assert r.exit_code == 0
    assert "write 'dax0.0' > /sys/bus/dax/drivers/fsdev_dax/new_id" in r.stderr


# ------------------------------------------------------------------ real subprocesses

EXE = [sys.executable, "-c", "from daxmode.cli import main; main(prog_name='daxmode')"]


def dm(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, "--root", str(root), "--sim", *args], capture_output=True, text=True, env=env
    )


def test_subprocess_sees_the_same_world(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    p = subprocess.run(
        [*EXE, "--root", str(tmp_path), "--sim", "set", DEV, "system-ram"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "dax0.0: devdax -> system-ram (4/4 memory blocks online, movable)"
    assert s.driver(DEV) == "kmem" and set(s.block_states(DEV).values()) == {"online"}
    p = dm(tmp_path, "list", "--json", DEV)
    assert json.loads(p.stdout)[0]["movable"] is True


def test_subprocess_env_fault_rolls_back(tmp_path: Path) -> None:
    """DAXMODE_FAULT is how the VM suite proves rollback on the real kernel."""
    s, sysfs = world(tmp_path)
    put_in(s, sysfs, Mode.SYSTEM_RAM)
    env = dict(
        os.environ,
        DAXMODE_FAULT="/sys/bus/dax/drivers/device_dax/new_id:EIO:1,"
        "/sys/bus/dax/drivers/device_dax/bind:ENXIO:1",
    )
    p = subprocess.run(
        [*EXE, "--root", str(tmp_path), "--sim", "set", DEV, "devdax", "--force"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 9, p.stderr
    assert p.stderr.strip().endswith("rolled back, dax0.0 is back in system-ram")
    assert s.driver(DEV) == "kmem" and set(s.block_states(DEV).values()) == {"online"}
    # injected faults never reach the (simulated) kernel
    assert not any(e.path.endswith("device_dax/bind") for e in s.log())


def test_console_script(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("daxmode")
    if not exe.exists():
        pytest.skip("console script not installed")
    sim.standard(tmp_path)
    p = subprocess.run(
        [str(exe), "--root", str(tmp_path), "--sim", "set", "dax7.7", "devdax"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 3
    assert p.stderr == "daxmode: no dax device 'dax7.7' (existing: dax0.0, dax1.0, dax1.1)\n"


def test_set_json_outcome_and_plan(tmp_path: Path) -> None:
    s, _ = world(tmp_path, auto_online="online")
    rc, out, _ = run(tmp_path, "set", DEV, "system-ram", "--dry-run", "--json")
    plan = json.loads(out)
    assert rc == 0 and plan["dry_run"] and plan["from"] == "devdax" and plan["to"] == "system-ram"
    assert plan["steps"] == ["unbind device_dax", "bind kmem", "online memory"]
    writes = [a["path"] for a in plan["plan"] if a["kind"] == "write"]
    assert writes[0] == "/sys/bus/dax/drivers/device_dax/remove_id" and writes.count(writes[2]) == 2
    assert s.driver(DEV) == "device_dax"
    rc, out, _ = run(tmp_path, "set", DEV, "system-ram", "--json")
    res = json.loads(out)
    assert rc == 0 and res["changed"] and (res["online_memblocks"], res["total_memblocks"]) == (4, 4)
    assert res["movable"] is True and res["side_effects_undone"] == ["dax1.1"], res
    assert s.driver("dax1.1") is None and s.auto_online() == "online"
    rc, out, _ = run(tmp_path, "set", DEV, "system-ram", "--json")
    assert json.loads(out)["changed"] is False


def test_set_refuses_options_online_memory_does_not_meet(tmp_path: Path) -> None:
    """--no-movable / --no-online on a device already online and movable: refused, never
    "already system-ram" with the option dropped."""
    s, _ = world(tmp_path, auto_online="online")
    assert run(tmp_path, "set", DEV, "system-ram")[0] == 0
    for flag, why in (("--no-movable", "does not re-zone"), ("--no-online", "does not offline")):
        rc, out, err = run(tmp_path, "set", DEV, "system-ram", flag)
        assert rc == 11 and out == "" and why in one_line(err) and f"set {DEV} devdax --force" in err
    assert s.driver(DEV) == "kmem"
    rc, out, _ = run(tmp_path, "set", DEV, "system-ram", "--json")
    assert rc == 0 and json.loads(out)["movable"] is True


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    for root, what in ((tmp_path / "nonexistent", "does not exist"), (f, "is not a directory")):
        r = CliRunner().invoke(main, ["--root", str(root), "list"])
        assert (
            r.exit_code == 11 and r.stdout == "" and one_line(r.stderr) == f"daxmode: --root {root}: {what}"
        )


def test_set_shows_progress_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar is drawn from the executor's progress events (a terminal is faked for click)."""
    world(tmp_path, blocks=32)
    monkeypatch.setattr("daxmode.cli._common.sys.stderr.isatty", lambda: True, raising=False)
    events = []
    from daxmode.cli import _common

    real = _common.progress_bar

    def spy(st):  # type: ignore[no-untyped-def]
        cm = real(st)

        class Wrap:
            def __enter__(self):  # type: ignore[no-untyped-def]
                cb = cm.__enter__()
                return lambda ev: (events.append(ev), cb and cb(ev))

            def __exit__(self, *a):  # type: ignore[no-untyped-def]
                return cm.__exit__(*a)

        return Wrap()

    monkeypatch.setattr("daxmode.cli.devices.progress_bar", spy)
    rc, _, _ = run(tmp_path, "set", DEV, "system-ram")
    assert rc == 0
    assert [(e.what, e.done) for e in events] == [("onlining", i) for i in range(1, 33)]


def test_python_dash_m_daxmode(tmp_path: Path) -> None:
    world(tmp_path)
    p = subprocess.run([sys.executable, "-m", "daxmode", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("daxmode, version ")
    p = subprocess.run(
        [sys.executable, "-m", "daxmode", "--root", str(tmp_path), "--sim", "list", "--json"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0
    assert {r["chardev"] for r in json.loads(p.stdout)} == {"dax0.0", "dax1.0", "dax1.1"}


def test_sim_flag_refuses_a_real_tree(tmp_path: Path) -> None:
    rc, _, err = run(tmp_path, "list")
    assert rc == 11 and "is not a simulated tree" in one_line(err)


def test_device_named_by_its_sysfs_path(tmp_path: Path) -> None:
    s, _ = world(tmp_path)
    rc, _, err = run(tmp_path, "set", "/sys/bus/dax/devices/dax0.0", "fsdev")
    assert rc == 0, err
    real = "/" + os.path.relpath(os.path.realpath(tmp_path / "sys/bus/dax/devices/dax0.0"), tmp_path)
    rc, _, err = run(tmp_path, "set", real, "devdax")
    assert rc == 0, err
    assert s.driver(DEV) == "device_dax"
