"""In a guest, real kernel: every mode transition through four paths, side by side, one run.

Run inside a harness guest (root, real sysfs; ``make bench`` boots one with bench_modes)::

    python -m bench.guest_modes [--dev dax0.0] [--repeats 3] [--online] [--json]

For each transition of a chain that covers devdax, fsdev ("famfs" to daxctl), system-ram without
and with onlining, and ``--force`` back, on the same device in the same run:

* **daxmode** as a new process (``daxmode set ...``: python start-up, imports, the work);
* **daxmode in-process**: the stable API ``set_mode(Sysfs(), dev, Mode.X, Options(...))`` with
  everything imported: the tool's own work (reads, plan, checks, waits, verification);
* **daxctl 85** (``reconfigure-device``; sid's binary from ``.cache/daxctl-85``, run through
  sid's loader), a new process as users run it;
* the **raw sysfs floor**: the writes that make the transition, by hand, in this process, with
  nothing read or checked (leaving a driver: ``remove_id`` + ``unbind``; entering: ``new_id``,
  which binds; onlining/offlining: one ``state`` write per memory block, the block list worked
  out beforehand).

The kernel state after every step (driver; memory blocks present, their states and zones) is read
from sysfs and must be what the transition promises, whichever path made it.  daxctl refuses
system-ram while ``auto_online_blocks`` is online, so the policy is held at ``offline`` for the
run and restored afterwards.  Each path runs the whole chain in turn, ``repeats`` times; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vm.guest.sysview import block_ids, block_states, driver

PROJECT = Path(__file__).resolve().parents[1]
BUS = Path("/sys/bus/dax")
DRIVERS = BUS / "drivers"
MEM = Path("/sys/devices/system/memory")
POLICY = MEM / "auto_online_blocks"
DAXMODE_BIN = Path(sys.prefix) / "bin" / "daxmode"
DRIVER = {"devdax": "device_dax", "fsdev": "fsdev_dax", "system-ram": "kmem"}
PATHS = ("daxmode", "inproc", "daxctl", "floor")
GOAL_INPROC = 1.0  # daxmode in-process <= daxctl 85
GOAL_PROCESS = 1.5  # daxmode as a new process <= 1.5x daxctl 85


def daxctl85(root: Path | None = None) -> list[str]:
    """argv prefix that runs daxctl 85 from the unpacked sid packages (scripts/setup.sh)."""
    d = Path(os.environ.get("DAXCTL85_DIR") or root or PROJECT / ".cache" / "daxctl-85")
    lib = d / "usr/lib/x86_64-linux-gnu"
    exe = d / "usr/bin/daxctl"
    if not exe.is_file():
        raise RuntimeError(f"no daxctl 85 in {d}: run `make setup` (scripts/setup.sh fetch_daxctl85)")
    return [str(lib / "ld-linux-x86-64.so.2"), "--library-path", str(lib), str(exe)]


@dataclass(frozen=True)
class Step:
    name: str
    start: str
    target: str
    online: bool = False  # system-ram target: online the blocks; system-ram start: they are online
    force: bool = False

    def daxmode_args(self, dev: str) -> list[str]:
        a = ["set", dev, self.target]
        if self.target == "system-ram" and not self.online:
            a.append("--no-online")
        return a + (["--force"] if self.force else [])

    def daxctl_args(self, dev: str) -> list[str]:
        mode = {"fsdev": "famfs"}.get(self.target, self.target)
        a = ["reconfigure-device", "-m", mode, dev]
        if self.target == "system-ram" and not self.online:
            a.insert(1, "-N")
        return a + (["-f"] if self.force else [])


def chain(online: bool) -> list[Step]:
    """Transitions in an order that chains from devdax back to devdax."""
    s = [
        Step("devdax -> fsdev", "devdax", "fsdev"),
        Step("fsdev -> fsdev (again)", "fsdev", "fsdev"),
        Step("fsdev -> devdax", "fsdev", "devdax"),
        Step("devdax -> devdax (again)", "devdax", "devdax"),
        Step("devdax -> system-ram (no online)", "devdax", "system-ram"),
        Step("system-ram (offline) -> devdax", "system-ram", "devdax"),
    ]
    if online:
        s += [
            Step("devdax -> system-ram (online movable)", "devdax", "system-ram", online=True),
            Step("system-ram (online) -> devdax --force", "system-ram", "devdax", online=True, force=True),
        ]
    s += [
        Step("devdax -> fsdev", "devdax", "fsdev"),
        Step("fsdev -> system-ram (no online)", "fsdev", "system-ram"),
        Step("system-ram (offline) -> devdax", "system-ram", "devdax"),
    ]
    return s


# ---------------------------------------------------------------- reading the kernel state


def check(step: Step, dev: str, ids: list[int], who: str) -> None:
    got = driver(dev)
    if got != DRIVER[step.target]:
        raise RuntimeError(f"{who}: {step.name} left {dev} with driver {got}")
    st = block_states(ids)
    if step.target != "system-ram":
        if st:
            raise RuntimeError(f"{who}: {step.name} left memory blocks present: {sorted(st)[:4]}")
        return
    want = "online" if step.online else "offline"
    if len(st) != len(ids) or {s for s, _z in st.values()} != {want}:
        raise RuntimeError(f"{who}: {step.name}: blocks {st}")
    if step.online and {z for _s, z in st.values()} != {"Movable"}:
        raise RuntimeError(f"{who}: {step.name}: zones {st}")


# ---------------------------------------------------------------- the four paths


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def floor(step: Step, dev: str, ids: list[int]) -> None:
    """The transition's sysfs writes and nothing else."""
    if step.start == step.target:
        driver(dev)  # a no-op for a tool that looks first; the floor of "already there"
        return
    if step.start == "system-ram" and step.online:
        for b in ids:
            _write(MEM / f"memory{b}" / "state", "offline")
    old = DRIVERS / DRIVER[step.start]
    _write(old / "remove_id", dev)
    _write(old / "unbind", dev)
    _write(DRIVERS / DRIVER[step.target] / "new_id", dev)  # adds the id and binds (driver_attach)
    if step.target == "system-ram" and step.online:
        for b in ids:
            _write(MEM / f"memory{b}" / "state", "online_movable")


def inproc_imports() -> None:
    from daxmode.modes import Mode, Options, set_mode  # noqa: F401
    from daxmode.sysfs import Sysfs  # noqa: F401


def inproc(step: Step, dev: str) -> None:
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.sysfs import Sysfs

    mode = {"devdax": Mode.DEVDAX, "fsdev": Mode.FSDEV, "system-ram": Mode.SYSTEM_RAM}[step.target]
    set_mode(Sysfs(), dev, mode, Options(force=step.force, online=step.online))


def process(argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.strip()[-300:]}")


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    process(argv)
    return time.perf_counter() - t0


def run(
    dev: str, online: bool = False, repeats: int = 3
) -> tuple[list[dict[str, object]], str, dict[str, float]]:
    """Time each step of the chain through each path; one row per distinct transition, daxctl's
    version, and start-up alone (python's floor, daxmode --version, daxctl --version)."""
    if driver(dev) != "device_dax":
        raise RuntimeError(f"{dev} must start in devdax (driver {driver(dev)})")
    dctl = daxctl85()
    version = subprocess.run([*dctl, "--version"], capture_output=True, text=True).stdout.strip()
    inproc_imports()  # in-process means the imports are paid already

    ids = block_ids(dev)
    steps = chain(online)
    saved = POLICY.read_text().strip()
    POLICY.write_text("offline")
    times: dict[str, dict[str, list[float]]] = {s.name: {p: [] for p in PATHS} for s in steps}
    try:
        for _ in range(repeats):
            for path in PATHS:
                for s in steps:
                    t0 = time.perf_counter()
                    if path == "daxmode":
                        process([str(DAXMODE_BIN), *s.daxmode_args(dev)])
                    elif path == "inproc":
                        inproc(s, dev)
                    elif path == "daxctl":
                        process([*dctl, *s.daxctl_args(dev)], ok=(0, 1))  # 1: "already in that mode"
                    else:
                        floor(s, dev, ids)
                    times[s.name][path].append(time.perf_counter() - t0)
                    check(s, dev, ids, path)
    finally:
        if driver(dev) != "device_dax":
            subprocess.run([str(DAXMODE_BIN), "set", dev, "devdax", "--force"], capture_output=True)
        POLICY.write_text(saved)
    rows: list[dict[str, object]] = []
    starts: dict[str, float] = {}
    for label, argv in (
        ("python -c pass (start-up floor)", [sys.executable, "-c", "pass"]),
        ("daxmode --version", [str(DAXMODE_BIN), "--version"]),
        ("daxctl 85 --version", [*dctl, "--version"]),
    ):
        starts[label] = statistics.median(_timed(argv) for _ in range(repeats))
    for s in dict.fromkeys(x.name for x in steps):
        med = {p: statistics.median(times[s][p]) for p in PATHS}
        rows.append(
            {
                "transition": s,
                "samples": len(times[s]["daxmode"]),
                **{f"{p}_s": med[p] for p in PATHS},
                "process_vs_daxctl": med["daxmode"] / med["daxctl"],
                "inproc_vs_daxctl": med["inproc"] / med["daxctl"],
                "daxctl_vs_floor": med["daxctl"] / med["floor"],
                "inproc_vs_floor": med["inproc"] / med["floor"],
            }
        )
    return rows, version, starts


def render(rows: list[dict[str, object]], head: str, starts: dict[str, float] | None = None) -> str:
    out = [head]
    out.append(
        f"  {'transition':<40} {'daxmode':>9} {'in-proc':>9} {'daxctl85':>9} {'floor':>9}"
        f" {'proc/dctl':>9} {'inp/dctl':>9} {'dctl/floor':>10}"
    )
    for r in rows:
        out.append(
            f"  {r['transition']:<40} {r['daxmode_s']:8.3f}s {r['inproc_s']:8.3f}s {r['daxctl_s']:8.3f}s"
            f" {r['floor_s']:8.4f}s {r['process_vs_daxctl']:8.2f}x {r['inproc_vs_daxctl']:8.2f}x"
            f" {r['daxctl_vs_floor']:9.1f}x"
        )
    worst_p = max(rows, key=lambda r: r["process_vs_daxctl"])  # type: ignore[arg-type,return-value]
    worst_i = max(rows, key=lambda r: r["inproc_vs_daxctl"])  # type: ignore[arg-type,return-value]
    for label, r, key, goal in (
        ("in-process <= daxctl 85", worst_i, "inproc_vs_daxctl", GOAL_INPROC),
        ("new process <= 1.5x daxctl 85", worst_p, "process_vs_daxctl", GOAL_PROCESS),
    ):
        v = float(r[key])  # type: ignore[arg-type]
        verdict = "met" if v <= goal else "NOT met"
        out.append(f"  goal {label}: {verdict} (worst {v:.2f}x, {r['transition']})")
    if starts:
        out.append("  start-up alone: " + ", ".join(f"{k} {v:.3f}s" for k, v in starts.items()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.guest_modes", description=__doc__.split("\n")[0])
    ap.add_argument("--dev", default=os.environ.get("DAXMODE_TEST_DEV", "dax0.0"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--online",
        action="store_true",
        default=os.environ.get("DAXMODE_VM_ONLINE_OK") == "1",
        help="also time transitions that online memory (only where that is safe)",
    )
    ap.add_argument("--json", action="store_true", help="also print the rows as one JSON line")
    a = ap.parse_args(argv)
    rows, version, starts = run(a.dev, a.online, a.repeats)
    load = Path("/proc/loadavg").read_text().split()[0]
    head = (
        f"guest_modes: {a.dev} ({len(block_ids(a.dev))} memory blocks), kernel {os.uname().release}, "
        f"daxctl {version}, {os.cpu_count()} vCPUs, guest load {load}, median of {a.repeats} chains\n"
        "  daxmode = `daxmode set` as a new process; in-process = set_mode() with imports paid;\n"
        "  floor = the sysfs writes alone, in-process"
    )
    print(render(rows, head, starts))
    if a.json:
        print(
            json.dumps(
                {"guest_modes": rows, "startup": starts, "daxctl": version, "kernel": os.uname().release}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
