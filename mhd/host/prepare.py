"""The prepare phase: everything found, checked and made on the host before a guest boots.

Its products are three small objects the rest of the run reads: the ``Suite`` (what runs, and the
kernel's declared skips), the ``Stack`` (what every guest boots: QEMU, kernel, modules, initramfs,
accelerator) and the ``Workspace`` (the run's temporary files, removed however the run ends).  A
typo in a suite path or a skip declaration costs no boot: it is bad input here (exit 3).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mhd.constants import PROJECT
from mhd.guest import warm
from mhd.host import identity
from mhd.host.config import Config
from mhd.host.errors import BadInput
from mhd.host.initramfs import build_initramfs
from mhd.host.kernel import KernelImage, find_module_tree, read_kernel
from mhd.host.preflight import (
    cached_kvm_probe,
    check_resources,
    default_modules_for,
    find_qemu,
    kvm_cache_key,
    probe_kvm,
    proc_users,
)
from mhd.host.suites import compile_project, host_collect, split_suite
from mhd.host.timing import Timing
from mhd.host.verdict import DeclarationError, SkipFile, choose_skip_file

SECOND_NVDIMM_SIZE = 512 << 20
"""nvdimm guests get a second device (DAXMODE_TEST_DEV2) for concurrent runs on two devices."""


def log(msg: str) -> None:
    print(f"mhd: {msg}", flush=True)


def read_host_file(path: str, limit: int = 256) -> str:
    """A short host file's first NUL-terminated string ('' when unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Suite:
    """What the run executes, and the skips the kernel under test justifies (None: --cmd, --keep)."""

    guest_paths: tuple[str, ...] = ()
    host_paths: tuple[str, ...] = ()
    skips: SkipFile | None = None


def load_suite(cfg: Config, release: str) -> Suite:
    if cfg.suite is None:
        return Suite()
    guest, host = split_suite(cfg.suite, Path(PROJECT))
    try:
        skips = choose_skip_file(cfg.skips, release)
    except DeclarationError as e:
        raise BadInput(f"skip declarations: {e}") from None
    return Suite(tuple(guest), tuple(host), skips)


@dataclass(frozen=True)
class Stack:
    """What every guest boots with, found and checked on the host."""

    qemu: str
    qemu_version: tuple[int, int, int]
    kernel: KernelImage
    kernel_path: Path
    module_tree: Path
    python: Path
    initrd: Path
    preload: tuple[str, ...]
    accel: str
    smp: int
    results: Path


class Workspace:
    """The run's own files: a private directory (sockets, session, the planting namespace) and the
    zeroed backing file(s), in /dev/shm unless --shared-file names one.  ``close()`` removes them."""

    def __init__(self, cfg: Config, shm: Path, results: Path) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-"))
        self.shm_dir: Path | None = None
        self.decoy = identity.identities(1)[0]
        self.planted: list[str] = []
        self.files: list[tuple[Path, int]] = []
        try:
            if cfg.plant:
                try:
                    self.planted, note = identity.plant_host_state(
                        self.run_dir, self.decoy, [Path(PROJECT), results, self.run_dir, shm]
                    )
                except OSError as e:
                    note = f"host state not planted: {e}"
                log(note)
            second = cfg.backend == "nvdimm" and cfg.second_nvdimm
            if cfg.shared_file is None or second:
                self.shm_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-", dir=shm))
            if cfg.shared_file is None:
                assert self.shm_dir is not None
                self.shared_file = self.shm_dir / f"{cfg.backend}-shared.raw"
            else:
                self.shared_file = cfg.shared_file.resolve()
            self.second_file = self.shm_dir / "nvdimm-shared2.raw" if second and self.shm_dir else None
            # The nvdimm label area comes on top of the region (qemucmd.GuestSpec.label_size).
            self.files.append((self.shared_file, cfg.shared_size + cfg.label_size))
            if self.second_file is not None:
                self.files.append((self.second_file, SECOND_NVDIMM_SIZE))
            # A fresh, zeroed device for every run: truncate to 0 first drops old contents.
            for path, size in self.files:
                with open(path, "wb") as f:
                    f.truncate(size)
        except BaseException:
            self.close()
            raise

    def shared_files(self) -> list[tuple[Path, int]]:
        return list(self.files)

    def close(self) -> None:
        if self.shm_dir is not None:
            shutil.rmtree(self.shm_dir, ignore_errors=True)
        if self.planted:
            identity.detach(self.run_dir / "plant")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _accelerator(
    cfg: Config, qemu: str, qver: tuple[int, int, int], kernel: KernelImage, initrd: Path, run_dir: Path
) -> tuple[str, str]:
    if cfg.kvm == "off":
        return "tcg", "--kvm off"
    key = kvm_cache_key(qver, kernel.banner, read_host_file("/proc/cpuinfo", 1 << 16))
    ok, why, cached = cached_kvm_probe(
        Path(PROJECT) / ".cache" / "kvm-probe.json",
        key,
        lambda: probe_kvm(qemu, cfg.kernel, initrd, run_dir),
    )
    if cfg.kvm == "on" and not ok:
        raise BadInput(f"--kvm on: KVM does not work here ({why})")
    return ("kvm" if ok else "tcg"), f"KVM probe{' (cached)' if cached else ''}: {why}"


def prepare(cfg: Config, timing: Timing) -> tuple[Suite, Stack, Workspace]:
    """Check every input, compile and collect on the host, build the initramfs, make the files."""
    project = Path(PROJECT)
    with timing.phase("prepare") as ph:
        qemu, qver = find_qemu(cfg.qemu, cfg.backend)
        kernel = read_kernel(cfg.kernel)
        suite = load_suite(cfg, kernel.version)
        modules = cfg.modules or default_modules_for(cfg.kernel, kernel.version)
        module_tree = find_module_tree(modules, kernel.version)
        python = project / ".venv" / "bin" / "python"
        if not python.exists():
            raise BadInput(f"no venv at {project / '.venv'} (run `make venv`)")
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        results = cfg.results.resolve()
        check_resources(cfg, shm, results)
        if cfg.shared_file is not None:
            users = proc_users(cfg.shared_file) if cfg.shared_file.exists() else []
            if users:
                who = ", ".join(f"{pid} ({comm})" for pid, comm in users)
                raise BadInput(f"shared file {cfg.shared_file} is in use by process {who}")
        detail = [f"compile {compile_project(project):.1f}"]
        preload = warm.preload_names("daxmode", warm.imported_names(str(project / "daxmode")))
        if suite.guest_paths:
            detail.append(f"collect {host_collect(python, project, list(suite.guest_paths)):.1f}")
        initrd = build_initramfs(module_tree, project / ".cache" / "initramfs")
        ws = Workspace(cfg, shm, results)
        try:
            t0 = time.monotonic()
            accel, why = _accelerator(cfg, qemu, qver, kernel, initrd, ws.run_dir)
        except BaseException:
            ws.close()
            raise
        detail.append(f"KVM probe {time.monotonic() - t0:.1f}")
        ph.detail = ", ".join(detail)
    smp = cfg.smp or max(1, min(2, (os.cpu_count() or 1) // cfg.hosts))
    stack = Stack(
        qemu, qver, kernel, cfg.kernel, module_tree, python, initrd, tuple(preload), accel, smp, results
    )
    log(f"QEMU {'.'.join(map(str, qver))} ({qemu})")
    log(f"kernel {kernel.version} ({cfg.kernel}), modules {module_tree}")
    log(
        f"backend {cfg.backend}, {cfg.hosts} host(s), shared {cfg.shared_size >> 20}M "
        f"at {ws.shared_file}, guest RAM {cfg.mem_mb}M, smp {smp}"
    )
    log(f"accelerator {accel} ({why})")
    if suite.skips is not None:
        log(f"declared skips: {suite.skips.path} ({suite.skips.kernel})")
    log(f"results in {results}")
    return suite, stack, ws
