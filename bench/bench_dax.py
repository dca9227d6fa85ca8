"""1 GiB sequential read through the DAX mount vs memcpy from a devdax mapping (issue 10).

Boots one nvdimm guest (2 GiB shared file) with the famfs V10 kernel ``make famfs-kernel`` built
into ``.cache/kbuild`` and runs :mod:`bench.guest_dax` in it.  Without such a kernel this bench
says so and measures nothing: a stock kernel has no DAX data path.  It boots QEMU, so run
``make bench`` under the machine's VM lock; ``DAXMODE_BENCH_GUEST=0`` skips it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def famfs_kernel() -> Path | None:
    """The newest cached build whose config has CONFIG_FUSE_FAMFS_DAX=y."""
    found = []
    for cfg in (PROJECT / ".cache" / "kbuild").glob("*/config"):
        if "CONFIG_FUSE_FAMFS_DAX=y" in cfg.read_text() and (cfg.parent / "bzImage").is_file():
            found.append((cfg.stat().st_mtime, cfg.parent))
    return max(found)[1] if found else None


def main() -> dict[str, float]:
    if os.environ.get("DAXMODE_BENCH_GUEST", "1") == "0":
        print("bench_dax: not run (DAXMODE_BENCH_GUEST=0)")
        return {}
    kdir = famfs_kernel()
    if kdir is None:
        print("bench_dax: not run: no famfs kernel in .cache/kbuild (make famfs-kernel; docs/kernel.md)")
        return {}
    if str(PROJECT / "qemu") not in sys.path:
        sys.path.insert(0, str(PROJECT / "qemu"))
    from mhd import harness

    cfg = harness.parse_args(
        [
            "--backend", "nvdimm", "--hosts", "1", "--shared-size", "2G",
            "--kernel", str(kdir / "bzImage"), "--modules", str(kdir),
            "--results", str(PROJECT / "results" / "bench-dax"),
        ]
    )  # fmt: skip
    run = harness.Run(cfg)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        run.prepare()
        run.start_guests()
        run.wait_ready()
        run.bring_up()
        boot = time.monotonic() - t0
        g = run.guests[0]
        r = g.run([str(run.python), "-m", "bench.guest_dax", "--json"], timeout=3600, cwd=str(PROJECT))
    finally:
        run.cleanup(graceful=True)
    lines = r.stdout.splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if not r.ok or data is None:
        raise RuntimeError(f"guest_dax failed in the guest: {r.describe()}")
    print(f"bench_dax: famfs kernel {kdir.name}, nvdimm guest ({run.accel}) ready in {boot:.0f} s")
    print("\n".join(lines[:-1]))
    print(f"  (host load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)")
    return {"dax read/memcpy": data["read_vs_memcpy"], "dax mmap/memcpy": data["mmap_vs_memcpy"]}


if __name__ == "__main__":
    main()
