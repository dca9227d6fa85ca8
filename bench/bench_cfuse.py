"""The copy data path against a C FUSE server (issue 17): 1 GiB sequential read, side by side.

daxmode's server (Python, raw /dev/fuse) and ``bench/cfuse_famfs.c`` (libfuse's low-level API,
Debian's libfuse3-dev) serve the same 1 GiB famfs file from the same image mapping: each maps the
image MAP_SHARED, opens the file with direct_io and answers a READ with the mapped bytes.  Reads
are ``read(2)`` of 2 MiB and ``dd bs=1M``, alternated between the two mounts, best of 5.  Goal:
daxmode >= 0.9x the C server.  ``--json`` prints the numbers as the last line (guest runs).
``--guest`` runs it in one nvdimm guest on Debian's kernel (the stock kernel's copy path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_famfs import _best
from bench.bench_fuse import _cpu_of, _read_all
from daxmode.famfs import Volume, mkfs
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.famfs.mount import command as M
from daxmode.fsdev import create_image, map_device, map_image
from daxmode.sysfs import Sysfs

MiB = 1 << 20
GiB = 1 << 30
GOAL = 0.9
HERE = Path(__file__).resolve().parent


def build_server(out: Path) -> Path:
    """Compile cfuse_famfs.c (needs cc and libfuse3-dev)."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
    if flags.returncode:
        raise RuntimeError("pkg-config finds no fuse3 (apt-get install libfuse3-dev)")
    exe = out / "cfuse_famfs"
    subprocess.run(
        ["cc", "-O2", "-o", str(exe), str(HERE / "cfuse_famfs.c"), *flags.stdout.split()], check=True
    )
    return exe


def _mounted(mp: Path) -> bool:
    return any(line.split()[4] == str(mp) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _whole(path: Path, buf: bytearray) -> None:
    if (n := _read_all(str(path), buf)) != GiB:
        raise RuntimeError(f"{path}: read {n} bytes, expected {GiB}")


def _dd(path: Path) -> None:
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    if "--guest" in argv:
        from bench.guestrun import run_guest_bench

        r = run_guest_bench(
            "bench_cfuse", ["--shared-size", "2G", "--mem", "2G"], ["--device", "dax0.0"], name="bench-cfuse"
        )
        r.print_table()
        return r.data
    as_json = "--json" in argv
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    base = Path(tempfile.mkdtemp(prefix="daxmode-cfuse-bench-", dir=shm))
    out: dict[str, float] = {}
    lines = [f"copy path vs a C FUSE server ({os.uname().release}; load average {os.getloadavg()[0]:.2f})"]
    cproc: subprocess.Popen[bytes] | None = None
    device = argv[argv.index("--device") + 1] if "--device" in argv else None
    if device is None:  # an image in /dev/shm, daxmode state under a private root
        root = base / "root"
        root.mkdir()
        os.symlink("/proc", root / "proc")
        sysfs = Sysfs(root)
    else:  # a real devdax device (the guest run): the real root
        sysfs = Sysfs("/")
    dmnt, cmnt = base / "daxmode", base / "c"
    dmnt.mkdir()
    cmnt.mkdir()
    try:
        exe = build_server(base)
        me = ensure_system_uuid(sysfs)
        if device is None:
            img = base / "img"
            create_image(img, GiB + 256 * MiB)
            source, medium = str(img), map_image(img)
        else:
            source, medium = f"/dev/{device}", map_device(sysfs, device)
        with medium as m:
            mkfs(m, me)
            v = Volume(m, me)
            meta, _ = v.creat("big", GiB)
            pattern = os.urandom(2 * MiB)
            for dev, n in v.segments(meta):
                for off in range(0, n, 2 * MiB):
                    m.buf[dev + off : dev + off + 2 * MiB] = pattern
            ((_d, ext_off, _len),) = meta.extents
            v.close()
        dpid = M.mount(sysfs, device or source, str(dmnt), data_path="copy").server_pid
        cproc = subprocess.Popen(  # its own session, as daxmode's server daemon (the scheduler's autogroups)
            [str(exe), source, str(ext_off), str(GiB), str(cmnt), "-o", "allow_other,default_permissions"],
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not _mounted(cmnt):
            if cproc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the C server did not mount: {cproc.stderr.read().decode() if cproc.stderr else ''}"
                )
            time.sleep(0.05)
        buf = bytearray(2 * MiB)
        d_big, c_big = dmnt / "big", cmnt / "big"
        with open(d_big, "rb") as a, open(c_big, "rb") as b:
            if a.read(4 * MiB) != b.read(4 * MiB):
                raise RuntimeError("the two servers serve different bytes")
        t: dict[str, list[float]] = {"d_read": [], "c_read": [], "d_dd": [], "c_dd": []}
        cpu = {"d": 0.0, "c": 0.0}
        for _ in range(5):  # alternate, so load changes hit both alike
            for who, pid, big in (("d", dpid, d_big), ("c", cproc.pid, c_big)):
                c0 = _cpu_of(pid)
                t[f"{who}_read"].append(_best(lambda b=big: _whole(b, buf), 1))
                t[f"{who}_dd"].append(_best(lambda b=big: _dd(b), 1))
                cpu[who] += _cpu_of(pid) - c0
        best = {k: min(v) for k, v in t.items()}
        gbs = GiB / 1e9
        for kind in ("read", "dd"):
            dx, cx = gbs / best[f"d_{kind}"], gbs / best[f"c_{kind}"]
            out[f"daxmode_{kind}_GBps"] = dx
            out[f"c_{kind}_GBps"] = cx
            out[f"{kind}_ratio"] = dx / cx
            what = "read(2) 2 MiB" if kind == "read" else "dd bs=1M"
            lines.append(
                f"  1 GiB {what}: daxmode {dx:.2f} GB/s, C {cx:.2f} GB/s: {dx / cx:.2f}x (goal {GOAL}x)"
            )
        out["daxmode_server_cpu_s_per_GiB"] = cpu["d"] / 10
        out["c_server_cpu_s_per_GiB"] = cpu["c"] / 10
        lines.append(
            f"  server CPU per GiB read (user+sys): daxmode {cpu['d'] / 10:.3f} s, C {cpu['c'] / 10:.3f} s"
        )
    finally:
        if _mounted(dmnt):
            M.umount(sysfs, str(dmnt))
        if cproc is not None:
            subprocess.run(["umount", str(cmnt)], check=False, capture_output=True)
            try:
                cproc.wait(10)
            except subprocess.TimeoutExpired:
                cproc.kill()
        shutil.rmtree(base, ignore_errors=True)
    lines.append(f"  (load average at the end {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores)")
    print("\n".join(lines))
    if as_json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
