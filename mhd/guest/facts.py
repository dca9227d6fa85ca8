"""Facts about a guest that decide which skips its suite may take.  Runs INSIDE a guest (stdlib only).

``python -m mhd.guest.facts`` prints one JSON object: the kernel release and whether it can mount famfs
(fuse-famfs, CONFIG_FUSE_FAMFS_DAX, or the famfs v1 module), whether udevd runs, and which tools
the tests may use (daxctl, famfs's own tools).  The harness adds what it knows itself (backend,
hosts, accelerator, whether memory may be onlined, whether host state was planted) and judges
every skip against the kernel's declared-skips file (qemu/skips/) with them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sys
from pathlib import Path


def kernel_config(release: str, root: str = "/") -> dict[str, str] | None:
    """The running kernel's config (Debian ships it in the module tree; IKCONFIG as a fallback)."""
    r = Path(root)
    for p in (r / f"lib/modules/{release}/config", r / f"boot/config-{release}"):
        try:
            return parse_config(p.read_text(errors="replace"))
        except OSError:
            continue
    try:
        return parse_config(gzip.decompress((r / "proc/config.gz").read_bytes()).decode(errors="replace"))
    except OSError:
        return None


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v.strip()
    return out


def has_fuse_famfs(config: dict[str, str] | None, kallsyms: bytes | None) -> bool:
    """fuse-famfs is built into fuse: its config symbol, or failing a config its famfs_ symbols."""
    if config is not None and "CONFIG_FUSE_FS" in config:
        return config.get("CONFIG_FUSE_FAMFS_DAX") in ("y", "m")
    return kallsyms is not None and b" famfs_" in kallsyms


def has_famfsv1(release: str, root: str = "/") -> bool:
    """The standalone famfs module: ``famfs.ko`` in the RFC v2 series of 2024 (fs/famfs/Makefile),
    ``famfsv1.ko`` in later out-of-tree builds; loaded or installed for this kernel."""
    r = Path(root)
    if (r / "sys/module/famfsv1").is_dir() or (r / "sys/module/famfs").is_dir():
        return True
    tree = r / f"lib/modules/{release}"
    try:
        text = (tree / "modules.dep").read_text()
    except OSError:
        return False
    names = (line.split(":", 1)[0].rsplit("/", 1)[-1] for line in text.splitlines())
    return any(n.startswith(("famfsv1.ko", "famfs.ko")) for n in names)


def has_fsdev(release: str, config: dict[str, str] | None, root: str = "/") -> bool:
    """The fsdev_dax driver (fs-dax on a devdax device, Linux >= 7.1): loaded, or built for this kernel.
    The standalone famfs kernel (6.12) has none, so no device can be put in fsdev mode there."""
    r = Path(root)
    if (r / "sys/bus/dax/drivers/fsdev_dax").is_dir():
        return True
    if config is not None and config.get("CONFIG_DEV_DAX_FSDEV") in ("y", "m"):
        return True
    try:
        text = (r / f"lib/modules/{release}/modules.dep").read_text()
    except OSError:
        return False
    names = (line.split(":", 1)[0].rsplit("/", 1)[-1] for line in text.splitlines())
    return any(n.startswith("fsdev_dax.ko") for n in names)


def gather(root: str = "/") -> dict:
    release = os.uname().release
    cfg = kernel_config(release, root)
    kallsyms = None
    if cfg is None:
        with contextlib.suppress(OSError):
            kallsyms = Path(root, "proc/kallsyms").read_bytes()
    return {
        "kernel": release,
        "fuse_famfs": has_fuse_famfs(cfg, kallsyms),
        "famfsv1": has_famfsv1(release, root),
        "fsdev": has_fsdev(release, cfg, root),
        "udev": Path(root, "run/udev/control").exists(),
        "daxctl": shutil.which("daxctl") is not None,
        "famfs_tools": shutil.which("famfs") is not None,
    }


if __name__ == "__main__":
    json.dump(gather(), sys.stdout)
    print()
