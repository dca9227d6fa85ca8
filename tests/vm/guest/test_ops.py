"""In-guest (real kernel): configuration survives the device being re-created, via udev.

A daxmode.d rule asks for fsdev by nvdimm namespace; ``daxmode install-units`` installs the
udev rule (the RUN fallback here: the guest has udevd but no systemd as PID 1); then the
namespace is reconfigured with ndctl, which destroys and re-creates the dax device (it comes
back in devdax, bound by type), and nobody runs daxmode: the rule must bring it back to fsdev.
The driver link is read from sysfs directly.  On the CXL backend (no ndctl namespace) the
same path is driven by a synthetic ``udevadm trigger --action=add``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .sysview import driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BACKEND = os.environ.get("DAXMODE_VM_BACKEND", "")
VENV_BIN = Path(sys.executable).parent
DAXMODE = str(VENV_BIN / "daxmode")
CONF = Path("/etc/daxmode.d/90-vm-test-ops.toml")
RULE = Path("/etc/udev/rules.d/90-daxmode.rules")
LOG = Path("/run/daxmode-apply.log")

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not DEV or not Path("/sys/bus/dax").is_dir(), reason="runs inside a test guest only"),
]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> rc {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def wait_driver(dev: str, want: str, timeout: float = 120.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver(dev) == want:
            return want
        time.sleep(0.5)
    return driver(dev)


def _udev_state() -> str:
    """What udev knows, for a failure message: is udevd answering, is our rule there, which RUN
    programs it would run for the device (udevadm test runs nothing; ahead of ours come udev's
    `kmod load` and Debian's `daxctl -C`, which bookworm's daxctl 76.1 rejects at once), and what
    udevd's workers are running now (a RUN that hangs holds the event up to udevd's 180 s timeout)."""
    out = []
    for argv in (
        ["udevadm", "control", "--ping", "--timeout=5"],
        ["ls", "-l", str(RULE)],
        ["udevadm", "test", "--action=add", f"/sys/bus/dax/devices/{DEV}"],
        ["ps", "-eo", "pid,ppid,etimes,args"],
    ):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append(f"$ {' '.join(argv)} -> {e}")
            continue
        lines = (p.stdout + p.stderr).splitlines()
        if argv[1] == "test":
            lines = [x for x in lines if "run" in x.lower() or "daxmode" in x.lower()]
        if argv[0] == "ps":
            lines = [x for x in lines if any(w in x for w in ("udev", "daxctl", "daxmode", "sh -c"))]
        keep = lines
        out.append(f"$ {' '.join(argv)} -> {p.returncode}\n" + "\n".join(keep[-15:]))
    return "\n".join(out)


def _evidence(text: str) -> None:
    """Keep real outputs for the README in the results share (results/<run>/host0/share)."""
    share = Path("/run/mhd/share")
    if share.is_dir():
        with open(share / "ops-evidence.txt", "a") as f:
            f.write(text.rstrip() + "\n\n")


def udevd_running() -> bool:
    """udevd is up (the harness starts it when the host has it); start it here if it is not."""
    if Path("/run/udev/control").exists():
        return True
    udevd = Path("/lib/systemd/systemd-udevd")
    if udevd.exists():
        subprocess.run([str(udevd), "--daemon", "--resolve-names=never"], capture_output=True, timeout=60)
        for _ in range(50):
            if Path("/run/udev/control").exists():
                print("started systemd-udevd for this test")
                return True
            time.sleep(0.2)
    return False


def nvdimm_writes_media(test):  # type: ignore[no-untyped-def]
    """On nvdimm, ndctl create-namespace rewrites the namespace's info block: media other hosts share."""
    return pytest.mark.shared_media(test) if BACKEND == "nvdimm" else test


@pytest.fixture
def ops_setup():
    if not udevd_running():
        pytest.skip("no udevd in this guest (host lacks systemd-udevd; harness --no-udev)")
    start = driver(DEV)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    yield
    CONF.unlink(missing_ok=True)
    run(DAXMODE, "uninstall-units", check=False)
    if driver(DEV) != start and start == "device_dax":
        run(DAXMODE, "set", DEV, "devdax", check=False)


@nvdimm_writes_media
def test_udev_rule_restores_configured_mode_after_recreate(ops_setup, fsdev_kernel: str) -> None:
    from daxmode.kernel.devices import device_facts
    from daxmode.sysfs import Sysfs

    f = device_facts(Sysfs("/"), DEV)
    if BACKEND == "nvdimm":
        assert f.namespace, f"{DEV} has no nvdimm namespace: {f}"
        match = f'namespace = "{f.namespace}"'
    else:
        match = f'name = "{DEV}"'
    CONF.write_text(f'[[device]]\nmatch = {{ {match} }}\nmode = "fsdev"\n')

    # the rule is installed, RUN flavour (no systemd as PID 1), pointing at this venv's daxmode
    out = run(DAXMODE, "install-units", "--daxmode", DAXMODE, "--json")
    report = json.loads(out.stdout)
    assert report["flavour"] == "run", report
    assert "udevadm control --reload" in report["reloaded"], report
    text = RULE.read_text()
    assert f"{DAXMODE} apply --udev %k" in text and 'SUBSYSTEM=="dax"' in text

    # apply by hand once: the config is read and acted on
    run(DAXMODE, "apply", DEV)
    assert driver(DEV) == "fsdev_dax"
    again = json.loads(run(DAXMODE, "apply", "--json", DEV).stdout)[0]
    assert again["status"] == "unchanged", again

    LOG.unlink(missing_ok=True)
    if BACKEND == "nvdimm":
        # destroy and re-create the device: ndctl reconfigures the namespace in place
        run(DAXMODE, "set", DEV, "devdax")  # ndctl must not find it held by fsdev_dax
        before = os.path.realpath(f"/sys/bus/dax/devices/{DEV}")
        r = run(
            "ndctl",
            "create-namespace",
            "-f",
            "-e",
            f.namespace or "",
            "-m",
            "devdax",
            "-M",
            "mem",
            "-a",
            "2M",
        )
        print(r.stdout)
        _evidence(f"$ ndctl create-namespace -f -e {f.namespace} -m devdax -M mem -a 2M\n{r.stdout}")
        assert Path(f"/sys/bus/dax/devices/{DEV}").exists(), "ndctl did not re-create the device"
        moved = f"{DEV}: {before} -> {os.path.realpath(f'/sys/bus/dax/devices/{DEV}')}"
        print(moved)
        _evidence(moved)
    else:
        run(DAXMODE, "set", DEV, "devdax")
        run("udevadm", "trigger", "--action=add", f"/sys/bus/dax/devices/{DEV}")

    # nobody runs daxmode now: the udev rule must bring it back to fsdev
    got = wait_driver(DEV, "fsdev_dax")
    # the detached `daxmode apply` writes its report when it exits, just after the bind
    deadline = time.monotonic() + 60
    log = ""
    while time.monotonic() < deadline and f"daxmode apply {DEV}:" not in log:
        time.sleep(0.5)
        log = LOG.read_text() if LOG.exists() else ""
    print(log)
    _evidence(f"{DEV} after re-creation: driver {got}\n/run/daxmode-apply.log:\n{log}")
    assert got == "fsdev_dax", f"{DEV} is bound to {got}; /run/daxmode-apply.log:\n{log}\n{_udev_state()}"
    assert f"daxmode apply {DEV}: changed" in log, log
    if BACKEND == "nvdimm":
        assert f.namespace in json.dumps(device_facts(Sysfs("/"), DEV).to_json())


def test_apply_without_rule_and_dry_run_touch_nothing(ops_setup, fsdev_kernel: str) -> None:
    CONF.unlink(missing_ok=True)
    before = driver(DEV)
    res = json.loads(run(DAXMODE, "apply", "--json", DEV).stdout)[0]
    assert res["status"] == "no-rule", res
    target = "fsdev" if before != "fsdev_dax" else "devdax"
    CONF.write_text(f'[[device]]\nmatch = {{ name = "{DEV}" }}\nmode = "{target}"\n')
    res = json.loads(run(DAXMODE, "apply", "--dry-run", "--json", DEV).stdout)[0]
    assert res["status"] == "would-change" and res["plan"], res
    assert driver(DEV) == before


def test_bad_config_names_file_and_line(ops_setup):
    CONF.write_text('[[device]]\nmatch = { name = "dax0.0" }\nmode = "ramdisk"\n')
    p = run(DAXMODE, "apply", DEV, check=False)
    assert p.returncode == 11, p
    assert p.stderr.strip() == (
        f"daxmode: {CONF}:3: unknown mode 'ramdisk': use devdax, fsdev (or famfs), or system-ram"
    ), p.stderr


@pytest.mark.skipif(shutil.which("daxctl") is None, reason="no daxctl")
def test_daxctl_conf_is_honoured(ops_setup):
    """A daxctl.conf.d section (nvdimm.uuid = the uuid `ndctl list` shows) drives apply too."""
    if BACKEND != "nvdimm":
        pytest.skip("daxctl.conf.d matches nvdimm namespaces only")
    nd = json.loads(run("ndctl", "list", "-N").stdout)
    nd = nd if isinstance(nd, list) else [nd]
    ns = [n for n in nd if n.get("chardev") == DEV]
    assert ns, nd
    conf = Path("/etc/daxctl.conf.d/90-vm-test.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"[reconfigure-device vmtest]\nnvdimm.uuid = {ns[0]['uuid']}\nmode = famfs\n")
    try:
        run(DAXMODE, "set", DEV, "devdax")
        CONF.unlink(missing_ok=True)
        res = json.loads(run(DAXMODE, "apply", "--json", DEV).stdout)[0]
        assert res["status"] == "changed" and res["rule"] == f"{conf}:1", res
        assert driver(DEV) == "fsdev_dax"
    finally:
        conf.unlink(missing_ok=True)
        run(DAXMODE, "set", DEV, "devdax", check=False)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=300,
        user=65534,
        group=65534,
        extra_groups=[],  # (not preexec_fn: that cannot travel to the harness's warm zygote)
        env={**os.environ, "HOME": "/"},
    )


@pytest.fixture
def nobody_can_run_the_venv():
    """The host's python lives under /root (0700): let nobody traverse it, in this guest only
    (the root is a per-guest overlay, so the host is never changed)."""
    mode = os.stat("/root").st_mode & 0o7777
    os.chmod("/root", mode | 0o001)
    yield
    os.chmod("/root", mode)


def test_non_root_reads_work_and_writes_fail_with_one_line(ops_setup, nobody_can_run_the_venv):
    try:
        probe = _as_nobody(DAXMODE, "--version")
    except OSError as e:
        pytest.skip(f"the venv is not usable by nobody here: {e}")
    if probe.returncode != 0:
        pytest.skip(f"the venv is not usable by nobody here: {probe.stderr.strip()[-200:]}")
    CONF.write_text(f'[[device]]\nmatch = {{ name = "{DEV}" }}\nmode = "fsdev"\n')
    start = driver(DEV)
    p = _as_nobody(DAXMODE, "list", "--json", DEV)
    assert p.returncode == 0, p
    assert json.loads(p.stdout)[0]["chardev"] == DEV
    for argv in (
        ("set", DEV, "fsdev"),
        ("apply", DEV),
        ("install-units",),
    ):
        p = _as_nobody(DAXMODE, *argv)
        print(argv, p.returncode, p.stderr)
        _evidence(f"(as nobody) $ daxmode {' '.join(argv)}\n{p.stdout}{p.stderr}(exit {p.returncode})")
        assert p.returncode == 5, (argv, p)
        errs = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(errs) == 1 and "root" in errs[0], (argv, p.stderr)
    assert driver(DEV) == start
    assert not RULE.exists()


# --- sub-devices on a real dynamic region (CXL RAM; never onlined) -----------------------------------


def _sys(path: str) -> str:
    return Path(path).read_text().strip()


def _write(path: str, value: str) -> int:
    """The errno of one sysfs write (0 on success)."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        return e.errno or -1
    return 0


@pytest.mark.skipif(BACKEND != "cxl", reason="needs a dynamic (CXL RAM) dax region")
def test_subdevices_on_a_real_dynamic_region():
    import errno

    rid = DEV.removeprefix("dax").split(".")[0]
    region = os.path.dirname(os.path.realpath(f"/sys/bus/dax/devices/{DEV}")) + "/dax_region"
    assert Path(f"{region}/create").exists(), "not a dynamic region"
    full = int(_sys(f"/sys/bus/dax/devices/{DEV}/size"))
    start = driver(DEV)
    assert start in ("device_dax", "fsdev_dax"), f"{DEV} must not be kmem here (CXL memory is never onlined)"
    half = full // 2
    try:
        # the kernel's own answers, which the simulator models
        assert _write(f"{region}/create", "2") == errno.EINVAL
        assert _write(f"/sys/bus/dax/devices/{DEV}/size", hex(half)) == errno.EBUSY  # bound
        r = run(DAXMODE, "resize", DEV, "--size", hex(half), check=False)
        assert r.returncode == 7 and "resize needs it unbound" in r.stderr, r
        run(DAXMODE, "resize", DEV, "--size", hex(half), "--force")
        assert int(_sys(f"/sys/bus/dax/devices/{DEV}/size")) == half and driver(DEV) == start
        assert int(_sys(f"{region}/available_size")) == full - half

        out = json.loads(run(DAXMODE, "create-device", f"region{rid}", "--size", "128M", "--json").stdout)
        new = out["chardev"]
        _evidence(f"$ daxmode create-device region{rid} --size 128M --json\n{json.dumps(out, indent=2)}")
        assert driver(new) == "device_dax" and int(_sys(f"/sys/bus/dax/devices/{new}/size")) == 128 << 20
        assert _sys(f"{region}/seed") == ""  # the bound seed is no longer the seed
        assert _write(f"/sys/bus/dax/devices/{new}/size", hex(3 << 20)) in (errno.EINVAL, errno.EBUSY)
        for size, code in (("3M", 11), ("64G", 11)):
            r = run(DAXMODE, "create-device", f"region{rid}", "--size", size, check=False)
            assert r.returncode == code, r
        r = run(DAXMODE, "destroy-device", new, check=False)
        assert r.returncode == 7 and "use --force" in r.stderr, r
        run(DAXMODE, "destroy-device", new, "--force")
        assert not Path(f"/sys/bus/dax/devices/{new}").exists()
        assert int(_sys(f"{region}/available_size")) == full - half
        # device 0 is never deleted: destroy leaves it at size 0 (EBUSY tolerated, as daxctl)
        r = run(DAXMODE, "destroy-device", DEV, "--force")
        _evidence(f"$ daxmode destroy-device {DEV} --force\n{r.stdout}{r.stderr}(exit {r.returncode})")
        assert "never deleted" in r.stderr and int(_sys(f"/sys/bus/dax/devices/{DEV}/size")) == 0
    finally:
        if driver(DEV) is None and int(_sys(f"/sys/bus/dax/devices/{DEV}/size")) != full:
            run(DAXMODE, "resize", DEV, "--size", hex(full), check=False)
        elif int(_sys(f"/sys/bus/dax/devices/{DEV}/size")) != full:
            run(DAXMODE, "resize", DEV, "--size", hex(full), "--force", check=False)
        if driver(DEV) != start:
            run(DAXMODE, "set", DEV, "fsdev" if start == "fsdev_dax" else "devdax", check=False)
    assert int(_sys(f"/sys/bus/dax/devices/{DEV}/size")) == full and driver(DEV) == start
