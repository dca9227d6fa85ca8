"""Build the harness's tiny initramfs: static busybox, the 9p modules of the guest kernel, /init.

Why not virtme-ng: its x86 KVM path picks microvm (no PCIe host for pxb-cxl) and virtiofs forces
guest RAM onto a memfd with ``-numa``, which clashes with nvdimm ``slots/maxmem`` and the CXL
topology (qemu-cxl.md section 5).  This initramfs is ~1.5 MB and boots the host root over 9p.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from mhd.constants import GUEST_DIR
from mhd.host.errors import BadInput
from mhd.host.kernel import load_order, module_name, parse_modules_dep, read_builtin

INIT_SCRIPT = Path(GUEST_DIR) / "init.sh"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# The 9p root needs these; virtio_pci/virtio_console are built into Debian kernels, and are
# listed so custom kernels that build them as modules get them too.
BOOT_MODULES = ["virtio_pci", "virtio_console", "netfs", "9pnet", "9pnet_virtio", "9p", "overlay"]
# Loaded when the kernel has them as modules.  virtio_net before udevd starts, so no udev rule
# renames the private network's NICs while guestnet.py names them (a rename racing guestnet's
# "ip link set ... name" failed a run: Cannot find device "mhd1").
OPTIONAL_MODULES = ["virtio_net"]


class CpioWriter:
    """A minimal writer of the "newc" cpio format the kernel unpacks (initramfs-buffer-format.rst)."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = [
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            1,  # nlink
            0,  # mtime (reproducible)
            len(data),
            0,
            0,
            0,
            0,  # dev major/minor, rdev major/minor
            len(name) + 1,
            0,  # check
        ]
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out += header + name.encode() + b"\0"
        self._pad()
        self._out += data
        self._pad()

    def _pad(self) -> None:
        self._out += b"\0" * (-len(self._out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self._out)


def decompress_module(path: Path) -> bytes:
    """Plain ELF bytes of a .ko, .ko.xz, .ko.gz or .ko.zst (busybox insmod wants them plain)."""
    name = path.name
    if name.endswith(".ko"):
        return path.read_bytes()
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    raise BadInput(f"module {path}: unknown compression")


def find_busybox() -> Path:
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        if p.is_file():
            # A dynamically linked busybox would need its libraries in the initramfs.
            with open(p, "rb") as f:
                elf = f.read(4096)
            if b"/lib64/ld-linux" in elf or b"ld-linux-x86-64" in elf:
                continue
            return p
    raise BadInput("no static busybox found (install busybox-static; `make setup` does)")


def build_initramfs(module_tree: Path, dest_dir: Path) -> Path:
    """Write the initramfs for ``module_tree`` into ``dest_dir`` (cached by content) and return it."""
    deps = parse_modules_dep((module_tree / "modules.dep").read_text())
    have = {module_name(p) for p in deps}
    wanted = BOOT_MODULES + [m for m in OPTIONAL_MODULES if m in have]
    order = load_order(deps, wanted, read_builtin(module_tree))
    busybox = find_busybox()
    init = INIT_SCRIPT.read_bytes()
    key = hashlib.sha256()
    key.update(init)
    key.update(str(busybox.stat().st_mtime_ns).encode())
    for rel in order:
        st = (module_tree / rel).stat()
        key.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = dest_dir / f"initramfs-{key.hexdigest()[:16]}.cpio"
    if out.exists():
        return out
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "mhd", "mhd/modules", "newroot", "tmp"):
        cpio.directory(d)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", init, 0o755)
    names = []
    for rel in order:
        fname = os.path.basename(rel).split(".ko", 1)[0] + ".ko"
        cpio.file(f"mhd/modules/{fname}", decompress_module(module_tree / rel))
        names.append(fname)
    cpio.file("mhd/modules.order", ("\n".join(names) + "\n").encode())
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(cpio.finish())
    os.replace(tmp, out)
    return out


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None
