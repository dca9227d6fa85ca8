"""Start-up cost: ``daxmode list`` (no devices) and ``daxmode --version`` against ``python -c pass``.

All from the same venv, measured side by side in one run, interleaved (each round runs every
command once, in turn) so load changes hit them alike; the median of the rounds is reported,
with the ratio to python's floor (issue 12 goal: <= 3x).  ``daxmode list`` reads an empty --root,
so it measures imports and start-up, not device discovery.  daxctl 85 (``.cache/daxctl-85``, run
through sid's loader) is shown for scale when it is there.  A ``-X importtime`` run of
``daxmode list`` names the modules that cost the most, for whoever cuts them; ``python -c
'import click'`` shows how much of the budget the CLI library takes before daxmode runs at all.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 25
GOAL = 3.0
BIN = Path(sys.prefix) / "bin"


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.decode()[-300:]}")
    return dt


def import_costs(python: str, argv: list[str], top: int = 8) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the costliest imports at nesting depth 0 and 1, from
    ``-X importtime`` (each line: "import time: self [us] | cumulative | <2 spaces per level>name")."""
    p = subprocess.run([python, "-X", "importtime", *argv], capture_output=True, text=True)
    rows = []
    for line in p.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:
            rows.append((int(parts[1]) / 1e6, "  " * depth + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> dict[str, float]:
    py = str(BIN / "python")
    daxmode = str(BIN / "daxmode")
    with tempfile.TemporaryDirectory(prefix="daxmode-empty-root-") as root:
        cmds = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import click'": [py, "-c", "import click"],
            "daxmode --version": [daxmode, "--version"],
            "daxmode list (no devices)": [daxmode, "--root", root, "list"],
        }
        try:
            from bench.guest_modes import daxctl85

            dctl = daxctl85()
            cmds["daxctl 85 --version"] = [*dctl, "--version"]
        except (RuntimeError, ImportError):
            dctl = None
        for argv in cmds.values():  # warm the page cache and the .pyc files
            _time(argv)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(ROUNDS):
            for k, argv in cmds.items():
                times[k].append(_time(argv))
        costs = import_costs(py, cmds["daxmode list (no devices)"])
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["python -c pass"]
    load = os.getloadavg()[0]
    print(
        f"bench_startup: median of {ROUNDS} interleaved runs, {sys.version.split()[0]}, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    out: dict[str, float] = {}
    for k, v in med.items():
        ratio = v / floor
        goal = ""
        if k.startswith("daxmode"):
            goal = f"  goal <= {GOAL:.0f}x: {'met' if ratio <= GOAL else 'NOT met'}"
            out[f"{k} ratio"] = ratio
        print(f"  {k:<28} {v * 1e3:8.1f} ms  (min {min(times[k]) * 1e3:6.1f})  {ratio:5.2f}x python{goal}")
    print(
        "  costliest imports of `daxmode list` (-X importtime, cumulative; indented: imported by one above):"
    )
    for c, n in costs:
        print(f"    {c * 1e3:7.1f} ms  {n}")
    click = med["python -c 'import click'"]
    click_share = (click - floor) / floor
    print(
        f"  click's import alone costs {click_share:.2f}x the floor: the 3x goal leaves daxmode "
        f"{max(GOAL - 1 - click_share, 0):.2f}x of it for everything else; daxmode --version takes "
        f"{med['daxmode --version'] / click:.2f}x an import of click"
    )
    if dctl is None:
        print("  (daxctl 85 not in .cache/daxctl-85: run `make setup` to compare with it)")
    return out


if __name__ == "__main__":
    main()
