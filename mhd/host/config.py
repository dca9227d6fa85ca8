"""The harness's configuration: ``qemu/cxl-mhd.sh`` options, checked once into a ``Config``."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from mhd.constants import PROJECT
from mhd.host.errors import BadInput
from mhd.host.qemucmd import check_shared_size, parse_size

DEFAULT_KVER = "7.3.4+deb13-amd64"
"""Debian's kernel that ``make setup`` unpacks into .cache/kernels (the default guest kernel)."""
NVDIMM_MIN_LABEL_SIZE = 128 << 10
"""hw/mem/nvdimm.c rejects a label-size under MIN_NAMESPACE_LABEL_SIZE (128 KiB)."""


def default_kernel(project: Path = Path(PROJECT)) -> Path:
    return (
        project / ".cache" / "kernels" / DEFAULT_KVER / "usr" / "lib" / "modules" / DEFAULT_KVER / "vmlinuz"
    )


@dataclass
class Config:
    backend: str = "cxl"
    hosts: int = 2
    kernel: Path = field(default_factory=default_kernel)
    modules: Path | None = None
    shared_size: int = 0
    shared_file: Path | None = None
    label_size: int = 0
    second_nvdimm: bool = True
    mem_mb: int = 1024
    smp: int = 0
    kvm: str = "auto"
    suite: str | None = None
    cmd: str | None = None
    results: Path = field(default_factory=lambda: Path(PROJECT) / "results" / "mhd")
    timeout: float = 900.0
    boot_timeout: float = 300.0
    qemu: str = "qemu-system-x86_64"
    keep: bool = False
    udev: bool = True
    network: bool = True
    hide_hypervisor: bool = True
    warm: bool = True
    plant: bool = True
    skips: str | None = None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cxl-mhd.sh",
        description="Boot N QEMU guests sharing one CXL (or nvdimm) memory device and run tests in them.",
    )
    ap.add_argument("--backend", choices=["cxl", "nvdimm"], default="cxl")
    ap.add_argument("--hosts", type=int, default=2, help="number of guests (1..8, default 2)")
    ap.add_argument(
        "--kernel", type=Path, default=None, help="bzImage (default: Debian 7.3.4 from make setup)"
    )
    ap.add_argument(
        "--modules", type=Path, default=None, help="module tree (lib/modules/VER or an install root)"
    )
    ap.add_argument("--shared-size", default=None, help="shared device size (cxl: 512M, nvdimm: 1G)")
    ap.add_argument(
        "--shared-file", type=Path, default=None, help="backing file (default: a new one in /dev/shm)"
    )
    ap.add_argument(
        "--nvdimm-label-size",
        default=None,
        help="nvdimm: give the shared nvdimm a label area of this size (>= 128K; ndctl's tests need labels)",
    )
    ap.add_argument(
        "--no-second-nvdimm",
        dest="second_nvdimm",
        action="store_false",
        help="nvdimm: only the shared nvdimm (ndctl's tests take the first namespace on the bus)",
    )
    ap.add_argument("--mem", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--smp", type=int, default=0, help="vCPUs per guest (default: host cores / hosts, 1..2)")
    ap.add_argument("--kvm", choices=["auto", "on", "off"], default="auto")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--suite", default=None, help="tests/vm: guest suites + host-side scenarios")
    what.add_argument("--cmd", default=None, help="a shell command to run in each guest")
    ap.add_argument("--results", type=Path, default=None, help="results directory (default results/mhd)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per host (default 900)")
    ap.add_argument("--boot-timeout", type=float, default=300.0, help="seconds to boot (default 300)")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"))
    ap.add_argument("--keep", action="store_true", help="keep the guests running until Ctrl-C")
    ap.add_argument("--no-udev", dest="udev", action="store_false", help="do not start udevd in guests")
    ap.add_argument("--no-network", dest="network", action="store_false", help="no private network")
    ap.add_argument(
        "--show-hypervisor",
        dest="hide_hypervisor",
        action="store_false",
        help="cxl: keep the CPUID hypervisor bit (kernels with CONFIG_CXL_REGION_INVALIDATION_TEST)",
    )
    ap.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="start every guest Python command as a new interpreter (no warm forks; for comparison)",
    )
    ap.add_argument(
        "--no-plant",
        dest="plant",
        action="store_false",
        help="do not plant decoy host state (famfs UUID, machine-id, configs) for guests to ignore",
    )
    ap.add_argument(
        "--skips",
        default=None,
        metavar="NAME|FILE",
        help="declared-skips file of the kernel (qemu/skips/NAME.toml; default: the one whose "
        "release globs match the kernel)",
    )
    return ap


def parse_args(argv: list[str]) -> Config:
    """Parse and validate; usage problems exit 2 through argparse, value problems raise BadInput."""
    ap = build_parser()
    a = ap.parse_args(argv)
    if not 1 <= a.hosts <= 8:
        raise BadInput(f"--hosts {a.hosts}: choose 1..8")
    try:
        mem = parse_size(a.mem)
        size = parse_size(a.shared_size) if a.shared_size else (512 << 20 if a.backend == "cxl" else 1 << 30)
        label = parse_size(a.nvdimm_label_size) if a.nvdimm_label_size else 0
    except ValueError as e:
        raise BadInput(str(e)) from None
    if mem < 256 << 20:
        raise BadInput(f"--mem {a.mem}: guests need at least 256M")
    try:
        check_shared_size(a.backend, size)
    except ValueError as e:
        raise BadInput(f"--shared-size: {e}") from None
    if label and (a.backend != "nvdimm" or label < NVDIMM_MIN_LABEL_SIZE or label >= size // 2):
        raise BadInput(
            f"--nvdimm-label-size {a.nvdimm_label_size}: nvdimm backend only, at least 128K "
            "(QEMU's minimum) and under half the shared size"
        )
    if a.smp < 0 or a.smp > 8:
        raise BadInput(f"--smp {a.smp}: choose 1..8")
    if a.timeout <= 0 or a.boot_timeout <= 0:
        raise BadInput("timeouts must be positive")
    return Config(
        backend=a.backend,
        hosts=a.hosts,
        kernel=a.kernel or default_kernel(),
        modules=a.modules,
        shared_size=size,
        label_size=label,
        second_nvdimm=a.second_nvdimm,
        shared_file=a.shared_file,
        mem_mb=mem >> 20,
        smp=a.smp,
        kvm=a.kvm,
        suite=a.suite,
        cmd=a.cmd,
        results=a.results or Path(PROJECT) / "results" / "mhd",
        timeout=a.timeout,
        boot_timeout=a.boot_timeout,
        qemu=a.qemu,
        keep=a.keep,
        udev=a.udev,
        network=a.network,
        hide_hypervisor=a.hide_hypervisor,
        warm=a.warm,
        plant=a.plant,
        skips=a.skips,
    )
