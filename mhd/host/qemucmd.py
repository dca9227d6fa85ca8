"""QEMU command lines for one guest ("head") of the shared device, built as pure data.

Every head is its own QEMU process.  They share memory only because each maps the same backing
file with ``memory-backend-file,share=on`` (MAP_SHARED); decoder state stays per process, which is
why each guest creates its own CXL region (see /work/shared/reference/qemu-cxl.md section 1c).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mhd.constants import AGENT_PORT

BACKENDS = ("cxl", "nvdimm")
QEMU_MIN_CXL = (8, 1)
"""Volatile CXL memdevs (``volatile-memdev=``) and event-log interrupts arrived in QEMU 8.1; with 7.2
kernels >= 6.3 never create mem0 (qemu-cxl.md section 1, version table)."""
QEMU_MIN_NVDIMM = (6, 0)


# The CXL fixed memory window must cover the device; regions are carved in 256 MiB multiples.
CXL_REGION_ALIGN = 256 << 20
CXL_FMW_SIZE = 4 << 30
NVDIMM_ALIGN = 2 << 20


@dataclass(frozen=True)
class NetLink:
    """One point-to-point link of the guests' private network (a unix stream socket, no host IP)."""

    link: int
    socket: Path
    server: bool
    mac: str


@dataclass(frozen=True)
class GuestSpec:
    qemu: str
    kernel: Path
    initrd: Path
    module_tree: Path
    share_dir: Path
    run_dir: Path
    console_log: Path
    backend: str
    host: int
    mem_mb: int
    smp: int
    accel: str
    shared_file: Path
    shared_size: int
    second_file: Path | None = None
    """nvdimm: a second shared nvdimm, so tests have two dax devices (concurrent runs, issue 13)."""
    second_size: int = 0
    label_size: int = 0
    """nvdimm: label area of the shared (first) nvdimm; QEMU carves it from the end of the backing file,
    which is made that much larger so the region keeps shared_size (and its alignment); 0 = none."""
    root_dir: Path = Path("/")
    hide_hypervisor: bool = True
    """cxl: hide CPUID.HYPERVISOR (see cpu_model); False for kernels with CXL_REGION_INVALIDATION_TEST=y."""
    net: tuple[NetLink, ...] = ()
    append: str = ""
    extra: tuple[str, ...] = field(default_factory=tuple)


def parse_qemu_version(text: str) -> tuple[int, int, int]:
    """``QEMU emulator version 10.0.2 (Debian ...)`` -> (10, 0, 2); ValueError when absent."""
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError("no 'QEMU emulator version' line")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def parse_size(text: str) -> int:
    """``512M``, ``1G``, ``1536m``, ``4096`` (bytes) -> bytes; ValueError on anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {text!r} (use e.g. 512M or 1G)")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(m.group(1)) * mult


def check_shared_size(backend: str, size: int) -> None:
    """Reject sizes the device model or the kernel cannot use, with the reason."""
    if backend == "cxl":
        if size < CXL_REGION_ALIGN or size % CXL_REGION_ALIGN:
            raise ValueError("cxl shared size must be a positive multiple of 256M (CXL region granule)")
        if size > CXL_FMW_SIZE:
            raise ValueError("cxl shared size must be at most 4G (the fixed memory window)")
    elif backend == "nvdimm":
        if size < 16 * NVDIMM_ALIGN or size % NVDIMM_ALIGN:
            raise ValueError("nvdimm shared size must be a multiple of 2M and at least 32M")
    else:
        raise ValueError(f"unknown backend {backend!r} (choose {', '.join(BACKENDS)})")


def kernel_append(spec: GuestSpec) -> str:
    # memhp_default_state=offline: Debian kernels auto-online hot-added memory, and onlined CXL memory
    # under TCG makes the guest crawl or die (verified-stack.md); daxmode decides when to online.
    # panic=-1 + -no-reboot: a panicking guest ends its QEMU at once instead of hanging until timeout.
    parts = [
        "console=ttyS0,115200",
        "panic=-1",
        "rdinit=/init",
        "memhp_default_state=offline",
        "mitigations=off",
        "loglevel=4",
        f"mhd_host={spec.host}",
    ]
    if spec.append:
        parts.append(spec.append)
    return " ".join(parts)


def cpu_model(spec: GuestSpec) -> str:
    # hypervisor=off hides CPUID.HYPERVISOR: otherwise the CXL region commit fails in every VM with
    # "Failed to synchronize CPU cache state" (cpu_cache_has_invalidate_memregion() is false under a
    # hypervisor); TCG then treats the kernel's WBINVD as a no-op (qemu-cxl.md section 3).
    base = "host" if spec.accel == "kvm" else "max"
    return f"{base},hypervisor=off" if spec.backend == "cxl" and spec.hide_hypervisor else base


def build_command(spec: GuestSpec) -> list[str]:
    """The full argv for one guest."""
    if spec.backend not in BACKENDS:
        raise ValueError(f"unknown backend {spec.backend!r}")
    h = spec.host
    run = spec.run_dir
    cmd = [spec.qemu, "-name", f"daxmode-host{h}", "-nodefaults", "-no-user-config", "-display", "none"]
    cmd += ["-accel", "kvm" if spec.accel == "kvm" else "tcg"]
    cmd += ["-cpu", cpu_model(spec), "-smp", str(spec.smp)]
    if spec.backend == "cxl":
        cmd += ["-machine", "q35,cxl=on", "-m", f"{spec.mem_mb}M"]
        cmd += [
            "-object",
            f"memory-backend-file,id=cxl-mem0,share=on,mem-path={spec.shared_file},size={spec.shared_size}",
            "-device",
            "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1",
            "-device",
            "cxl-rp,port=0,bus=cxl.1,id=cxl-rp0,chassis=0,slot=2",
            # The same serial number on every head: they are one device seen through several ports.
            "-device",
            "cxl-type3,bus=cxl-rp0,volatile-memdev=cxl-mem0,id=cxl-vmem0,sn=0x2",
            "-M",
            f"cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size={CXL_FMW_SIZE}",
        ]
    else:
        nvdimms = [(spec.shared_file, spec.shared_size)]
        if spec.second_file is not None:
            nvdimms.append((spec.second_file, spec.second_size))
        max_mb = spec.mem_mb + sum(size for _, size in nvdimms) // (1 << 20) + 1024
        cmd += [
            "-machine",
            "q35,nvdimm=on",
            "-m",
            f"{spec.mem_mb}M,slots={len(nvdimms) + 1},maxmem={max_mb}M",
        ]
        for i, (path, size) in enumerate(nvdimms):
            label = f",label-size={spec.label_size}" if i == 0 and spec.label_size else ""
            if label:
                size += spec.label_size
            cmd += [
                "-object",
                f"memory-backend-file,id=nv{i},share=on,mem-path={path},size={size}",
                "-device",
                f"nvdimm,id=nvdimm{i},memdev=nv{i}{label}",
            ]
    cmd += ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", kernel_append(spec)]
    cmd += ["-no-reboot"]
    # Console: a unix socket a user can attach to (socat) and, via logfile=, a per-host log kept in the
    # results directory whether or not anyone is attached.
    cmd += [
        "-chardev",
        f"socket,id=con0,path={run / f'host{h}.console'},server=on,wait=off,logfile={spec.console_log}",
        "-serial",
        "chardev:con0",
    ]
    cmd += ["-qmp", f"unix:{run / f'host{h}.qmp'},server=on,wait=off"]
    # The guest agent's channel.
    cmd += [
        "-chardev",
        f"socket,id=agent0,path={run / f'host{h}.agent'},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0,bus=pcie.0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT}",
    ]
    # 9p shares: the host root (read-only), the guest kernel's module tree, the per-host results share.
    shares = [
        ("hostroot", spec.root_dir, True),
        ("modules", spec.module_tree, True),
        ("share", spec.share_dir, False),
    ]
    for i, (tag, path, ro) in enumerate(shares):
        opts = f"local,id=fs{i},path={path},security_model=none,multidevs=remap"
        if ro:
            opts += ",readonly=on"
        cmd += ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={tag},bus=pcie.0"]
    for link in spec.net:
        nid = f"net{link.link}"
        server = "on" if link.server else "off"
        cmd += [
            "-netdev",
            f"stream,id={nid},server={server},addr.type=unix,addr.path={link.socket}",
            "-device",
            f"virtio-net-pci,netdev={nid},mac={link.mac},bus=pcie.0",
        ]
    cmd += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    # Every PCI device names pcie.0: with cxl=on QEMU would otherwise try the pxb-cxl bus, which takes
    # only bridges ("Only PCI/PCIe bridges can be plugged into pxb-cxl").
    cmd += list(spec.extra)
    return cmd


def net_links(hosts: int, run_dir: Path) -> dict[int, tuple[NetLink, ...]]:
    """A star of point-to-point links: host 0 <-> host i for i >= 1 (host 0 listens).

    Stream sockets between QEMU processes carry frames only among the project's guests: there is
    no tap device, no user-mode NAT and no host address.
    """
    links: dict[int, list[NetLink]] = {h: [] for h in range(hosts)}
    for i in range(1, hosts):
        sock = run_dir / f"link{i}.sock"
        links[0].append(NetLink(i, sock, True, guest_mac(0, i)))
        links[i].append(NetLink(i, sock, False, guest_mac(i, i)))
    return {h: tuple(v) for h, v in links.items()}


def guest_mac(host: int, link: int) -> str:
    """Locally administered MAC encoding host and link, so the guest finds its interface by MAC."""
    return f"52:54:00:6d:{host:02x}:{link:02x}"


def guest_addr(host: int, link: int) -> str:
    """IPv4 address of ``host`` on ``link`` (10.77.<link>.0/24: host 0 is .1, the peer .2)."""
    return f"10.77.{link}.{1 if host == 0 else 2}"


KVM_FAILURES = ("KVM internal error", "failed to set MSR", "emulation failure", "Could not access KVM")


def kvm_probe_decided(output: str) -> bool:
    """True once the probe's output settles the question (userspace reached, or a KVM failure)."""
    return "MHD-PROBE-OK" in output or any(n in output for n in KVM_FAILURES)


def kvm_probe_verdict(returncode: int | None, console: str, timed_out: bool) -> tuple[bool, str]:
    """Decide from a probe boot whether KVM guests work here.

    The probe boots the real kernel and initramfs with ``mhd_probe=1``; /init prints the marker and
    powers off.  Seen failure modes on the build machines: "failed to set MSR 0x10a" (QEMU aborts),
    "KVM internal error" (emulation failure in the decompressor), or silence until the timeout.
    """
    if "MHD-PROBE-OK" in console:
        return True, "probe guest reached userspace"
    for needle in KVM_FAILURES:
        if needle in console:
            return False, needle
    if timed_out:
        return False, "probe guest did not reach userspace in time"
    return False, f"probe QEMU exited with {returncode} before userspace"
