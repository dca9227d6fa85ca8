"""Run one bench module in a harness guest and return what it printed.

The guest benches (bench_modes, bench_dax) boot one nvdimm guest the way ``make vm-test`` does,
run ``python -m bench.<module> --json`` in it, and read the JSON object the module prints last.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


@dataclass
class GuestRun:
    """What a guest bench printed: its table lines, its JSON result, and the run's context."""

    lines: list[str]
    data: dict
    accel: str
    boot_s: float
    load_start: float
    load_end: float

    def print_table(self) -> None:
        print("\n".join(self.lines))
        print(
            f"  (host load average {self.load_start:.1f} at the start, {self.load_end:.1f} at the end, "
            f"{os.cpu_count()} host cores)"
        )


def run_guest_bench(
    module: str, harness_args: list[str], argv: Sequence[str] = (), name: str = ""
) -> GuestRun:
    """Boot one nvdimm guest with ``harness_args`` added, run ``bench.<module>`` in it."""
    if str(PROJECT / "qemu") not in sys.path:
        sys.path.insert(0, str(PROJECT / "qemu"))
    from mhd import harness

    name = name or module
    cfg = harness.parse_args(
        ["--backend", "nvdimm", "--hosts", "1", "--results", str(PROJECT / "results" / name), *harness_args]
    )
    run = harness.Run(cfg)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        run.prepare()
        run.start_guests()
        run.wait_ready()
        run.bring_up()
        boot = time.monotonic() - t0
        cmd = [str(run.python), "-m", f"bench.{module}", *argv, "--json"]
        r = run.guests[0].run(cmd, timeout=3600, cwd=str(PROJECT))
    finally:
        run.cleanup(graceful=True)
    lines = r.stdout.splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if not r.ok or data is None:
        raise RuntimeError(f"{module} failed in the guest: {r.describe()}")
    return GuestRun(lines[:-1], data, run.accel, boot, load0, os.getloadavg()[0])
