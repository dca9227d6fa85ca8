"""In a famfs-kernel guest: 1 GiB sequential read through daxmode's DAX mount against memcpy from a
devdax mapping of the same memory, in the same guest and run (issue 10; goal >= 0.9x).

The file is one contiguous extent (``famfs creat``); the baseline maps that extent of
``/dev/daxX.Y`` in devdax mode and copies it window by window into a buffer; then the device is
mounted (dax data path: fsdev mode, the kernel maps the file by DAX) and the same bytes are read
with ``read(2)`` (``readinto``) and through ``mmap``, into the same buffer.  Best of ``--repeats``.
Run by ``bench/bench_dax.py`` through the harness (``python -m bench.guest_dax --json``).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

GiB = 1 << 30
WINDOW = 64 << 20
MNT = Path("/mnt/daxmode-bench")
TMPFS = Path("/mnt/daxmode-bench-tmpfs")
TMPFS_SIZE = 256 << 20  # the guest has 1 GiB of RAM: the control reads 256 MiB, scaled to --size


def daxmode(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "daxmode", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"daxmode {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def copy_windows(src: memoryview, buf: memoryview) -> None:
    for off in range(0, len(src), len(buf)):
        n = min(len(buf), len(src) - off)
        buf[:n] = src[off : off + n]


def best(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def tmpfs_read(buf: memoryview, repeats: int) -> float:
    """The control: read(2) of a page-cache (tmpfs) file, no DAX and no famfs.  Both read(2) rows
    pay the kernel's copy to user space, which an emulated CPU runs far slower than a user-space
    memcpy; this row shows that cost alone."""
    TMPFS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE + (1 << 20)}", "none", str(TMPFS)], check=True
    )
    try:
        path = TMPFS / "control"
        with open(path, "wb") as f:
            for _ in range(TMPFS_SIZE // len(buf)):
                f.write(buf)

        def read2() -> None:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass

        read2()
        return best(read2, repeats)
    finally:
        subprocess.run(["umount", str(TMPFS)], check=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    dev = os.environ["DAXMODE_TEST_DEV"]
    daxmode("famfs", "mkfs", dev, "--force")
    daxmode("famfs", "creat", dev, "big", "-s", str(a.size))
    ext, *rest = json.loads(daxmode("famfs", "getmap", dev, "big", "--json"))["extents"]
    off, length = ext["offset"], ext["length"]
    assert not rest and length >= a.size, "the bench needs one contiguous extent"
    buf = memoryview(bytearray(WINDOW))

    fd = os.open(f"/dev/{dev}", os.O_RDWR)
    try:
        with mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=off) as mm:
            view = memoryview(mm)[: a.size]
            for pos in range(0, a.size, 2 << 20):  # touch (and write) every page once: no first-fault cost
                view[pos] = pos >> 21 & 0xFF
            memcpy = best(lambda: copy_windows(view, buf), a.repeats)
            view.release()
    finally:
        os.close(fd)

    kcopy = tmpfs_read(buf, a.repeats) * a.size / TMPFS_SIZE

    MNT.mkdir(parents=True, exist_ok=True)
    daxmode("famfs", "mount", dev, str(MNT), "--data-path", "dax")
    try:
        path = json.loads(os.getxattr(MNT, "user.daxmode.stats"))["data_path"]
        if path != "dax":
            raise RuntimeError(f"the mount uses the {path} data path, not dax (not a famfs kernel?)")

        def read2() -> None:
            with open(MNT / "big", "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass

        def via_mmap() -> None:
            with open(MNT / "big", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                v = memoryview(mm)
                copy_windows(v, buf)
                v.release()

        via_mmap()  # the first pass takes the page faults; both methods then read mapped memory
        t_read = best(read2, a.repeats)
        t_mmap = best(via_mmap, a.repeats)
        stats = json.loads(os.getxattr(MNT, "user.daxmode.stats"))["server"]["requests"]
    finally:
        daxmode("famfs", "umount", str(MNT))
    rows = [
        ("memcpy from the devdax mapping", memcpy),
        ("read(2) through the DAX mount", t_read),
        ("mmap + copy through the DAX mount", t_mmap),
        ("read(2) of a tmpfs file (no DAX; scaled)", kcopy),
    ]
    mb = a.size / 1e6
    print(f"guest_dax: {a.size >> 20} MiB, best of {a.repeats}, {WINDOW >> 20} MiB copy window")
    for name, t in rows:
        print(f"  {name:42s} {t:7.3f} s  {mb / t:8.0f} MB/s  {memcpy / t:5.2f}x memcpy")
    print(f"  server requests during the mount: {dict(sorted(stats.items()))}")
    if a.json:
        print(
            json.dumps(
                {
                    "memcpy_s": memcpy,
                    "read_s": t_read,
                    "mmap_s": t_mmap,
                    "read_vs_memcpy": memcpy / t_read,
                    "mmap_vs_memcpy": memcpy / t_mmap,
                    "tmpfs_read_s": kcopy,
                    "read_vs_tmpfs_read": kcopy / t_read,
                    "server_read_requests": stats.get("READ", 0),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
