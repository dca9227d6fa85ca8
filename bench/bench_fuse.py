"""famfs through daxmode's FUSE server (issue 9), measured side by side in one run on /dev/shm images.

* 1 GiB sequential read through the mount (copy data path): ``dd bs=2M`` and ``mmap``, next to the
  user-space API (:mod:`daxmode.famfs.media.access`) and a plain memcpy from the same mapping; goal
  >= 0.5x memcpy.  Run twice: as an image (no cache flushing needed) and with daxmode's native
  cache invalidation before every READ, as on a real devdax device;
* ``stat`` + ``open`` + 4 KiB read of 1,000 files: per-file latency, cold (fresh mount) and warm;
* mount time with a full 15,420-entry log: wall time and the server's CPU (goal < 1 s).

The machine may be shared: the load average is printed with the results.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.bench_famfs import _best, fill_log
from daxmode import cacheflush, fsdev
from daxmode.famfs import Volume, mkfs
from daxmode.famfs.media.access import FamfsFile
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.famfs.mount import command as M
from daxmode.fsdev import create_image, map_image
from daxmode.sysfs import Sysfs

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 2 * MiB
READ_GOAL = 0.5
MOUNT_CPU_GOAL = 1.0


def _shm() -> str:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _native_sync_for_images(on: bool) -> Iterator[None]:
    """Give image mappings daxmode's native cache flushing, as a real devdax device has."""
    if not on:
        yield
        return
    orig = fsdev.map_image

    @contextlib.contextmanager
    def patched(path, *, writable=True):  # type: ignore[no-untyped-def]
        with orig(path, writable=writable) as m:
            m.sync = cacheflush.get()
            yield m

    fsdev.map_image = patched  # type: ignore[assignment]
    import daxmode.famfs.mount.server as ms

    ms.map_image = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        fsdev.map_image = orig  # type: ignore[assignment]
        ms.map_image = orig  # type: ignore[assignment]


def _read_all(path: str, buf: bytearray) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while n := os.readv(fd, [buf]):
            total += n
    finally:
        os.close(fd)
    return total


def _mmap_all(path: str, buf: bytearray) -> int:
    import mmap

    dst = memoryview(buf)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        mv = memoryview(mm)
        n = len(mm)
        for off in range(0, n, CHUNK):
            end = min(n, off + CHUNK)
            dst[: end - off] = mv[off:end]
        mv.release()
    return n


def _dd(path: str) -> float:
    t = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=2M"], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> dict[str, float]:
    sync = cacheflush.get()
    print(f"fuse bench (native cache flush: {sync.name}; load average {os.getloadavg()[0]:.2f})")
    out: dict[str, float] = {}
    base = Path(tempfile.mkdtemp(prefix="daxmode-fuse-bench-", dir=_shm()))
    root = base / "root"
    root.mkdir()
    os.symlink("/proc", root / "proc")
    sysfs = Sysfs(root)
    me = ensure_system_uuid(sysfs)
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        img = base / "big.img"
        create_image(img, 3 * GiB + 512 * MiB)  # sparse; the 1,000 small files take 2 MiB each
        with map_image(img) as m:
            mkfs(m, me)
            v = Volume(m, me)
            meta, _ = v.creat("big", GiB)
            pattern = os.urandom(CHUNK)
            for dev, n in v.segments(meta):
                for off in range(0, n, CHUNK):
                    m.buf[dev + off : dev + off + CHUNK] = pattern
            v.mkdir("small")
            for i in range(1000):
                v.creat(f"small/f{i:04d}", 4096)
            buf = bytearray(CHUNK)
            dst = memoryview(buf)
            segs = v.segments(meta)
            mv = memoryview(m.buf)

            def memcpy() -> None:
                for dev, n in segs:
                    for off in range(0, n, CHUNK):
                        dst[:] = mv[dev + off : dev + off + CHUNK]

            t_memcpy = _best(memcpy, 3)
            ff = FamfsFile(v, meta, invalidate=False)

            def api(f: FamfsFile = ff) -> None:
                for off in range(0, GiB, CHUNK):
                    f.readinto(buf, off)

            t_api = _best(api, 3)
            del ff, api
            mv.release()
            v.close()
        gbs = GiB / 1e9
        out["memcpy_GBps"] = gbs / t_memcpy
        out["api_GBps"] = gbs / t_api
        print(f"  1 GiB from the mapping: memcpy {out['memcpy_GBps']:.2f} GB/s, "
              f"user-space API {out['api_GBps']:.2f} GB/s ({t_memcpy / t_api:.2f}x memcpy)")  # fmt: skip
        for flush in (False, True):
            tag = "flush" if flush else "noflush"
            with _native_sync_for_images(flush):
                res = M.mount(sysfs, str(img), str(mnt))
                try:
                    big = str(mnt / "big")
                    t_read = _best(lambda b=big: _read_all(b, buf), 3)
                    t_dd = _best(lambda b=big: _dd(b), 3)
                    t_mmap = _best(lambda b=big: _mmap_all(b, buf), 3)
                    if not flush:
                        out.update(_small_files(mnt))
                finally:
                    M.umount(sysfs, str(mnt))
            for name, t in (("read2M", t_read), ("dd", t_dd), ("mmap", t_mmap)):
                out[f"{name}_{tag}_GBps"] = gbs / t
                out[f"{name}_{tag}_x_memcpy"] = t_memcpy / t
            how = "cache lines invalidated before each READ" if flush else "image file, no flushing"
            print(
                f"  through the mount ({how}): "
                f"read(2) 2 MiB {gbs / t_read:.2f} GB/s ({t_memcpy / t_read:.2f}x), "
                f"dd bs=2M {gbs / t_dd:.2f} GB/s ({t_memcpy / t_dd:.2f}x), "
                f"mmap {gbs / t_mmap:.2f} GB/s ({t_memcpy / t_mmap:.2f}x memcpy; goal >= {READ_GOAL}x)"
            )
            del res
        print(f"  stat+open+4 KiB read, 1,000 files: cold {out['small_cold_us']:.0f} us/file, "
              f"warm {out['small_warm_us']:.0f} us/file")  # fmt: skip
        out.update(_full_log_mount(sysfs, base, me, mnt))
        print(f"  mount with a full 15,420-entry log: {out['full_mount_wall_s']:.2f} s wall, "
              f"server CPU {out['full_mount_server_cpu_s']:.2f} s (goal < {MOUNT_CPU_GOAL} s)")  # fmt: skip
    finally:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] == str(mnt):
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    return out


def _small_files(mnt: Path) -> dict[str, float]:
    names = [str(mnt / f"small/f{i:04d}") for i in range(1000)]

    def one_pass() -> float:
        t = time.perf_counter()
        for p in names:
            os.stat(p)
            fd = os.open(p, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
        return (time.perf_counter() - t) / len(names) * 1e6

    cold = one_pass()
    warm = min(one_pass() for _ in range(3))
    return {"small_cold_us": cold, "small_warm_us": warm}


def _full_log_mount(sysfs: Sysfs, base: Path, me: uuid.UUID, mnt: Path) -> dict[str, float]:
    img = base / "full.img"
    create_image(img, 64 * GiB)  # sparse: only metadata pages are touched
    with map_image(img) as m:
        mkfs(m, me)
        v = Volume(m, me)
        fill_log(v)
        v.close()
    t = time.perf_counter()
    res = M.mount(sysfs, str(img), str(mnt))
    wall = time.perf_counter() - t
    cpu = _cpu_of(res.server_pid)
    n = len(os.listdir(mnt / "d8"))
    M.umount(sysfs, str(mnt))
    assert res.entries == 15420 and n == 7, (res.entries, n)
    os.unlink(img)
    return {"full_mount_wall_s": wall, "full_mount_server_cpu_s": cpu}


if __name__ == "__main__":
    main()
