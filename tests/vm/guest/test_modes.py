"""In-guest, real kernel: daxmode set/list against Linux's dax bus and memory hotplug.

Every check reads sysfs directly with plain open()/readlink (never through daxmode) to see
what daxmode did.  Memory is onlined only where the harness says it is safe
(DAXMODE_VM_ONLINE_OK=1: nvdimm backend, one host); elsewhere system-ram uses --no-online.

Covers: the issue-2 sequence, the ndctl daxctl-devices.sh and daxctl-famfs.sh cases ported
to daxmode, the raw kernel rules the simulator models (compared write by write against the
simulator), the auto-online policy hold, and rollback proven on the real kernel with
DAXMODE_FAULT (injected before the write reaches the kernel).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .sysview import block_ids, blocks, driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
ONLINE_OK = os.environ.get("DAXMODE_VM_ONLINE_OK") == "1"
BACKEND = os.environ.get("DAXMODE_VM_BACKEND", "")
DAXMODE = [sys.executable, "-m", "daxmode"]
BUS = Path("/sys/bus/dax")
MEM = Path("/sys/devices/system/memory")
POLICY = MEM / "auto_online_blocks"

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]


# ---------------------------------------------------------------- direct sysfs readers


def zones(name: str = DEV) -> set[str]:
    return {(MEM / f"memory{b}" / "valid_zones").read_text().strip() for b in blocks(name)}


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def daxmode(*args: str, env: dict[str, str] | None = None, subprocess_run: bool = False) -> Result:
    """Run the daxmode CLI: in this process (python start-up costs ~10 s under TCG) or, for the
    checks that need a real process (exit status, stderr, privileges), as a subprocess."""
    if subprocess_run:
        p = subprocess.run(
            [*DAXMODE, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
        )
        r = Result(p.returncode, p.stdout, p.stderr)
    else:
        from click.testing import CliRunner

        from daxmode.cli import main

        old = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            c = CliRunner().invoke(main, list(args))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if c.exception is not None and not isinstance(c.exception, SystemExit):
            raise c.exception
        r = Result(c.exit_code, c.stdout, c.stderr)
    print(f"$ daxmode {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def ok(*args: str) -> str:
    p = daxmode(*args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def ram_args() -> list[str]:
    return [] if ONLINE_OK else ["--no-online"]


def assert_mode(mode: str, online: bool | None = None) -> None:
    """The driver link and the memory blocks, read from sysfs."""
    want = {"devdax": "device_dax", "fsdev": "fsdev_dax", "system-ram": "kmem", None: None}[mode]
    assert driver() == want, f"{DEV}: driver {driver()}, want {want}"
    st = blocks()
    if mode == "system-ram":
        assert len(st) == len(block_ids()) > 0, st
        states = set(st.values())
        if online is None:
            online = ONLINE_OK
        assert states == ({"online"} if online else {"offline"}), st
        if online:
            assert zones() == {"Movable"}
    else:
        assert st == {}, f"{DEV} in {mode} but memory blocks present: {st}"


@pytest.fixture(autouse=True)
def back_to_devdax(devdax_policy_offline: None) -> None:
    """Each test starts in devdax with the policy offline and leaves the device so."""


# ---------------------------------------------------------------- the issue-2 sequence


def test_issue2_sequence(fsdev_kernel: str) -> None:
    """devdax -> fsdev -> devdax -> system-ram -> devdax -> fsdev -> system-ram --force -> devdax."""
    assert_mode("devdax")
    ok("set", DEV, "fsdev")
    assert_mode("fsdev")
    assert Path(f"/dev/{DEV}").is_char_device()
    ok("set", DEV, "devdax")
    assert_mode("devdax")
    ok("set", DEV, "system-ram", *ram_args())
    assert_mode("system-ram")
    if ONLINE_OK:  # leaving system-ram with memory online needs --force
        p = daxmode("set", DEV, "devdax")
        assert p.returncode == 7 and p.stderr.count("\n") == 1 and "--force" in p.stderr
        assert_mode("system-ram")
    ok("set", DEV, "devdax", "--force")
    assert_mode("devdax")
    ok("set", DEV, "fsdev")
    assert_mode("fsdev")
    ok("set", DEV, "system-ram", "--force", *ram_args())
    assert_mode("system-ram")
    ok("set", DEV, "devdax", "--force")
    assert_mode("devdax")


def test_list_json_keys() -> None:
    (row,) = json.loads(ok("list", "--json", DEV))
    assert row["chardev"] == DEV and row["mode"] == "devdax"
    assert row["size"] == int((BUS / "devices" / DEV / "size").read_text())
    assert row["align"] == int((BUS / "devices" / DEV / "align").read_text())
    assert row["region"]["dynamic"] is (BACKEND == "cxl")
    ok("set", DEV, "system-ram", *ram_args())
    (row,) = json.loads(ok("list", "--json", DEV))
    assert row["mode"] == "system-ram"
    assert row["total_memblocks"] == len(block_ids())
    assert row["online_memblocks"] == (len(block_ids()) if ONLINE_OK else 0)
    assert ("movable" in row) == ONLINE_OK
    ok("set", DEV, "devdax", "--force")


def test_all_nine_pairs(fsdev_kernel: str) -> None:
    modes = ["devdax", "fsdev", "system-ram"]
    for a in modes:
        for b in modes:
            ok("set", DEV, a, "--force", *(ram_args() if a == "system-ram" else []))
            assert_mode(a)
            out = ok("set", DEV, b, "--force", *(ram_args() if b == "system-ram" else []))
            assert_mode(b)
            if a == b:
                assert "already" in out
    ok("set", DEV, "devdax", "--force")


def test_dry_run_touches_nothing() -> None:
    out = ok("set", DEV, "system-ram", "--dry-run")
    assert f"write '{DEV}' > /sys/bus/dax/drivers/kmem/new_id" in out
    assert_mode("devdax")


def test_policy_online_is_held_not_obeyed() -> None:
    """daxctl 76.1 aborts when auto_online_blocks=online; daxmode holds it at offline while
    kmem probes, so --no-online really leaves the memory offline, and restores the policy."""
    if not ONLINE_OK:
        pytest.skip("needs DAXMODE_VM_ONLINE_OK=1: a failed hold would online this memory")
    POLICY.write_text("online")
    ok("set", DEV, "system-ram", "--no-online")
    assert POLICY.read_text().strip() == "online"
    assert_mode("system-ram", online=False)
    POLICY.write_text("offline")
    ok("set", DEV, "devdax")


# ---------------------------------------------------------------- rollback on the real kernel


def test_rollback_fsdev_bind_fails(fsdev_kernel: str) -> None:
    fault = "/sys/bus/dax/drivers/fsdev_dax/new_id:ENOMEM:1,/sys/bus/dax/drivers/fsdev_dax/bind:EIO:1"
    p = daxmode("set", DEV, "fsdev", env={"DAXMODE_FAULT": fault})
    assert p.returncode == 9, p.stderr
    assert p.stderr.strip().endswith(f"rolled back, {DEV} is back in devdax")
    assert_mode("devdax")


def test_rollback_leaving_system_ram() -> None:
    ok("set", DEV, "system-ram", *ram_args())
    fault = "/sys/bus/dax/drivers/device_dax/new_id:ENOMEM:1,/sys/bus/dax/drivers/device_dax/bind:EIO:1"
    p = daxmode("set", DEV, "devdax", "--force", env={"DAXMODE_FAULT": fault}, subprocess_run=True)
    assert p.returncode == 9, p.stderr
    assert p.stderr.strip().endswith(f"rolled back, {DEV} is back in system-ram")
    assert_mode("system-ram")  # memory re-onlined in its zone (Movable) when it was online
    ok("set", DEV, "devdax", "--force")


def test_rollback_midway_through_onlining() -> None:
    if not ONLINE_OK:
        pytest.skip("needs DAXMODE_VM_ONLINE_OK=1 (onlines memory)")
    ids = block_ids()
    victim = ids[len(ids) // 2]
    p = daxmode("set", DEV, "system-ram", env={"DAXMODE_FAULT": f"{MEM}/memory{victim}/state:EBUSY:1"})
    assert p.returncode == 9, p.stderr
    assert f"memory{victim}" in p.stderr and p.stderr.strip().endswith("back in devdax")
    assert_mode("devdax")


def test_left_partial_names_the_state(fsdev_kernel: str) -> None:
    fault = ",".join(
        f"/sys/bus/dax/drivers/{d}/{a}:EIO:1" for d in ("fsdev_dax", "device_dax") for a in ("new_id", "bind")
    )
    p = daxmode("set", DEV, "fsdev", env={"DAXMODE_FAULT": fault}, subprocess_run=True)
    assert p.returncode == 10, p.stderr
    assert p.stderr.count("\n") == 1
    assert "left with no driver bound (disabled), no memory blocks present" in p.stderr
    assert driver() is None
    ok("set", DEV, "devdax")  # recovers from unbound
    assert_mode("devdax")


def test_errors_one_line_each(fsdev_kernel: str) -> None:
    p = daxmode("set", "dax99.0", "devdax", subprocess_run=True)
    assert p.returncode == 3 and DEV in p.stderr and p.stderr.count("\n") == 1
    p = daxmode("set", DEV, "invalidmode")
    assert p.returncode == 4 and p.stderr.count("\n") == 1
    p = daxmode("set", DEV, "devdax", "--no-online")
    assert p.returncode == 11
    with tempfile.TemporaryDirectory() as d:  # a mount naming the device keeps it in fsdev
        ok("set", DEV, "fsdev")
        mi = Path(d) / "proc/self/mountinfo"
        _mirror_root(Path(d))
        mi.write_text(
            Path("/proc/self/mountinfo").read_text() + f"99 1 0:99 / /mnt/f rw - famfs /dev/{DEV} rw\n"
        )
        p = daxmode("--root", d, "set", DEV, "devdax")
        assert p.returncode == 7 and "mounted on /mnt/f" in p.stderr
    ok("set", DEV, "devdax")


def _mirror_root(d: Path) -> None:
    """A root whose sys/ and dev/ are the real ones but whose proc/self/mountinfo is ours."""
    (d / "proc/self").mkdir(parents=True)
    (d / "sys").symlink_to("/sys")
    (d / "dev").symlink_to("/dev")


def test_not_root_exits_5() -> None:
    mode = os.stat("/root").st_mode & 0o7777
    os.chmod("/root", mode | 0o001)  # the venv's python lives under /root; guest-local overlay

    nobody = {"user": 65534, "group": 65534, "extra_groups": []}  # not preexec_fn: see the conftest
    try:
        p = subprocess.run(
            [*DAXMODE, "set", DEV, "fsdev"], capture_output=True, text=True, env={"HOME": "/"}, **nobody
        )
        q = subprocess.run([*DAXMODE, "list"], capture_output=True, text=True, env={"HOME": "/"}, **nobody)
    finally:
        os.chmod("/root", mode)
    if "No module named" in p.stderr or ("Permission denied" in p.stderr and p.returncode != 5):
        pytest.skip(f"the venv is not usable by nobody here: {p.stderr.strip()[-200:]}")
    assert p.returncode == 5 and p.stderr.startswith("daxmode: ") and p.stderr.count("\n") == 1
    assert q.returncode == 0 and DEV in q.stdout
    assert_mode("devdax")


# ---------------------------------------------------------------- the kernel rules the simulator models


def _raw_scenario(write, read_driver, read_blocks) -> list[str]:  # type: ignore[no-untyped-def]
    """Raw sysfs writes and the kernel's answers; run against the real kernel and the simulator."""
    trace: list[str] = []

    def w(attr: str, value: str) -> None:
        try:
            write(attr, value)
            res = "ok"
        except OSError as e:
            res = errno.errorcode.get(e.errno or 0, str(e.errno))
        trace.append(f"{attr} {value}: {res}; driver={read_driver()}")

    d = "sys/bus/dax/drivers"
    # id lists are not visible in sysfs; make device_dax's known on both sides first (the device
    # is bound, so driver_attach skips it).  On CXL this id is what lets device_dax match.
    w(f"{d}/device_dax/new_id", DEV)
    w(f"{d}/device_dax/bind", DEV)  # already bound -> EBUSY
    w(f"{d}/fsdev_dax/unbind", DEV)  # not bound to it -> ENODEV
    w(f"{d}/device_dax/new_id", "bogus")  # not daxX.Y -> EINVAL
    w(f"{d}/device_dax/remove_id", DEV)  # never unbinds
    w(f"{d}/device_dax/unbind", DEV)
    w(f"{d}/fsdev_dax/bind", DEV)  # fsdev matches only by id -> ENODEV
    w(f"{d}/device_dax/new_id", "dax99.9")  # driver_attach binds the unbound device by type
    w(f"{d}/device_dax/remove_id", "dax99.9")
    w(f"{d}/device_dax/unbind", DEV)
    w(f"{d}/fsdev_dax/new_id", DEV)  # binds through the id list
    w(f"{d}/fsdev_dax/bind", DEV)  # -> EBUSY
    w(f"{d}/fsdev_dax/remove_id", DEV)
    w(f"{d}/fsdev_dax/unbind", DEV)
    w(f"{d}/kmem/new_id", DEV)  # static region: kmem binds only by id; blocks hot-added offline
    trace.append(f"blocks: {sorted(set(read_blocks().values()))} x{len(read_blocks())}")
    w(f"{d}/kmem/bind", DEV)  # -> EBUSY
    first = min(read_blocks())
    w(f"sys/devices/system/memory/memory{first}/state", "offline")  # already offline -> EINVAL
    w(f"sys/devices/system/memory/memory{first}/state", "bogus")  # -> EINVAL
    if ONLINE_OK:
        w(f"sys/devices/system/memory/memory{first}/state", "online_movable")
        w(f"sys/devices/system/memory/memory{first}/state", "online_movable")  # already -> EINVAL
        w(f"sys/devices/system/memory/memory{first}/state", "offline")
    w(f"{d}/kmem/remove_id", DEV)
    w(f"{d}/kmem/unbind", DEV)  # all offline: blocks removed
    trace.append(f"blocks after kmem unbind: {len(read_blocks())}")
    w(f"{d}/device_dax/bind", DEV)  # by type on pmem; ENODEV on CXL (a KMEM-type region)
    if read_driver() is None:
        w(f"{d}/device_dax/new_id", DEV)
    w(f"{d}/device_dax/remove_id", DEV)
    return trace


def test_kernel_rules_match_the_simulator(fsdev_kernel: str) -> None:
    """The same raw writes on the real kernel and on daxmode's simulator give the same answers."""
    from daxmode import sim

    def real_write(attr: str, value: str) -> None:
        with open(f"/{attr}", "w") as f:
            f.write(value + "\n")

    real = _raw_scenario(real_write, driver, blocks)

    # a simulated twin of this device: same ranges, node, block size, a static region
    dev = BUS / "devices" / DEV
    bs = int((MEM / "block_size_bytes").read_text(), 16)
    ranges = []
    i = 0
    while (dev / f"mapping{i}").is_dir():
        s = int((dev / f"mapping{i}" / "start").read_text(), 16)
        e = int((dev / f"mapping{i}" / "end").read_text(), 16)
        ranges.append((s, e - s + 1))
        i += 1
    rid = int(DEV[3:].split(".")[0])
    with tempfile.TemporaryDirectory() as root:
        s = sim.Sim.create(root, block_size=bs, boot_blocks=0)
        cxl = BACKEND == "cxl"  # CXL RAM regions carry IORESOURCE_DAX_KMEM: kmem matches by type
        s.add_region(rid, ranges[0][0], sum(n for _, n in ranges), dynamic=cxl, kmem=cxl)
        s.add_device(DEV, ranges, target_node=int((dev / "target_node").read_text()), driver="device_dax")
        sysfs = s.sysfs()

        def sim_write(attr: str, value: str) -> None:
            try:
                sysfs.write(attr, value)
            except Exception as e:  # SysfsError carries the errno
                raise OSError(getattr(e, "errno", errno.EIO), str(e)) from None

        def sim_blocks() -> dict[int, str]:
            return s.block_states(DEV)

        simulated = _raw_scenario(sim_write, lambda: s.driver(DEV), sim_blocks)
    print("\n".join(f"real: {a}\n sim: {b}" for a, b in zip(real, simulated, strict=False)))
    assert real == simulated
    assert_mode("devdax")


# ---------------------------------------------------------------- ndctl test/daxctl-devices.sh, ported


def test_daxctl_devices_sh() -> None:
    """ndctl (v81) test/daxctl-devices.sh case by case, with daxmode."""
    # 1. policy saved and set to offline by the fixture
    # 2. reconfigure-device -N -m system-ram
    ok("set", DEV, "system-ram", "--no-online")
    assert_mode("system-ram", online=False)
    if ONLINE_OK:
        # 3. online-memory: daxmode onlines through `set system-ram` on a system-ram device
        out = ok("set", DEV, "system-ram")
        assert "online" in out
        assert_mode("system-ram", online=True)
        # 4. offline-memory has no separate command: leaving system-ram with --force offlines
    # 5. -m devdax with memory offline needs no --force
    if not ONLINE_OK:
        ok("set", DEV, "devdax")
        assert_mode("devdax")
    else:
        ok("set", DEV, "devdax", "--force")
        assert_mode("devdax")
    # 6./7. -m system-ram (online movable) then -f -m devdax
    ok("set", DEV, "system-ram", *ram_args())
    assert_mode("system-ram")
    ok("set", DEV, "devdax", "--force")
    assert_mode("devdax")
    # 8. system-ram, then ndctl disable-namespace must fail while memory is in use as RAM
    ok("set", DEV, "system-ram", *ram_args())
    if ONLINE_OK and shutil.which("ndctl") and BACKEND == "nvdimm":
        ns = _namespace_of(DEV)
        if ns:
            r = subprocess.run(["ndctl", "disable-namespace", ns], capture_output=True, text=True)
            assert r.returncode != 0, "ndctl disabled a namespace whose memory is online"
    # 9. -f -m devdax
    ok("set", DEV, "devdax", "--force")
    assert_mode("devdax")
    # 10. policy online + -N -m system-ram: daxctl must fail; daxmode holds the policy instead
    if ONLINE_OK:
        POLICY.write_text("online")
        ok("set", DEV, "system-ram", "--no-online")
        assert_mode("system-ram", online=False)
        assert POLICY.read_text().strip() == "online"
        POLICY.write_text("offline")
        ok("set", DEV, "devdax")


def _namespace_of(dev: str) -> str | None:
    p = os.path.realpath(BUS / "devices" / dev)
    nd_dax = Path(p).parent
    ns = nd_dax / "namespace"
    return ns.read_text().strip() if ns.exists() else None


# ---------------------------------------------------------------- ndctl test/daxctl-famfs.sh, ported


def test_daxctl_famfs_sh(fsdev_kernel: str) -> None:
    """ndctl test/daxctl-famfs.sh (John Groves' "Add test/daxctl-famfs.sh", V6 2026-05-26, in ndctl's
    pending branch) case by case, with daxmode."""
    # transitions devdax->famfs, famfs->famfs, famfs->devdax, devdax->devdax
    ok("set", DEV, "famfs")
    assert_mode("fsdev")
    assert json.loads(ok("list", "--json", DEV))[0]["mode"] == "fsdev"
    assert "already fsdev" in ok("set", DEV, "famfs")  # daxctl re-binds; daxmode: a no-op
    assert_mode("fsdev")
    ok("set", DEV, "devdax")
    assert_mode("devdax")
    assert json.loads(ok("list", "--json", DEV))[0]["mode"] == "devdax"
    assert "already devdax" in ok("set", DEV, "devdax")
    # errors: from famfs, an invalid mode fails
    ok("set", DEV, "famfs")
    p = daxmode("set", DEV, "invalidmode")
    assert p.returncode == 4
    assert_mode("fsdev")
    ok("set", DEV, "devdax")
    # system-ram with policy offline
    ok("set", DEV, "system-ram", "--no-online")
    assert_mode("system-ram", online=False)
    # daxctl: -m famfs from system-ram must fail; daxmode plans it through devdax (memory offline)
    ok("set", DEV, "famfs")
    assert_mode("fsdev")
    ok("set", DEV, "devdax")
    ok("set", DEV, "famfs")
    assert_mode("fsdev")
    ok("set", DEV, "devdax")
    ok("set", DEV, "system-ram", *ram_args())
    assert_mode("system-ram")
    ok("set", DEV, "devdax", "--force")
    assert_mode("devdax")
