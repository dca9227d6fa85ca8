"""Checks before anything boots: QEMU, module tree, memory and disk, busy shared files, KVM.

Every problem is one BadInput line (exit 3) before a guest costs a boot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from mhd.host.errors import BadInput
from mhd.host.qemucmd import (
    QEMU_MIN_CXL,
    QEMU_MIN_NVDIMM,
    kvm_probe_decided,
    kvm_probe_verdict,
    parse_qemu_version,
)

QEMU_OVERHEAD_MB = 200
"""Per-guest host memory beyond guest RAM (QEMU itself, TCG translation cache) used in the memory check."""


def find_qemu(name: str, backend: str) -> tuple[str, tuple[int, int, int]]:
    exe = shutil.which(name)
    if not exe:
        raise BadInput(f"QEMU {name} not found (run `make setup`: it installs QEMU >= 8.1)")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        ver = parse_qemu_version(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise BadInput(f"QEMU {exe}: cannot read its version ({e})") from None
    need = QEMU_MIN_CXL if backend == "cxl" else QEMU_MIN_NVDIMM
    if ver[:2] < need:
        raise BadInput(
            f"QEMU {exe} is {'.'.join(map(str, ver))}; the {backend} backend needs "
            f">= {'.'.join(map(str, need))} (run `make setup`)"
        )
    return exe, ver


def default_modules_for(kernel: Path, version: str) -> Path:
    """Module tree next to the kernel: Debian keeps vmlinuz inside lib/modules/VER."""
    if kernel.parent.name == version:
        return kernel.parent
    raise BadInput(f"kernel {kernel}: pass --modules with its module tree (lib/modules/{version})")


def proc_users(path: Path, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """Processes that have ``path`` open or mapped (a QEMU maps its backing file), without lsof."""
    target = os.path.realpath(path)
    users = []
    for d in proc.iterdir() if proc.is_dir() else []:
        if not d.name.isdigit():
            continue
        hit = False
        try:
            for fd in (d / "fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        hit = True
                        break
                except OSError:
                    continue
        except OSError:
            pass
        if not hit:
            try:
                with open(d / "maps", errors="replace") as f:
                    hit = any(line.rstrip("\n").endswith(" " + target) for line in f)
            except OSError:
                pass
        if hit:
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                comm = "?"
            users.append((int(d.name), comm))
    return users


def meminfo_available_mb(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise ValueError("no MemAvailable in /proc/meminfo")


def check_resources(cfg, shm_dir: Path, results: Path) -> None:
    second = 512 if cfg.backend == "nvdimm" and cfg.second_nvdimm else 0  # prepare.SECOND_NVDIMM_SIZE
    need_mb = cfg.hosts * (cfg.mem_mb + QEMU_OVERHEAD_MB) + (cfg.shared_size >> 20) + second
    try:
        avail = meminfo_available_mb(Path("/proc/meminfo").read_text())
    except (OSError, ValueError):
        avail = None
    if avail is not None and need_mb > avail:
        raise BadInput(
            f"not enough memory: {cfg.hosts} guests x {cfg.mem_mb}M + shared {cfg.shared_size >> 20}M "
            f"needs ~{need_mb}M, {avail}M available (use --mem/--hosts/--shared-size)"
        )
    st = os.statvfs(shm_dir)
    if st.f_bavail * st.f_frsize < (0 if cfg.shared_file else cfg.shared_size) + (second << 20):
        raise BadInput(f"not enough space in {shm_dir} for the {cfg.shared_size >> 20}M shared file")
    results.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(results)
    if st.f_bavail * st.f_frsize < 64 << 20:
        raise BadInput(f"not enough disk space in {results} (need 64M for logs)")


# ---- KVM -------------------------------------------------------------------------------------


def probe_kvm(
    qemu: str, kernel: Path, initrd: Path, workdir: Path, timeout: float = 20.0
) -> tuple[bool, str]:
    """Boot the real kernel under KVM until it reaches /init or visibly fails.

    A failing KVM guest does not exit: QEMU prints "KVM internal error" and pauses it.  The output
    is watched and the probe ends at the first decisive line (about a second), not at the timeout.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not accessible"
    console = workdir / "kvm-probe.log"
    qemu_out = workdir / "kvm-probe.out"
    argv = [
        qemu, "-accel", "kvm", "-cpu", "host", "-m", "512M",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(kernel), "-initrd", str(initrd), "-no-reboot",
        "-append", "console=ttyS0 panic=-1 rdinit=/init mhd_probe=1",
        "-serial", f"file:{console}",
    ]  # fmt: skip
    with open(qemu_out, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    timed_out = False

    def text() -> str:
        t = ""
        for f in (qemu_out, console):
            with contextlib.suppress(OSError):
                t += f.read_text(errors="replace")
        return t

    try:
        while proc.poll() is None:
            if kvm_probe_decided(text()):
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return kvm_probe_verdict(proc.returncode, text(), timed_out)


def kvm_cache_key(qemu_version: tuple[int, int, int], kernel_banner: str, cpuinfo: str) -> str:
    """What a KVM verdict depends on: host kernel, QEMU, CPU model, and the guest kernel it boots."""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    return "|".join([os.uname().release, ".".join(map(str, qemu_version)), model, kernel_banner])


def cached_kvm_probe(cache: Path, key: str, probe) -> tuple[bool, str, bool]:  # type: ignore[no-untyped-def]
    """(works, why, from_cache): the verdict for ``key`` from ``cache``, else ``probe()`` (then stored).

    A failing probe costs 6-8 s here (QEMU pauses the guest instead of exiting), on every run.
    """
    import json

    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        data = {}
    hit = data.get(key) if isinstance(data, dict) else None
    if isinstance(hit, dict) and isinstance(hit.get("ok"), bool):
        return hit["ok"], str(hit.get("why", "")), True
    ok, why = probe()
    data = data if isinstance(data, dict) else {}
    data[key] = {"ok": ok, "why": why, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, cache)
    return ok, why, False
