"""Concurrent runs, signals and SIGKILL on the simulated kernel, with slowed writes so that
processes interleave the way udev's parallel boot-time ``apply`` runs do.

Invariants every test checks from the simulator's state (not from daxmode's output): every
device ends in a mode somebody asked for, ``auto_online_blocks`` is what it was, no range
leaked, no stale id entry, and the device nobody touched (dax4.0, unbound) is still unbound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daxmode import sim
from daxmode.modes import Mode, Options, set_mode

MiB = 1 << 20
BS = 128 * MiB
N = 4  # devices dax0.0 .. dax3.0 in devdax; dax4.0 unbound
PY = [sys.executable, "-m", "daxmode"]


def machine(root: Path, policy: str = "online", delay: float = 0.002) -> sim.Sim:
    """Five static pmem regions; daxN.0 (4 blocks each) in devdax for N < 4, dax4.0 unbound."""
    s = sim.Sim.create(root, block_size=BS, auto_online="offline")
    for i in range(N + 1):
        base = (64 + 8 * i) * BS
        s.add_region(i, base, 4 * BS)
        s.add_device(f"dax{i}.0", [(base, 4 * BS)], driver="device_dax" if i < N else None)
    s.p("sys/devices/system/memory/auto_online_blocks").write_text(policy + "\n")
    s.slow_writes(delay)
    s.clear_log()
    return s


def sane(s: sim.Sim, policy: str = "online") -> None:
    assert s.auto_online() == policy
    assert not s.leaked(), s.leaked()
    assert s.driver(f"dax{N}.0") is None, "the untouched unbound device was bound by someone's new_id"
    for i in range(N):
        name = f"dax{i}.0"
        drv = s.driver(name)
        assert drv in ("device_dax", "kmem", "fsdev_dax"), f"{name} left unbound"
        states = set(s.block_states(name).values())
        assert (states <= {"online"}) if drv == "kmem" else not states, (name, drv, states)
    for drv in ("device_dax", "kmem", "fsdev_dax"):
        for name in s.ids(drv):
            assert s.driver(name) == drv, f"stale {drv} id entry {name}"


def dm(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PY, "--root", str(root), "--sim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_processes_on_different_devices_under_an_online_policy(tmp_path: Path) -> None:
    """Before the bus lock, two runs both rolled back and left auto_online_blocks 'offline'."""
    s = machine(tmp_path)
    procs = [dm(tmp_path, "set", f"dax{i}.0", "system-ram") for i in range(N)]
    outs = [(p.wait(), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), outs
    sane(s)
    assert all(s.driver(f"dax{i}.0") == "kmem" for i in range(N))
    assert all(set(s.block_states(f"dax{i}.0").values()) == {"online"} for i in range(N))
    procs = [dm(tmp_path, "set", f"dax{i}.0", ("devdax", "fsdev")[i % 2], "--force") for i in range(N)]
    outs = [(p.wait(), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), outs
    sane(s)
    assert [s.driver(f"dax{i}.0") for i in range(N)] == ["device_dax", "fsdev_dax"] * (N // 2)


def test_processes_on_one_device_serialize(tmp_path: Path) -> None:
    s = machine(tmp_path)
    targets = ["system-ram", "fsdev", "devdax", "system-ram", "fsdev", "devdax"]
    procs = [dm(tmp_path, "set", "dax0.0", t, "--force") for t in targets]
    outs = [(p.wait(), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), outs
    sane(s)


def test_threads_on_different_devices(tmp_path: Path) -> None:
    s = machine(tmp_path, delay=0.001)
    sysfs = s.sysfs()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for target in (Mode.SYSTEM_RAM, Mode.FSDEV, Mode.DEVDAX):
                set_mode(sysfs, f"dax{i}.0", target, Options(force=True))
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    sane(s)
    assert all(s.driver(f"dax{i}.0") == "device_dax" for i in range(N))


def _wait_for(s: sim.Sim, pred, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred([e for e in s.log()]):
            return
        time.sleep(0.005)
    raise AssertionError(f"condition not reached; log: {s.log()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_onlining_rolls_back(tmp_path: Path, sig: signal.Signals) -> None:
    s = machine(tmp_path, delay=0.05)
    p = dm(tmp_path, "set", "dax0.0", "system-ram")
    _wait_for(s, lambda log: sum(e.path.endswith("/state") for e in log) >= 2)
    p.send_signal(sig)
    rc = p.wait(timeout=60)
    _, err = p.communicate()
    assert rc == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"interrupted by {sig.name}; rolled back, dax0.0 is back in devdax" in err, err
    s.slow_writes(0)
    assert s.driver("dax0.0") == "device_dax" and not s.block_states("dax0.0")
    sane(s)


def test_sigkill_with_the_policy_held_is_repaired_by_the_next_run(tmp_path: Path) -> None:
    s = machine(tmp_path, delay=0.3)
    p = dm(tmp_path, "set", "dax0.0", "system-ram")
    _wait_for(s, lambda log: any(e.path.endswith("auto_online_blocks") and e.value == "offline" for e in log))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    s.slow_writes(0)
    assert s.auto_online() == "offline", "the kill was meant to land while the policy is held"
    journal = json.loads((tmp_path / "run/daxmode/dax0.0.journal").read_text())
    assert journal["to"] == "system-ram" and journal["step"] == "bind kmem"
    ls = subprocess.run([*PY, "--root", str(tmp_path), "--sim", "list"], capture_output=True, text=True)
    assert ls.returncode == 0 and "dax0.0: a transition devdax -> system-ram" in ls.stderr, ls.stderr
    r = subprocess.run(
        [*PY, "--root", str(tmp_path), "--sim", "set", "dax0.0", "system-ram"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "restored auto_online_blocks to 'online'" in r.stderr
    assert s.driver("dax0.0") == "kmem" and set(s.block_states("dax0.0").values()) == {"online"}
    assert not (tmp_path / "run/daxmode/dax0.0.journal").exists()
    assert not (tmp_path / "run/daxmode/policy.hold").exists()
    sane(s)


def test_sigkill_after_new_id_side_effect_is_undone_by_recovery(tmp_path: Path) -> None:
    """Killed between new_id (which bound the unbound dax4.0 too) and its undo."""
    s = machine(tmp_path, policy="offline", delay=0.3)
    assert set_mode(s.sysfs(), "dax0.0", Mode.FSDEV).changed
    s.slow_writes(0.3)
    s.clear_log()
    p = dm(tmp_path, "set", "dax0.0", "devdax")
    _wait_for(s, lambda log: any(e.path.endswith("device_dax/new_id") and e.result == "ok" for e in log))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    s.slow_writes(0)
    assert s.driver(f"dax{N}.0") == "device_dax", "new_id's driver_attach should have bound it"
    r = subprocess.run(
        [*PY, "--root", str(tmp_path), "--sim", "set", "dax0.0", "devdax"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert f"unbound dax{N}.0 from device_dax" in r.stderr, r.stderr
    assert s.driver("dax0.0") == "device_dax"
    sane(s, policy="offline")


def test_a_live_run_is_not_reported_as_interrupted(tmp_path: Path) -> None:
    s = machine(tmp_path, delay=0.2)
    p = dm(tmp_path, "set", "dax0.0", "system-ram")
    _wait_for(s, lambda log: len(log) >= 2)
    ls = subprocess.run([*PY, "--root", str(tmp_path), "--sim", "list"], capture_output=True, text=True)
    assert "interrupted" not in ls.stderr, ls.stderr
    assert p.wait(timeout=60) == 0
    sane(s)


def test_journal_lives_in_a_private_directory(tmp_path: Path) -> None:
    machine(tmp_path, delay=0)
    run_dir = tmp_path / "run/daxmode"
    p = dm(tmp_path, "set", "dax0.0", "fsdev")
    assert p.wait() == 0
    st = os.stat(run_dir)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.geteuid()
    assert sorted(os.listdir(run_dir)) == ["bus.lock", "dax0.0.lock"]
