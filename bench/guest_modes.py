"""In a guest, real kernel: wall time of each mode transition, daxmode beside daxctl, one run.

Run inside a harness guest (root, real sysfs)::

    python -m bench.guest_modes [--dev dax0.0] [--repeats 5] [--online]

or call :func:`run` from the harness's bench.  Only the transitions daxctl (76.1 here) can do
are compared: devdax <-> system-ram (with --no-online / -N, and with onlining when ``online``
is true, i.e. DAXMODE_VM_ONLINE_OK=1), plus the devdax -> devdax no-op.  daxctl 76.1 refuses
system-ram while ``auto_online_blocks`` is online, so the policy is held at ``offline`` for
the whole run and restored afterwards.  Both tools run as subprocesses, alternating, so both
pay process start-up; the median of ``repeats`` runs is reported with the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

POLICY = Path("/sys/devices/system/memory/auto_online_blocks")
DAXMODE = [sys.executable, "-m", "daxmode"]


def _driver(dev: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/bus/dax/devices/{dev}/driver"))
    except OSError:
        return None


def _in_process(argv: list[str]) -> float:
    """daxmode's CLI without python start-up: what the tool itself costs."""
    from click.testing import CliRunner

    from daxmode.cli import main

    t0 = time.perf_counter()
    r = CliRunner().invoke(main, argv[len(DAXMODE) :])
    dt = time.perf_counter() - t0
    if r.exit_code != 0:
        raise RuntimeError(f"daxmode {' '.join(argv[len(DAXMODE) :])} -> {r.exit_code}: {r.stderr.strip()}")
    return dt


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    # daxctl returns 1 for "already in that mode" style outcomes; anything else is a failure
    if p.returncode not in (0, 1) or (p.returncode == 1 and argv[0] != "daxctl"):
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.strip()[-300:]}")
    return dt


def _transitions(dev: str, online: bool) -> list[tuple[str, str, list[str], list[str]]]:
    """(name, driver after, daxmode argv, daxctl argv), in an order that chains."""
    t = [
        ("devdax -> system-ram (no online)", "kmem",
         [*DAXMODE, "set", dev, "system-ram", "--no-online"],
         ["daxctl", "reconfigure-device", "-N", "-m", "system-ram", dev]),
        ("system-ram (offline) -> devdax", "device_dax",
         [*DAXMODE, "set", dev, "devdax"],
         ["daxctl", "reconfigure-device", "-m", "devdax", dev]),
        ("devdax -> devdax (no-op)", "device_dax",
         [*DAXMODE, "set", dev, "devdax"],
         ["daxctl", "reconfigure-device", "-m", "devdax", dev]),
    ]  # fmt: skip
    if online:
        t += [
            ("devdax -> system-ram (online movable)", "kmem",
             [*DAXMODE, "set", dev, "system-ram"],
             ["daxctl", "reconfigure-device", "-m", "system-ram", dev]),
            ("system-ram (online) -> devdax --force", "device_dax",
             [*DAXMODE, "set", dev, "devdax", "--force"],
             ["daxctl", "reconfigure-device", "-f", "-m", "devdax", dev]),
        ]  # fmt: skip
    return t


def run(dev: str, online: bool = False, repeats: int = 5) -> list[dict[str, float | str]]:
    """Time each transition ``repeats`` times per tool; return one row per transition."""
    if shutil.which("daxctl") is None:
        raise RuntimeError("daxctl is not installed in this guest")
    if _driver(dev) != "device_dax":
        raise RuntimeError(f"{dev} must start in devdax (driver {_driver(dev)})")
    saved = POLICY.read_text().strip()
    POLICY.write_text("offline")
    plan = _transitions(dev, online)
    tools = ("daxmode", "daxmode-inproc", "daxctl")
    times: dict[str, dict[str, list[float]]] = {name: {t: [] for t in tools} for name, *_ in plan}
    try:
        for _ in range(repeats):
            for tool in tools:
                for name, after, dm, dc in plan:
                    if tool == "daxmode-inproc":
                        dt = _in_process(dm)
                    else:
                        dt = _timed(dm if tool == "daxmode" else dc)
                    times[name][tool].append(dt)
                    if _driver(dev) != after:
                        raise RuntimeError(f"{tool}: {name} left driver {_driver(dev)}, want {after}")
    finally:
        if _driver(dev) != "device_dax":
            subprocess.run([*DAXMODE, "set", dev, "devdax", "--force"], capture_output=True)
        POLICY.write_text(saved)
    rows: list[dict[str, float | str]] = []
    for name, *_ in plan:
        a = statistics.median(times[name]["daxmode"])
        i = statistics.median(times[name]["daxmode-inproc"])
        b = statistics.median(times[name]["daxctl"])
        rows.append(
            {
                "transition": name,
                "daxmode_s": a,
                "daxmode_inproc_s": i,
                "daxctl_s": b,
                "ratio": a / b,
                "ratio_inproc": i / b,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.guest_modes", description=__doc__.split("\n")[0])
    ap.add_argument("--dev", default=os.environ.get("DAXMODE_TEST_DEV", "dax0.0"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--online",
        action="store_true",
        default=os.environ.get("DAXMODE_VM_ONLINE_OK") == "1",
        help="also time transitions that online memory (only where that is safe)",
    )
    a = ap.parse_args(argv)
    ver = subprocess.run(["daxctl", "--version"], capture_output=True, text=True).stdout.strip()
    rows = run(a.dev, a.online, a.repeats)
    print(f"guest_modes: {a.dev}, kernel {os.uname().release}, daxctl {ver}, median of {a.repeats}")
    print(
        "  daxmode = a new process per call (like daxctl); in-process = the same CLI without python start-up"
    )
    print(f"  {'transition':<40} {'daxmode':>9} {'in-proc':>9} {'daxctl':>9} {'ratio':>7} {'in-proc':>8}")
    for r in rows:
        print(
            f"  {r['transition']:<40} {r['daxmode_s']:8.3f}s {r['daxmode_inproc_s']:8.3f}s "
            f"{r['daxctl_s']:8.3f}s {r['ratio']:7.2f} {r['ratio_inproc']:8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
