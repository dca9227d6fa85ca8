"""Run one bench module in a harness guest and return what it printed.

The guest benches (bench_modes, bench_dax) boot one nvdimm guest the way ``make vm-test`` does,
run ``python -m bench.<module> --json`` in it, and read the JSON object the module prints last.
"""

from __future__ import annotations

import json
import os
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
    from mhd.host import config
    from mhd.host.run import booted
    from mhd.host.timing import Timing

    name = name or module
    cfg = config.parse_args(
        ["--backend", "nvdimm", "--hosts", "1", "--results", str(PROJECT / "results" / name), *harness_args]
    )
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with booted(cfg, Timing()) as run:
        boot = time.monotonic() - t0
        cmd = [str(run.stack.python), "-m", f"bench.{module}", *argv, "--json"]
        r = run.guests[0].run(cmd, timeout=3600, cwd=str(PROJECT))
    lines = r.stdout.splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if not r.ok or data is None:
        raise RuntimeError(f"{module} failed in the guest: {r.describe()}")
    return GuestRun(lines[:-1], data, run.stack.accel, boot, load0, os.getloadavg()[0])
