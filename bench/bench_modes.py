"""Mode transitions: tool overhead on a 1 TiB simulated device, then every transition on the real kernel.

Part 1, simulator (4096 x 256 MiB blocks).

Target (issue 2): devdax -> system-ram -> devdax spends under 0.25 s *outside* the sysfs
writes.  The simulator's writes do the kernel's work (hot-adding 4096 block directories,
changing states), so their time is measured apart: Sysfs.stats accumulates the time spent
inside each write; everything else (reads, planning, verification) is the tool's.

Both wall time and this thread's CPU time are reported.  On a loaded machine (load average
above the CPU count) wall time outside the writes mostly measures waiting for a CPU, so the
verdict then uses CPU time and says so.

Part 2, real kernel: boots one nvdimm guest through the harness (memory can be onlined there) and
runs :mod:`bench.guest_modes` in it: every transition through daxmode as a new process, daxmode
in-process, daxctl 85 and the raw sysfs floor, on the same device in the same run, with ratios.
It boots QEMU, so run ``make bench`` under the machine's VM lock (``flock /work/vm.lock make
bench``).  ``DAXMODE_BENCH_GUEST=0`` runs part 1 only.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.guestrun import run_guest_bench
from daxmode import sim
from daxmode.modes import Mode, Options, set_mode
from daxmode.sysfs import Sysfs

BLOCK = 256 << 20
BLOCKS = 4096
TARGET_S = 0.25


def build(root: Path) -> sim.Sim:
    s = sim.Sim.create(root, block_size=BLOCK, boot_blocks=16)
    base = 64 * BLOCK
    s.add_region(0, base, BLOCKS * BLOCK)
    s.add_device("dax0.0", [(base, BLOCKS * BLOCK)])
    return s


def _run(sysfs: Sysfs, target: Mode, opts: Options) -> dict[str, float]:
    st = sysfs.stats
    c0, s0, k0 = st.count, st.seconds, st.cpu_seconds
    t0, u0 = time.perf_counter(), time.thread_time()
    set_mode(sysfs, "dax0.0", target, opts)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - u0
    return {
        "wall": wall,
        "cpu": cpu,
        "writes": st.count - c0,
        "w_wall": st.seconds - s0,
        "w_cpu": st.cpu_seconds - k0,
    }


def main() -> dict[str, float]:
    out = simulated()
    if os.environ.get("DAXMODE_BENCH_GUEST", "1") == "0":
        print("bench_modes: real-kernel table not run (DAXMODE_BENCH_GUEST=0)")
        return out
    out.update(in_guest())
    return out


def in_guest(repeats: int = 3) -> dict[str, float]:
    """Boot one nvdimm guest and run bench.guest_modes in it; its table is printed as it comes."""
    g = run_guest_bench("guest_modes", [], ["--repeats", str(repeats)], name="bench-modes")
    print(f"bench_modes: nvdimm guest ({g.accel}) booted and its device brought up in {g.boot_s:.0f} s")
    g.print_table()
    data = g.data
    out: dict[str, float] = {}
    for row in data["guest_modes"]:
        key = str(row["transition"])
        out[f"guest {key} process/daxctl"] = float(row["process_vs_daxctl"])
        out[f"guest {key} inproc/daxctl"] = float(row["inproc_vs_daxctl"])
    return out


def simulated() -> dict[str, float]:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the simulated kernel writes many files
    with tempfile.TemporaryDirectory(prefix="daxmode-bench-", dir=shm) as d:
        s = build(Path(d))
        sysfs = s.sysfs()
        rows = [
            (Mode.SYSTEM_RAM, _run(sysfs, Mode.SYSTEM_RAM, Options())),
            (Mode.DEVDAX, _run(sysfs, Mode.DEVDAX, Options(force=True))),
        ]
    load = os.getloadavg()[0]
    ncpu = os.cpu_count() or 1
    print(f"bench_modes: {BLOCKS} memory blocks of {BLOCK >> 20} MiB (1 TiB device), simulated kernel")
    tool_wall = tool_cpu = w_wall = 0.0
    for target, r in rows:
        tw, tc = r["wall"] - r["w_wall"], r["cpu"] - r["w_cpu"]
        tool_wall += tw
        tool_cpu += tc
        w_wall += r["w_wall"]
        per_w, per_c = tw / BLOCKS * 1e6, tc / BLOCKS * 1e6
        print(
            f"  -> {target.value:<10} wall {r['wall']:7.3f} s, "
            f"in {r['writes']:.0f} writes {r['w_wall']:7.3f} s; "
            f"tool {tw:6.3f} s wall / {tc:6.3f} s cpu = {per_w:5.1f} / {per_c:5.1f} us per block"
        )
    loaded = load > ncpu
    basis, tool = ("cpu", tool_cpu) if loaded else ("wall", tool_wall)
    verdict = "OK" if tool < TARGET_S else "OVER"
    why = f", machine loaded: loadavg {load:.1f} on {ncpu} CPUs" if loaded else ""
    print(
        f"  round trip outside the writes: {tool_wall:.3f} s wall, {tool_cpu:.3f} s cpu "
        f"(target < {TARGET_S} s on {basis}{why}"
        f": {verdict}); tool/kernel-writes ratio {tool_wall / w_wall:.3f} (wall); "
        f"{tool / (2 * BLOCKS) * 1e6:.1f} us per block per transition"
    )
    return {"tool_wall_s": tool_wall, "tool_cpu_s": tool_cpu, "writes_s": w_wall, "ratio": tool_wall / w_wall}


if __name__ == "__main__":
    main()
