"""In-guest, real kernel: daxmode and daxctl 85 side by side on one device.

The same transition sequence runs through each tool in turn, from the same start; after every step
the kernel state is read from sysfs (driver, each memory block's state and zones,
``auto_online_blocks``) and must be identical between the tools.  ``daxmode list --json`` is
compared with ``daxctl list`` key by key in every mode, and its region object with ``daxctl list
-R``.  Where daxmode differs on purpose (docs/daxctl-parity.md) the difference is asserted, both
sides.  daxctl 85 is sid's binary unpacked by scripts/setup.sh into ``.cache/daxctl-85`` and run
through sid's loader.  The comparison is written to ``$DAXMODE_VM_SHARE/daxctl-parity.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .sysview import block_ids, block_states, driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
ONLINE_OK = os.environ.get("DAXMODE_VM_ONLINE_OK") == "1"
PROJECT = Path(__file__).resolve().parents[3]
BUS = Path("/sys/bus/dax")
MEM = Path("/sys/devices/system/memory")
POLICY = MEM / "auto_online_blocks"
DAXCTL_DIR = Path(os.environ.get("DAXCTL85_DIR") or PROJECT / ".cache" / "daxctl-85")
LIB = DAXCTL_DIR / "usr/lib/x86_64-linux-gnu"
DAXCTL = [str(LIB / "ld-linux-x86-64.so.2"), "--library-path", str(LIB), str(DAXCTL_DIR / "usr/bin/daxctl")]
REPORT: dict[str, Any] = {}

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]


# ---------------------------------------------------------------- the two tools


def daxctl(*args: str) -> tuple[int, str, str]:
    p = subprocess.run([*DAXCTL, *args], capture_output=True, text=True, timeout=300)
    print(f"$ daxctl {' '.join(args)} -> {p.returncode}\n{p.stdout}{p.stderr}")
    return p.returncode, p.stdout, p.stderr


def daxmode(*args: str) -> tuple[int, str, str]:
    """The installed ``daxmode`` entry point, in this process (python start-up is ~10 s in TCG)."""
    from importlib.metadata import entry_points

    from click.testing import CliRunner

    (ep,) = entry_points(group="console_scripts", name="daxmode")
    r = CliRunner().invoke(ep.load(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    print(f"$ daxmode {' '.join(args)} -> {r.exit_code}\n{r.stdout}{r.stderr}")
    return r.exit_code, r.stdout, r.stderr


# ---------------------------------------------------------------- kernel state, from sysfs


def kernel_state() -> dict[str, Any]:
    blocks = {f"memory{b}": list(sz) for b, sz in block_states(block_ids()).items()}
    return {"driver": driver(), "blocks": blocks, "auto_online_blocks": POLICY.read_text().strip()}


@pytest.fixture(autouse=True)
def daxctl_and_devdax(devdax_policy_offline: None) -> None:
    if not (DAXCTL_DIR / "usr/bin/daxctl").is_file():
        pytest.fail(f"daxctl 85 is missing from {DAXCTL_DIR}: scripts/setup.sh fetch_daxctl85 did not run")


def _save() -> None:
    share = os.environ.get("DAXMODE_VM_SHARE")
    if share and Path(share).is_dir():
        (Path(share) / "daxctl-parity.json").write_text(json.dumps(REPORT, indent=1, sort_keys=True))


# ---------------------------------------------------------------- same sequence, same state

# (step, daxmode args, daxctl args); each tool must succeed, or (refused=True) both must refuse
SEQUENCE: list[tuple[str, list[str], list[str], bool]] = [
    ("devdax -> famfs", ["fsdev"], ["-m", "famfs"], False),
    ("famfs -> famfs", ["fsdev"], ["-m", "famfs"], False),
    ("famfs -> devdax", ["devdax"], ["-m", "devdax"], False),
    ("devdax -> devdax", ["devdax"], ["-m", "devdax"], False),
    ("devdax -> system-ram -N", ["system-ram", "--no-online"], ["-N", "-m", "system-ram"], False),
    ("system-ram (offline) -> devdax", ["devdax"], ["-m", "devdax"], False),
]
if ONLINE_OK:
    SEQUENCE += [
        ("devdax -> system-ram (online movable)", ["system-ram"], ["-m", "system-ram"], False),
        ("system-ram (online) -> devdax, no force: refused", ["devdax"], ["-m", "devdax"], True),
        ("system-ram (online) -> devdax --force", ["devdax", "--force"], ["-f", "-m", "devdax"], False),
    ]  # fmt: skip
SEQUENCE += [
    ("devdax -> famfs (again)", ["fsdev"], ["-m", "famfs"], False),
    ("famfs -> system-ram -N", ["system-ram", "--no-online"], ["-N", "-m", "system-ram"], False),
    ("system-ram (offline) -> devdax (again)", ["devdax"], ["-m", "devdax"], False),
]


def run_sequence(tool: str) -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for name, dm_args, dc_args, refused in SEQUENCE:
        if tool == "daxmode":
            rc, _o, err = daxmode("set", DEV, *dm_args)
        else:
            rc, _o, err = daxctl("reconfigure-device", *dc_args, DEV)
        if refused:
            assert rc != 0, f"{tool}: {name} was not refused"
        else:
            assert rc == 0, f"{tool}: {name} -> {rc}: {err}"
        out.append((name, rc, kernel_state()))
    return out


def test_same_sequence_same_kernel_state(fsdev_kernel: str) -> None:
    start = kernel_state()
    dm = run_sequence("daxmode")
    assert kernel_state() == start
    dc = run_sequence("daxctl")
    assert kernel_state() == start
    rows = []
    for (name, rc_m, st_m), (_n, rc_c, st_c) in zip(dm, dc, strict=True):
        rows.append(
            {"step": name, "daxmode_rc": rc_m, "daxctl_rc": rc_c, "same": st_m == st_c, "state": st_m}
        )
        if st_m != st_c:
            rows[-1]["daxctl_state"] = st_c
    REPORT["sequence"] = rows
    _save()
    differ = [r["step"] for r in rows if not r["same"]]
    assert not differ, f"kernel state differs after: {differ}"


# ---------------------------------------------------------------- list --json, key by key

MODE_NAME = {"famfs": "fsdev"}  # daxctl's name -> daxmode's


def compare_lists(label: str) -> dict[str, Any]:
    rc, out, _ = daxmode("list", "--json", DEV)
    assert rc == 0
    (mine,) = json.loads(out)
    rc, out, _ = daxctl("list", "-d", DEV)
    assert rc == 0
    (theirs,) = json.loads(out)
    keys: dict[str, Any] = {}
    for k, v in theirs.items():
        want = MODE_NAME.get(v, v) if k == "mode" else v
        keys[k] = {"daxctl": v, "daxmode": mine.get(k, "<missing>"), "same": mine.get(k) == want}
    extra = sorted(set(mine) - set(theirs))
    rid = mine["region"]["id"]
    rc, out, _ = daxctl("list", "-R", "-r", str(rid))
    (region,) = json.loads(out)
    reg = {
        k: {"daxctl": v, "daxmode": mine["region"].get(k, "<missing>"), "same": mine["region"].get(k) == v}
        for k, v in region.items()
    }
    entry = {
        "keys": keys,
        "daxmode_only": extra,
        "region": reg,
        "region_daxmode_only": sorted(set(mine["region"]) - set(region)),
    }
    REPORT.setdefault("list", {})[label] = entry
    return entry


def test_list_json_matches_daxctl_key_by_key(fsdev_kernel: str) -> None:
    states = [
        ("devdax", ["devdax"]),
        ("famfs", ["fsdev"]),
        ("system-ram (offline)", ["system-ram", "--no-online"]),
    ]
    if ONLINE_OK:
        states.append(("system-ram (online movable)", ["system-ram"]))
    for label, args in states:
        if args != ["devdax"]:
            daxmode("set", DEV, "devdax", "--force")
        assert daxmode("set", DEV, *args)[0] == 0
        compare_lists(label)
    daxmode("set", DEV, "devdax", "--force")
    assert daxctl("disable-device", DEV)[0] == 0  # unbound: daxctl says devdax + "state": "disabled"
    assert driver() is None
    compare_lists("disabled (no driver)")
    assert daxmode("set", DEV, "devdax")[0] == 0
    _save()
    bad = {}
    for label, e in REPORT["list"].items():
        keys = [k for k, v in e["keys"].items() if not v["same"]]
        bad[label] = keys + [f"region.{k}" for k, v in e["region"].items() if not v["same"]]
    assert all(not v for v in bad.values()), f"daxmode list differs from daxctl list: {bad}"
    assert all(e["daxmode_only"] == ["region"] for e in REPORT["list"].values())


# ---------------------------------------------------------------- differences on purpose


def test_policy_online_no_online() -> None:
    """auto_online_blocks=online, system-ram without onlining: daxctl aborts before touching the
    device; daxmode holds the policy at offline for the bind and puts it back."""
    POLICY.write_text("online")
    rc, _o, err = daxctl("reconfigure-device", "-N", "-m", "system-ram", DEV)
    assert rc != 0 and "policy will auto-online memory" in err
    assert kernel_state()["driver"] == "device_dax" and POLICY.read_text().strip() == "online"
    refusal = [ln for ln in err.splitlines() if "policy" in ln]
    rc2, _o, err2 = daxmode("set", DEV, "system-ram", "--no-online")
    assert rc2 == 0, err2
    st = kernel_state()
    assert st["driver"] == "kmem" and {s for s, _z in st["blocks"].values()} == {"offline"}
    assert st["auto_online_blocks"] == "online"
    POLICY.write_text("offline")
    assert daxmode("set", DEV, "devdax")[0] == 0
    REPORT["policy_online_no_online"] = {
        "daxctl_rc": rc,
        "daxctl_err": refusal,
        "daxmode_rc": rc2,
        "daxmode": "kmem bound, all blocks offline, auto_online_blocks online again afterwards",
    }
    _save()


def test_system_ram_to_famfs(fsdev_kernel: str) -> None:
    """daxctl refuses system-ram -> famfs; daxmode goes through devdax (memory offline here)."""
    assert daxmode("set", DEV, "system-ram", "--no-online")[0] == 0
    rc, _o, err = daxctl("reconfigure-device", "-m", "famfs", DEV)
    assert rc != 0 and "must be in devdax mode" in err
    assert driver() == "kmem"
    rc2, out, err2 = daxmode("set", DEV, "fsdev")
    assert rc2 == 0, err2
    assert driver() == "fsdev_dax" and kernel_state()["blocks"] == {}
    REPORT["system_ram_to_famfs"] = {
        "daxctl_rc": rc,
        "daxctl_err": [ln for ln in err.splitlines() if "devdax mode" in ln],
        "daxmode_rc": rc2,
        "daxmode": out.strip(),
    }
    _save()


def test_no_online_with_devdax_refused_by_both() -> None:
    rc, _o, _e = daxctl("reconfigure-device", "-N", "-m", "devdax", DEV)
    rc2, _o2, err2 = daxmode("set", DEV, "devdax", "--no-online")
    assert rc == 129 and rc2 == 11 and err2.count("\n") == 1
    assert driver() == "device_dax"
    REPORT["no_online_devdax"] = {"daxctl_rc": rc, "daxmode_rc": rc2, "daxmode_err": err2.strip()}
    _save()
