"""1 GiB sequential read through the DAX mount vs memcpy from a devdax mapping (issue 10).

Boots one nvdimm guest (2 GiB shared file) with the famfs V10 kernel ``make famfs-kernel`` built
into ``.cache/kbuild`` and runs :mod:`bench.guest_dax` in it.  Without such a kernel this bench
says so and measures nothing: a stock kernel has no DAX data path.  It boots QEMU, so run
``make bench`` under the machine's VM lock; ``DAXMODE_BENCH_GUEST=0`` skips it.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.guestrun import run_guest_bench

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
    g = run_guest_bench(
        "guest_dax",
        ["--shared-size", "2G", "--kernel", str(kdir / "bzImage"), "--modules", str(kdir)],
        name="bench-dax",
    )
    print(f"bench_dax: famfs kernel {kdir.name}, nvdimm guest ({g.accel}) ready in {g.boot_s:.0f} s")
    g.print_table()
    data = g.data
    return {
        "dax read/memcpy": data["read_vs_memcpy"],
        "dax mmap/memcpy": data["mmap_vs_memcpy"],
        "dax read/tmpfs read": data["read_vs_tmpfs_read"],
    }


if __name__ == "__main__":
    main()
