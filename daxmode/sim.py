"""A simulated kernel for the dax bus and memory hotplug, kept entirely on disk.

The simulator plays the kernel's part for a directory tree that looks like ``/``
(``sys/bus/dax``, ``sys/devices/system/memory``, ``dev``, ``proc/self/mountinfo``).
Attribute files are plain files the tool reads directly; *writes* go through
:class:`SimKernel` (attached by :func:`daxmode.sysfs.open_root` when the root holds a
``.daxmode-sim`` directory), which applies the kernel's rules and rewrites the tree.
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

import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daxmode.sysfs import SIM_MARKER, Sysfs

MiB = 1 << 20
GiB = 1 << 30

DAX_BUS = "sys/bus/dax"
MEMORY = "sys/devices/system/memory"
NODE = "sys/devices/system/node"
DRIVERS = ("device_dax", "kmem", "fsdev_dax")
_ONLINE_ZONE = {"online": "Normal", "online_kernel": "Normal", "online_movable": "Movable"}
_BLOCK_STATE_RE = re.compile(r"^sys/devices/system/(?:memory|node/node\d+)/memory(\d+)/state$")
_DRIVER_ATTR_RE = re.compile(r"^sys/bus/dax/drivers/([^/]+)/(bind|unbind|new_id|remove_id)$")
_DEV_NAME_RE = re.compile(r"^dax(\d+)\.(\d+)$")


def _err(code: int, why: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({why})")


def _put(path: Path | str, text: str, mode: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    if mode is not None:
        os.chmod(path, mode)


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


class _World:
    """One locked view of the simulated kernel: the tree plus its hidden state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / SIM_MARKER
        self.state: dict[str, Any] = json.loads((self.meta / "state.json").read_text())
        self.dirty = False

    # ----- helpers over the tree -------------------------------------------------------
    def p(self, rel: str) -> Path:
        return self.root / rel

    def save(self) -> None:
        if self.dirty:
            tmp = self.meta / "state.json.tmp"
            tmp.write_text(json.dumps(self.state))
            tmp.replace(self.meta / "state.json")
            self.dirty = False

    def dev(self, name: str) -> dict[str, Any] | None:
        return self.state["devices"].get(name)

    def dev_dir(self, name: str) -> Path:
        return self.p(self.state["devices"][name]["path"])

    def driver_of(self, name: str) -> str | None:
        link = self.dev_dir(name) / "driver"
        try:
            return os.path.basename(os.readlink(link))
        except OSError:
            return None

    def region(self, name: str) -> dict[str, Any]:
        return self.state["regions"][self.state["devices"][name]["region"]]

    def loaded(self, drv: str) -> bool:
        return self.p(f"{DAX_BUS}/drivers/{drv}").is_dir()

    def block_size(self) -> int:
        return int(self.state["block_size"])

    def size_of(self, name: str) -> int:
        return sum(e - s + 1 for s, e, _ in self.state["devices"][name]["ranges"])

    def aligned_ranges(self, name: str) -> list[tuple[int, int]]:
        """Each range shrunk inward to whole memory blocks, as kmem does (empty ones dropped)."""
        bs = self.block_size()
        out = []
        for s, e, _ in self.state["devices"][name]["ranges"]:
            a = -(-s // bs) * bs
            b = ((e + 1) // bs) * bs
            if b > a:
                out.append((a, b - 1))
        return out

    # ----- matching and probing --------------------------------------------------------
    def matches(self, drv: str, name: str) -> bool:
        if name in self.state["ids"].get(drv, []):
            return True
        kmem_region = bool(self.region(name)["kmem"])
        if drv == "device_dax":
            return not kmem_region
        if drv == "kmem":
            return kmem_region
        return False  # fsdev_dax: id list only (V10)

    def reserve(self, name: str, drv: str, ranges: list[tuple[int, int]]) -> None:
        for s, e in ranges:
            for r in self.state["reserved"]:
                if r["start"] <= e and s <= r["end"]:
                    raise _err(errno.EBUSY, f"{name}: could not reserve range {s:#x}-{e:#x}")
        for s, e in ranges:
            self.state["reserved"].append({"name": name, "owner": drv, "start": s, "end": e, "leaked": False})
        self.dirty = True

    def release(self, name: str, drv: str, keep: list[tuple[int, int]] = ()) -> None:
        kept = set(keep)
        out = []
        for r in self.state["reserved"]:
            if r["name"] == name and r["owner"] == drv and not r["leaked"]:
                if (r["start"], r["end"]) in kept:
                    out.append(dict(r, leaked=True))
                continue
            out.append(r)
        self.state["reserved"] = out
        self.dirty = True

    def probe(self, drv: str, name: str) -> None:
        d = self.state["devices"][name]
        if self.size_of(name) == 0:
            raise _err(errno.ENXIO, f"{name}: size 0")
        if drv == "kmem":
            if d["target_node"] < 0:
                raise _err(errno.EINVAL, f"{name}: rejecting DAX region with invalid node: -1")
            ranges = self.aligned_ranges(name)
            if not ranges:
                raise _err(errno.EINVAL, f"{name}: rejecting DAX region without any memory after alignment")
            self.reserve(name, drv, ranges)
            policy = self.p(f"{MEMORY}/auto_online_blocks").read_text().strip()
            bs = self.block_size()
            for s, e in ranges:
                for bid in range(s // bs, (e + 1) // bs):
                    self.add_block(bid, d["target_node"], policy)
        else:
            self.reserve(name, drv, [(s, e) for s, e, _ in d["ranges"]])
        devdir = self.dev_dir(name)
        drvdir = self.p(f"{DAX_BUS}/drivers/{drv}")
        _symlink(devdir / "driver", drvdir)
        _symlink(drvdir / name, devdir)

    def remove(self, drv: str, name: str) -> None:
        devdir = self.dev_dir(name)
        (devdir / "driver").unlink()
        link = self.p(f"{DAX_BUS}/drivers/{drv}/{name}")
        if link.is_symlink():
            link.unlink()
        if drv != "kmem":
            self.release(name, drv)
            return
        bs = self.block_size()
        stuck = []
        for s, e in self.aligned_ranges(name):
            ids = range(s // bs, (e + 1) // bs)
            if any(self.block_state(b).startswith("online") for b in ids if self.block_exists(b)):
                stuck.append((s, e))  # remove_memory() refuses; kmem leaks the range
                continue
            for b in ids:
                self.del_block(b)
        self.release(name, drv, keep=stuck)

    def attach(self, drv: str) -> None:
        """driver_attach(): probe every unbound device this driver matches; errors are swallowed."""
        for name in sorted(self.state["devices"]):
            if self.driver_of(name) is None and self.matches(drv, name):
                with suppress(OSError):
                    self.probe(drv, name)

    # ----- memory blocks ---------------------------------------------------------------
    def block_dir(self, bid: int) -> Path:
        return self.p(f"{MEMORY}/memory{bid}")

    def block_exists(self, bid: int) -> bool:
        return self.block_dir(bid).is_dir()

    def block_state(self, bid: int) -> str:
        fd = os.open(f"{self.root}/{MEMORY}/memory{bid}/state", os.O_RDONLY)
        try:
            return os.read(fd, 64).decode().strip()
        finally:
            os.close(fd)

    def add_block(self, bid: int, node: int, policy: str) -> None:
        d = f"{self.root}/{MEMORY}/memory{bid}"
        os.mkdir(d)
        online = policy in _ONLINE_ZONE
        _put(f"{d}/phys_index", f"{bid:08x}")
        _put(f"{d}/state", "online" if online else "offline")
        _put(f"{d}/valid_zones", _ONLINE_ZONE[policy] if online else "Normal Movable")
        _put(f"{d}/removable", "0" if bid in self.state["unremovable"] else "1")
        nd = f"{self.root}/{NODE}/node{node}"
        if not os.path.isdir(nd):
            os.makedirs(nd)
        os.symlink(f"../../memory/memory{bid}", f"{nd}/memory{bid}")
        os.symlink(f"../node/node{node}", f"{d}/node{node}")

    def del_block(self, bid: int) -> None:
        d = self.block_dir(bid)
        for n in os.listdir(d):
            if n.startswith("node") and (d / n).is_symlink():
                link = self.p(f"{NODE}/{n}/memory{bid}")
                if link.is_symlink():
                    link.unlink()
        shutil.rmtree(d)

    def set_block(self, bid: int, value: str) -> None:
        d = f"{self.root}/{MEMORY}/memory{bid}"
        try:
            cur = self.block_state(bid)
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"memory{bid} does not exist") from None
        if value in _ONLINE_ZONE:
            if cur.startswith("online"):
                raise _err(errno.EINVAL, f"memory{bid} already online")  # device_online() == 1
            _put(f"{d}/state", "online")
            _put(f"{d}/valid_zones", _ONLINE_ZONE[value])
        elif value == "offline":
            if cur == "offline":
                raise _err(errno.EINVAL, f"memory{bid} already offline")
            if bid in self.state["refuse_offline"]:
                raise _err(errno.EBUSY, f"memory{bid}: unmovable pages")
            _put(f"{d}/state", "offline")
            _put(f"{d}/valid_zones", "Normal Movable")
        else:
            raise _err(errno.EINVAL, f"bad memory state {value!r}")

    # ----- the write dispatcher --------------------------------------------------------
    def write(self, rel: str, value: str) -> None:
        shown = "/" + rel
        counts = self.state["counts"]
        armed = [f for f in self.state["faults"] if f["path"] == shown]
        if armed:
            n = counts.get(shown, 0) + 1
            counts[shown] = n
            self.dirty = True
            for f in armed:
                if f["nth"] == n:
                    raise _err(f["errno"], "injected fault")
        text = value.strip()
        m = _DRIVER_ATTR_RE.match(rel)
        if m:
            drv, attr = m.groups()
            if not self.loaded(drv):
                raise _err(errno.ENOENT, f"driver {drv} not loaded")
            getattr(self, f"_{attr}")(drv, text)
            return
        m = _BLOCK_STATE_RE.match(rel)
        if m:
            self.set_block(int(m.group(1)), text)
            return
        if rel == f"{MEMORY}/auto_online_blocks":
            if text not in ("offline", *_ONLINE_ZONE):
                raise _err(errno.EINVAL, f"bad policy {text!r}")
            self.p(rel).write_text(text + "\n")
            return
        from daxmode import sim_regions  # dynamic regions: create/seed/delete/size/align (ops)

        if sim_regions.write(self, rel, text):
            return
        path = self.p(rel)
        if not path.exists():
            raise _err(errno.ENOENT, shown)
        raise _err(errno.EACCES, f"{shown} is read-only in this model")

    def _valid_name(self, text: str) -> None:
        m = _DEV_NAME_RE.match(text)
        if not m or text != f"dax{int(m.group(1))}.{int(m.group(2))}":
            raise _err(errno.EINVAL, f"not a dax device name: {text!r}")

    def _bind(self, drv: str, name: str) -> None:
        if self.dev(name) is None or not self.matches(drv, name):
            raise _err(errno.ENODEV, f"{drv} does not match {name}")
        if self.driver_of(name) is not None:
            raise _err(errno.EBUSY, f"{name} already bound")
        self.probe(drv, name)

    def _unbind(self, drv: str, name: str) -> None:
        if self.dev(name) is None or self.driver_of(name) != drv:
            raise _err(errno.ENODEV, f"{name} not bound to {drv}")
        self.remove(drv, name)

    def _new_id(self, drv: str, name: str) -> None:
        self._valid_name(name)
        ids = self.state["ids"].setdefault(drv, [])
        if name not in ids:
            ids.append(name)
            self.dirty = True
        self.attach(drv)

    def _remove_id(self, drv: str, name: str) -> None:
        self._valid_name(name)
        ids = self.state["ids"].setdefault(drv, [])
        if name in ids:
            ids.remove(name)
            self.dirty = True

    def modprobe(self, module: str) -> None:
        if module not in self.state["available"]:
            raise _err(errno.ENOENT, f"Module {module} not found")
        if self.loaded(module):
            return
        d = self.p(f"{DAX_BUS}/drivers/{module}")
        d.mkdir(parents=True)
        for attr in ("bind", "unbind", "new_id", "remove_id"):
            _put(d / attr, "", 0o200)
        self.attach(module)


@contextmanager
def _world(root: Path) -> Iterator[_World]:
    """The world under an exclusive lock: the kernel serialises these operations too."""
    fd = os.open(root / SIM_MARKER / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        w = _World(root)
        try:
            yield w
        finally:
            w.save()
    finally:
        os.close(fd)


class SimKernel:
    """The kernel hook :func:`daxmode.sysfs.open_root` attaches to a simulated root."""

    def write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        rel = rel.lstrip("/")
        root = Path(sysfs.root)
        with _world(root) as w:
            try:
                w.write(rel, value)
                rc = 0
            except OSError as e:
                rc = e.errno or errno.EIO
            if not _BLOCK_STATE_RE.match(rel):  # block states cannot change seeds or free space
                from daxmode import sim_regions

                sim_regions.sync(w)  # a bound seed stops being the seed (ops)
            with open(w.meta / "writes.log", "a") as log:
                log.write(f"/{rel}\t{value}\t{errno.errorcode.get(rc, rc) if rc else 'ok'}\n")
            if rc:
                raise OSError(rc, os.strerror(rc))

    def modprobe(self, sysfs: Sysfs, module: str) -> None:
        with _world(Path(sysfs.root)) as w:
            w.modprobe(module)
            with open(w.meta / "writes.log", "a") as log:
                log.write(f"modprobe\t{module}\tok\n")


# ======================================================================================
# Building simulated worlds
# ======================================================================================


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
        _put(sim.p(f"{MEMORY}/block_size_bytes"), f"{block_size:x}", 0o444)
        _put(sim.p(f"{MEMORY}/auto_online_blocks"), auto_online)
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
        from daxmode.sysfs import open_root

        return open_root(self.root)

    @contextmanager
    def _w(self) -> Iterator[_World]:
        with _world(self.root) as w:
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
        _put(d / "id", str(rid), 0o444)
        _put(d / "size", str(size), 0o444)
        _put(d / "align", str(align), 0o400)
        if dynamic:
            _put(d / "available_size", str(size), 0o444)
            from daxmode import sim_regions

            sim_regions.region_files(d)  # create/seed/delete (ops)
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
        m = _DEV_NAME_RE.match(name)
        assert m, name
        rid = m.group(1)
        with self._w() as w:
            reg = w.state["regions"][rid]
            devdir = self.p(reg["path"]) / name
            devdir.mkdir()
            total = sum(sz for _, sz in ranges)
            _put(devdir / "size", str(total), 0o444 if not reg["dynamic"] else 0o644)
            _put(devdir / "align", str(align), 0o444 if not reg["dynamic"] else 0o644)
            if target_node >= 0:
                _put(devdir / "target_node", str(target_node), 0o444)
            _put(devdir / "numa_node", str(max(target_node, 0)), 0o444)
            _put(devdir / "modalias", "dax:t0*", 0o444)
            first = ranges[0][0] if ranges else reg["start"]
            _put(devdir / "resource", f"{first:#x}", 0o400)
            triples = []
            off = 0
            for i, (s, sz) in enumerate(ranges):
                md = devdir / f"mapping{i}"
                md.mkdir()
                _put(md / "start", f"{s:#x}", 0o400)
                _put(md / "end", f"{s + sz - 1:#x}", 0o400)
                _put(md / "page_offset", f"{off:#x}", 0o400)
                triples.append([s, s + sz - 1, off])
                off += sz // 4096
            _symlink(devdir / "subsystem", self.p(DAX_BUS))
            _symlink(self.p(f"{DAX_BUS}/devices/{name}"), devdir)
            _put(self.p(f"dev/{name}"), "")
            w.state["devices"][name] = {
                "region": rid,
                "path": str(devdir.relative_to(self.root)),
                "ranges": triples,
                "target_node": target_node,
            }
            w.dirty = True
            if reg["dynamic"]:
                avail = self.p(reg["path"]) / "dax_region" / "available_size"
                _put(avail, str(int(avail.read_text()) - total))
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
        rid = _DEV_NAME_RE.match(name).group(1)  # type: ignore[union-attr]
        devdir = self.p(f"sys/devices/platform/e820/ndbus1/region{rid}/dax/{name}")
        devdir.mkdir(parents=True)
        _put(devdir / "size", str(size), 0o444)
        cls_dir = self.p("sys/class/dax")
        cls_dir.mkdir(parents=True, exist_ok=True)
        _symlink(cls_dir / name, devdir)
        _put(self.p(f"dev/{name}"), "")

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
