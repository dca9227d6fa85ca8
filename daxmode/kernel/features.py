"""What the running kernel offers famfs: fuse-famfs (the V10 series), famfs v1, the fsdev driver.

Detection looks for symbol *names* in /proc/kallsyms and ignores the ``[module]`` tag: famfs's
own check requires ``[fuse]`` and so fails when fuse is built in (famfs issue #126).  It also
reads /proc/filesystems (v1 registers ``famfs``), the kernel config when it is readable, fuse's
module parameters, and modules.dep for a v1 module that is installed but not loaded.  famfs's own
user-space tools are optional: daxmode mounts famfs with its own FUSE server
(:mod:`daxmode.famfs.mount.command`); :func:`find_tools` only reports them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field

from daxmode.errors import DaxmodeError
from daxmode.sysfs import Sysfs

# Non-static functions of fs/fuse/famfs.c in the fuse-famfs patch series (famfs_file_init_dax,
# famfs_fuse_iomap_begin, the fileofs->daxofs resolvers); famfs v1 (fs/famfs) has famfs_create.
FUSE_FAMFS_SYMBOLS = frozenset(
    {
        "famfs_fuse_iomap_begin",
        "famfs_file_init_dax",
        "famfs_fileofs_to_daxofs",
        "famfs_interleave_fileofs_to_daxofs",
        "famfs_fuse_meta_free",
        "famfs_teardown",
    }
)
V1_SYMBOLS = frozenset({"famfs_create", "famfs_fill_super", "famfs_file_ioctl"})


@dataclass
class KernelSupport:
    release: str = ""
    fuse_famfs: bool = False
    famfs_v1: bool = False
    v1_module_installed: bool = False
    fsdev_driver: bool = False
    kallsyms_readable: bool = False
    evidence: list[str] = field(default_factory=list)

    @property
    def mountable(self) -> bool:
        return self.fuse_famfs or self.famfs_v1 or self.v1_module_installed


@dataclass
class Tools:
    famfs: str | None
    famfs_fused: str | None
    mkfs_famfs: str | None


def _read(sysfs: Sysfs, rel: str) -> str | None:
    try:
        return sysfs.read(rel)
    except DaxmodeError:
        return None


def filesystem_registered(sysfs: Sysfs, fstype: str) -> bool:
    """``fstype`` is in /proc/filesystems (a module that registers it is loaded)."""
    text = _read(sysfs, "proc/filesystems") or ""
    return any(line.split()[-1:] == [fstype] for line in text.splitlines())


def detect_kernel(sysfs: Sysfs) -> KernelSupport:
    ks = KernelSupport(release=(_read(sysfs, "proc/sys/kernel/osrelease") or "").strip())
    syms = _read(sysfs, "proc/kallsyms")
    if syms:
        ks.kallsyms_readable = True
        for line in syms.splitlines():
            parts = line.split()
            if len(parts) < 3 or "famfs" not in parts[2]:
                continue
            name = parts[2]
            if name in FUSE_FAMFS_SYMBOLS:
                if not ks.fuse_famfs:
                    ks.evidence.append(f"kallsyms: {name} {' '.join(parts[3:]) or '(built in)'}")
                ks.fuse_famfs = True
            elif name in V1_SYMBOLS or (len(parts) > 3 and parts[3] in ("[famfs]", "[famfsv1]")):
                if not ks.famfs_v1:
                    ks.evidence.append(f"kallsyms: {name} {' '.join(parts[3:]) or '(built in)'}")
                ks.famfs_v1 = True
    filesystems = _read(sysfs, "proc/filesystems") or ""
    if any(line.split()[-1:] == ["famfs"] for line in filesystems.splitlines()):
        ks.famfs_v1 = True
        ks.evidence.append("/proc/filesystems lists famfs")
    params = sysfs.listdir("sys/module/fuse/parameters")
    famfs_params = [p for p in params if "famfs" in p]
    if famfs_params:
        ks.fuse_famfs = True
        ks.evidence.append(f"fuse module parameters: {', '.join(famfs_params)}")
    config = _kernel_config(sysfs, ks.release)
    if config:
        for opt, what in (
            ("CONFIG_FUSE_FAMFS_DAX", "fuse"),
            ("CONFIG_FAMFSV1", "v1"),
            ("CONFIG_FAMFS", "v1"),
        ):
            val = config.get(opt)
            if val in ("y", "m"):
                ks.evidence.append(f"kernel config: {opt}={val}")
                if what == "fuse":
                    ks.fuse_famfs = True
                elif val == "m":
                    ks.v1_module_installed = True
                else:
                    ks.famfs_v1 = True
    deps = _read(sysfs, f"lib/modules/{ks.release}/modules.dep") if ks.release else None
    for line in (deps or "").splitlines():
        base = os.path.basename(line.split(":", 1)[0]).split(".ko")[0]
        if base in ("famfs", "famfsv1"):
            ks.v1_module_installed = True
            ks.evidence.append(f"modules.dep: {base} module installed")
            break
    ks.fsdev_driver = sysfs.exists("sys/bus/dax/drivers/fsdev_dax") or bool(deps and "fsdev_dax.ko" in deps)
    return ks


def _kernel_config(sysfs: Sysfs, release: str) -> dict[str, str]:
    text = None
    gz = sysfs.path("proc/config.gz")
    if os.path.exists(gz):
        try:
            with gzip.open(gz, "rt") as f:
                text = f.read()
        except OSError:
            text = None
    if text is None and release:
        text = _read(sysfs, f"boot/config-{release}")
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def find_tools() -> Tools:
    famfs = shutil.which("famfs")
    fused = None
    if famfs:
        cand = os.path.join(os.path.dirname(os.path.realpath(famfs)), "famfs_fused")
        fused = cand if os.access(cand, os.X_OK) else None
    return Tools(famfs, fused, shutil.which("mkfs.famfs"))
