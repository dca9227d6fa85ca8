"""A simulated kernel for the dax bus and memory hotplug, kept entirely on disk.

The simulator plays the kernel's part for a directory tree that looks like ``/``
(``sys/bus/dax``, ``sys/devices/system/memory``, ``dev``, ``proc/self/mountinfo``).
Attribute files are plain files the tool reads directly; *writes* go through
:class:`SimKernel`, which applies the kernel's rules and rewrites the tree.  Nothing finds
the simulator by itself: tests attach it (``Sim.sysfs()``), and ``daxmode --sim`` attaches
it to ``--root`` for subprocess tests.
Hidden kernel state (driver id lists, reserved address ranges, injected faults,
blocks that refuse to offline) lives in ``.daxmode-sim/state.json``, so a
``daxmode --root DIR`` subprocess sees exactly the same world as the test that built it.

The rules modelled, with their kernel sources (Linux drivers/dax/bus.c, kmem.c,
device.c, drivers/base/bus.c + dd.c, drivers/base/memory.c):

* ``bind``: ENODEV if no such device or the driver does not match it (id list or
  type); EBUSY if it already has a driver; otherwise the probe's errno.
* ``unbind``: ENODEV unless the device is bound to this driver.
* ``new_id``/``remove_id``: only the exact string ``daxX.Y`` (EINVAL otherwise);
  ``new_id`` then runs ``driver_attach``: every unbound device the driver matches is
  probed, probe errors are swallowed.  ``remove_id`` never unbinds.
* type matching: ``device_dax`` matches devices of regions without
  IORESOURCE_DAX_KMEM, ``kmem`` matches those with it (CXL RAM regions), and
  ``fsdev_dax`` never matches by type (fsdev patch V10 leaves bus.c alone), so it
  binds only through its id list.
* probe: size 0 -> ENXIO.  device_dax/fsdev_dax reserve every range (EBUSY if any
  part is still reserved, e.g. leaked by kmem).  kmem rejects target_node < 0 and
  devices without one whole memory block (EINVAL), reserves the block-aligned
  ranges, hot-adds the blocks and applies ``auto_online_blocks`` during probe.
* kmem remove: a range with any block online cannot be removed; the unbind still
  succeeds, the blocks stay and the range stays reserved ("leaked") until reboot.
* memory block ``state``: online/online_kernel/online_movable/offline; writing the
  current state or anything else is EINVAL; blocks marked refusing return EBUSY on
  offline.  Blocks exist only while hot-added.
* loading a driver module creates its directory and binds unbound devices it
  matches by type.
* fault injection: the NTH write to a path fails with an errno before it has any
  effect, across processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import daxmode.sim._regions as _regions
from daxmode.sim._files import DAX_BUS, DEV_NAME_RE, DRIVERS, MEMORY, NODE, SIM_MARKER, GiB, MiB, put, symlink
from daxmode.sim._world import SimKernel, _World, world
from daxmode.sysfs import Sysfs

__all__ = ["SIM_MARKER", "GiB", "LogEntry", "MiB", "Sim", "SimKernel", "is_simulated", "standard"]


def is_simulated(root: str | os.PathLike[str]) -> bool:
    """True if ``root`` was built by :class:`Sim` (for the CLI's ``--sim`` check)."""
    return (Path(root) / SIM_MARKER / "state.json").is_file()


@dataclass(frozen=True)
class LogEntry:
    path: str
    value: str
    result: str  # "ok" or an errno name


class Sim:
    """Build and inspect a simulated tree under ``root`` (tests, benchmarks, demos)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.meta = self.root / SIM_MARKER

    # ----- creation --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        block_size: int = 128 * MiB,
        auto_online: str = "offline",
        loaded: tuple[str, ...] = DRIVERS,
        available: tuple[str, ...] = DRIVERS,
        boot_blocks: int = 8,
    ) -> Sim:
        """A machine with ``boot_blocks`` of online boot RAM on node 0, no dax regions yet,
        and the given driver modules loaded or loadable."""
        sim = cls(root)
        sim.root.mkdir(parents=True, exist_ok=True)
        sim.meta.mkdir()
        state = {
            "block_size": block_size,
            "regions": {},
            "devices": {},
            "ids": {d: [] for d in DRIVERS},
            "reserved": [],
            "refuse_offline": [],
            "unremovable": [],
            "faults": [],
            "counts": {},
            "available": list(available),
        }
        (sim.meta / "state.json").write_text(json.dumps(state))
        (sim.meta / "writes.log").write_text("")
        for rel in (f"{DAX_BUS}/devices", f"{DAX_BUS}/drivers", MEMORY, NODE, "dev", "proc/self"):
            sim.p(rel).mkdir(parents=True, exist_ok=True)
        put(sim.p(f"{MEMORY}/block_size_bytes"), f"{block_size:x}", 0o444)
        put(sim.p(f"{MEMORY}/auto_online_blocks"), auto_online)
        sim.set_mounts([("/dev/vda1", "/", "ext4", "rw")])
        with sim._w() as w:
            for b in range(boot_blocks):
                w.add_block(b, 0, "online")
        for drv in loaded:
            sim.modprobe(drv)
        return sim

    def p(self, rel: str) -> Path:
        return self.root / rel

    def sysfs(self) -> Sysfs:
        """A Sysfs on this tree with the simulated kernel attached (the explicit injection)."""
        return Sysfs(self.root, SimKernel())

    @contextmanager
    def _w(self) -> Iterator[_World]:
        with world(self.root) as w:
            yield w

    def modprobe(self, module: str) -> None:
        with self._w() as w:
            w.modprobe(module)

    def add_region(
        self,
        rid: int,
        start: int,
        size: int,
        *,
        dynamic: bool = False,
        kmem: bool = False,
        align: int = 2 * MiB,
    ) -> str:
        """A dax region: static (pmem namespace) or dynamic (hmem/CXL); ``kmem`` sets IORESOURCE_DAX_KMEM."""
        if dynamic:
            rel = f"sys/devices/platform/ACPI0017:00/root0/decoder0.0/region{rid}/dax_region{rid}"
        else:
            rel = f"sys/devices/platform/ACPI0012:00/ndbus0/region{rid}/dax{rid}.0"
        d = self.p(rel) / "dax_region"
        d.mkdir(parents=True)
        put(d / "id", str(rid), 0o444)
        put(d / "size", str(size), 0o444)
        put(d / "align", str(align), 0o400)
        if dynamic:
            put(d / "available_size", str(size), 0o444)
            _regions.region_files(d)  # create/seed/delete (ops)
        with self._w() as w:
            w.state["regions"][str(rid)] = {
                "path": rel,
                "start": start,
                "size": size,
                "dynamic": dynamic,
                "kmem": kmem,
                "align": align,
            }
            w.dirty = True
        return rel

    def add_device(
        self,
        name: str,
        ranges: list[tuple[int, int]],
        *,
        target_node: int = 0,
        driver: str | None = "device_dax",
        align: int = 2 * MiB,
    ) -> str:
        """A dax device with ``ranges`` of (start, size); bound to ``driver`` through its probe."""
        m = DEV_NAME_RE.match(name)
        assert m, name
        rid = m.group(1)
        with self._w() as w:
            reg = w.state["regions"][rid]
            devdir = self.p(reg["path"]) / name
            devdir.mkdir()
            total = sum(sz for _, sz in ranges)
            put(devdir / "size", str(total), 0o444 if not reg["dynamic"] else 0o644)
            put(devdir / "align", str(align), 0o444 if not reg["dynamic"] else 0o644)
            if target_node >= 0:
                put(devdir / "target_node", str(target_node), 0o444)
            put(devdir / "numa_node", str(max(target_node, 0)), 0o444)
            put(devdir / "modalias", "dax:t0*", 0o444)
            first = ranges[0][0] if ranges else reg["start"]
            put(devdir / "resource", f"{first:#x}", 0o400)
            triples = []
            off = 0
            for i, (s, sz) in enumerate(ranges):
                md = devdir / f"mapping{i}"
                md.mkdir()
                put(md / "start", f"{s:#x}", 0o400)
                put(md / "end", f"{s + sz - 1:#x}", 0o400)
                put(md / "page_offset", f"{off:#x}", 0o400)
                triples.append([s, s + sz - 1, off])
                off += sz // 4096
            symlink(devdir / "subsystem", self.p(DAX_BUS))
            symlink(self.p(f"{DAX_BUS}/devices/{name}"), devdir)
            put(self.p(f"dev/{name}"), "")
            w.state["devices"][name] = {
                "region": rid,
                "path": str(devdir.relative_to(self.root)),
                "ranges": triples,
                "target_node": target_node,
            }
            w.dirty = True
            if reg["dynamic"]:
                avail = self.p(reg["path"]) / "dax_region" / "available_size"
                put(avail, str(int(avail.read_text()) - total))
            if driver is not None:
                if w.matches(driver, name):
                    w._bind(driver, name)
                else:
                    w._new_id(driver, name)
                    w._remove_id(driver, name)
                if w.driver_of(name) != driver:
                    raise RuntimeError(f"sim: could not bind {name} to {driver}")
        return str(devdir.relative_to(self.root))

    def add_legacy_device(self, name: str, size: int) -> None:
        """A device in the old /sys/class/dax model (dax_pmem_compat): reported, never changed."""
        m = DEV_NAME_RE.match(name)
        if m is None:
            raise ValueError(f"sim: {name!r} is not a dax device name")
        rid = m.group(1)
        devdir = self.p(f"sys/devices/platform/e820/ndbus1/region{rid}/dax/{name}")
        devdir.mkdir(parents=True)
        put(devdir / "size", str(size), 0o444)
        cls_dir = self.p("sys/class/dax")
        cls_dir.mkdir(parents=True, exist_ok=True)
        symlink(cls_dir / name, devdir)
        put(self.p(f"dev/{name}"), "")

    # ----- behaviour knobs -------------------------------------------------------------
    def fail_write(self, path: str, err: int, nth: int = 1) -> None:
        """Make the ``nth`` write (counted from now) to ``path`` fail with ``err``, before any effect."""
        shown = "/" + path.lstrip("/")
        with self._w() as w:
            already = w.state["counts"].get(shown, 0)
            w.state["faults"].append({"path": shown, "errno": err, "nth": already + nth})
            w.dirty = True

    def clear_faults(self) -> None:
        with self._w() as w:
            w.state["faults"] = []
            w.dirty = True

    def slow_writes(self, seconds: float) -> None:
        """Every write waits ``seconds`` before the kernel applies it (0: off), so concurrent
        runs interleave their writes the way a busy kernel lets them."""
        (self.meta / "delay").write_text(f"{seconds}\n")

    def refuse_offline(self, *block_ids: int) -> None:
        """These blocks return EBUSY on offline (unmovable pages, as in ndctl issue #256)."""
        with self._w() as w:
            w.state["refuse_offline"] = sorted(set(w.state["refuse_offline"]) | set(block_ids))
            w.dirty = True

    def set_unremovable(self, *block_ids: int) -> None:
        """These blocks report removable=0 (older kernels) when hot-added."""
        with self._w() as w:
            w.state["unremovable"] = sorted(set(w.state["unremovable"]) | set(block_ids))
            w.dirty = True
            for b in block_ids:
                if w.block_exists(b):
                    (w.block_dir(b) / "removable").write_text("0\n")

    def set_mounts(self, mounts: list[tuple[str, str, str, str]]) -> None:
        """Rewrite proc/self/mountinfo from (source, target, fstype, super_options)."""
        lines = []
        for i, (src, tgt, fstype, sopts) in enumerate(mounts):
            lines.append(f"{20 + i} 1 0:{30 + i} / {tgt} rw,relatime shared:{i + 1} - {fstype} {src} {sopts}")
        self.p("proc/self/mountinfo").write_text("\n".join(lines) + "\n")

    def add_mount(self, source: str, target: str, fstype: str, super_options: str = "rw") -> None:
        with open(self.p("proc/self/mountinfo"), "a") as f:
            f.write(f"99 1 0:99 / {target} rw,relatime - {fstype} {source} {super_options}\n")

    # ----- inspection ------------------------------------------------------------------
    def driver(self, name: str) -> str | None:
        with self._w() as w:
            return w.driver_of(name)

    def ids(self, drv: str) -> list[str]:
        with self._w() as w:
            return list(w.state["ids"].get(drv, []))

    def leaked(self) -> list[dict[str, Any]]:
        with self._w() as w:
            return [r for r in w.state["reserved"] if r["leaked"]]

    def block_states(self, name: str) -> dict[int, str]:
        """State of every existing memory block inside ``name``'s block-aligned ranges."""
        with self._w() as w:
            bs = w.block_size()
            out = {}
            for s, e in w.aligned_ranges(name):
                for b in range(s // bs, (e + 1) // bs):
                    if w.block_exists(b):
                        out[b] = w.block_state(b)
            return out

    def zones(self, name: str) -> dict[int, str]:
        with self._w() as w:
            bs = w.block_size()
            return {
                b: (w.block_dir(b) / "valid_zones").read_text().strip()
                for s, e in w.aligned_ranges(name)
                for b in range(s // bs, (e + 1) // bs)
                if w.block_exists(b)
            }

    def auto_online(self) -> str:
        return self.p(f"{MEMORY}/auto_online_blocks").read_text().strip()

    def log(self) -> list[LogEntry]:
        text = (self.meta / "writes.log").read_text()
        return [LogEntry(*line.split("\t")) for line in text.splitlines() if line]

    def clear_log(self) -> None:
        (self.meta / "writes.log").write_text("")


def standard(
    root: str | os.PathLike[str],
    *,
    auto_online: str = "offline",
    blocks: int = 8,
    block_size: int = 128 * MiB,
    cxl: bool = True,
) -> Sim:
    """The usual test machine.

    * region 0: static pmem namespace; ``dax0.0`` in devdax with ``blocks`` whole memory
      blocks plus a 2 MiB sub-block head (so alignment matters), node 0.
    * region 1 (``cxl``): dynamic CXL RAM region (IORESOURCE_DAX_KMEM); ``dax1.0`` bound
      to kmem with its blocks offline, and an unbound sized ``dax1.1``.
    """
    sim = Sim.create(root, block_size=block_size, auto_online=auto_online)
    base0 = 64 * block_size
    size0 = blocks * block_size + 2 * MiB
    sim.add_region(0, base0 - 2 * MiB, size0)
    sim.add_device("dax0.0", [(base0 - 2 * MiB, size0)])
    if cxl:
        base1 = 1024 * block_size
        sim.add_region(1, base1, 8 * block_size, dynamic=True, kmem=True)
        pol = sim.auto_online()
        sim.p(f"{MEMORY}/auto_online_blocks").write_text("offline\n")
        sim.add_device(
            "dax1.0", [(base1, 2 * block_size), (base1 + 4 * block_size, 2 * block_size)], driver="kmem"
        )
        sim.add_device("dax1.1", [(base1 + 2 * block_size, block_size)], driver=None)
        sim.p(f"{MEMORY}/auto_online_blocks").write_text(pol + "\n")
    return sim


# --- builders for tests ---------------------------------------------------------------------------


def set_region_driver(sim: Sim, rid: int, bound: bool) -> None:
    """Model the window in which the region's driver (dax_cxl / dax_hmem) is not bound: ENXIO."""
    with sim._w() as w:
        w.state["regions"][str(rid)]["driver_bound"] = bound
        w.dirty = True


def add_namespace(sim: Sim, rid: int, namespace: str, uuid: str, dax_uuid: str) -> None:
    """libnvdimm topology for a static region: nd_dax ``namespace``/``uuid`` and ``regionN/namespaceX.Y``.

    Sim.add_region puts the dax region at ``ndbus0/region{rid}/dax{rid}.0`` (the nd_dax device).
    """
    with sim._w() as w:
        nd_dax = w.p(w.state["regions"][str(rid)]["path"])
    put(nd_dax / "namespace", namespace, 0o444)
    put(nd_dax / "uuid", dax_uuid, 0o644)
    ns = nd_dax.parent / namespace
    ns.mkdir(exist_ok=True)
    put(ns / "uuid", uuid, 0o644)
    put(ns / "mode", "dax", 0o444)
    bus = sim.p("sys/bus/nd/devices")
    bus.mkdir(parents=True, exist_ok=True)
    symlink(bus / namespace, ns)


def add_cxl_region(sim: Sim, rid: int, uuid: str | None = None) -> None:
    """``sys/bus/cxl/devices/regionN`` for a dynamic region from Sim.add_region (…/regionN/dax_regionN)."""
    with sim._w() as w:
        region = w.p(w.state["regions"][str(rid)]["path"]).parent
    put(region / "uuid", uuid or "", 0o444)
    put(region / "mode", "ram", 0o444)
    bus = sim.p("sys/bus/cxl/devices")
    bus.mkdir(parents=True, exist_ok=True)
    symlink(bus / region.name, region)
