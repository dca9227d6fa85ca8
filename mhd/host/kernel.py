"""Identify a guest kernel image and find the module tree that belongs to it.

A module tree built for another kernel boots but then fails in confusing ways (modprobe finds
nothing, or insmod says "Invalid module format"), so the harness refuses it up front by
comparing the tree's directory name with the version string inside the bzImage.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from mhd.host.errors import BadInput

# x86 boot protocol (Documentation/arch/x86/boot.rst): the real-mode setup header holds the magic
# "HdrS" at 0x202 and, at 0x20E, a 16-bit pointer to the version string, relative to 0x200.
_HDRS_OFFSET = 0x202
_VERSION_PTR_OFFSET = 0x20E
_VERSION_BASE = 0x200


@dataclass(frozen=True)
class KernelImage:
    path: Path
    version: str
    """The release as ``uname -r`` prints it, e.g. ``7.3.4+deb13-amd64``."""
    banner: str
    """The full version string from the image header."""


def parse_bzimage_version(head: bytes) -> str:
    """Return the version banner stored in a bzImage's setup header, or raise ValueError."""
    if len(head) < _VERSION_PTR_OFFSET + 2 or head[_HDRS_OFFSET : _HDRS_OFFSET + 4] != b"HdrS":
        raise ValueError("not an x86 bzImage (no HdrS setup header)")
    (ptr,) = struct.unpack_from("<H", head, _VERSION_PTR_OFFSET)
    start = ptr + _VERSION_BASE
    if ptr == 0 or start >= len(head):
        raise ValueError("bzImage has no version string")
    end = head.find(b"\0", start)
    raw = head[start : end if end != -1 else min(len(head), start + 256)]
    banner = raw.decode("ascii", errors="replace").strip()
    if not banner:
        raise ValueError("bzImage has an empty version string")
    return banner


def read_kernel(path: Path) -> KernelImage:
    """Open ``path`` and identify it; every problem is one BadInput line."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except FileNotFoundError:
        raise BadInput(f"kernel {path}: no such file (run `make setup` for the default kernel)") from None
    except IsADirectoryError:
        raise BadInput(f"kernel {path}: is a directory, expected a bzImage") from None
    except PermissionError:
        raise BadInput(f"kernel {path}: not readable") from None
    try:
        banner = parse_bzimage_version(head)
    except ValueError as e:
        raise BadInput(f"kernel {path}: {e}") from None
    return KernelImage(path=path, version=banner.split()[0], banner=banner)


def find_module_tree(modules: Path, version: str) -> Path:
    """Return the ``lib/modules/<version>`` directory under ``modules``.

    ``modules`` may be that directory itself, a directory holding ``<version>/``, or an install
    root (``make modules_install INSTALL_MOD_PATH=DIR``) holding ``lib/modules/<version>`` or
    ``usr/lib/modules/<version>``.
    """
    if not modules.is_dir():
        raise BadInput(f"modules {modules}: no such directory")
    candidates = [
        modules,
        modules / version,
        modules / "lib" / "modules" / version,
        modules / "usr" / "lib" / "modules" / version,
    ]
    for c in candidates:
        if c.name == version and c.is_dir():
            if not (c / "modules.dep").is_file():
                raise BadInput(f"modules {c}: no modules.dep (run `depmod -b <root> {version}`)")
            return c
    found = sorted(
        {
            p.name
            for base in (modules, modules / "lib/modules", modules / "usr/lib/modules")
            for p in _subdirs(base)
        }
        | ({modules.name} if (modules / "modules.dep").is_file() else set())
    )
    hint = f" (found {', '.join(found)})" if found else ""
    raise BadInput(f"modules {modules}: no module tree for kernel {version}{hint}")


def _subdirs(base: Path) -> list[Path]:
    try:
        return [p for p in base.iterdir() if p.is_dir() and (p / "modules.dep").is_file()]
    except OSError:
        return []


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """Map each module's path (relative to the tree) to its dependencies' paths."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def module_name(relpath: str) -> str:
    """``kernel/fs/9p/9p.ko.xz`` -> ``9p`` (modules.dep names; '-' and '_' are the same to kmod)."""
    base = os.path.basename(relpath)
    return base.split(".ko", 1)[0].replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: list[str], builtin: set[str]) -> list[str]:
    """Module paths to insmod, dependencies first, for the modules named in ``wanted``.

    A wanted module that is built in needs nothing; one that is neither a module nor listed as
    built in is an error, unless the tree has no modules.builtin at all (Debian's packages leave
    it out), in which case it is taken as built in.
    """
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in chain:
            raise BadInput(f"modules.dep has a cycle through {module_name(path)}")
        for d in deps.get(path, []):
            visit(d, (*chain, path))
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key], ())
        elif builtin and key not in builtin:
            raise BadInput(f"kernel lacks {name} (neither a module nor built in); the guest needs it")
    return order


def read_builtin(tree: Path) -> set[str]:
    """Names listed in modules.builtin (empty when the file is absent)."""
    try:
        text = (tree / "modules.builtin").read_text()
    except OSError:
        return set()
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}
