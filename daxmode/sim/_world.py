"""The simulated kernel: the rules applied to every write, over the on-disk tree and its state.

See the package docstring for the rules and their kernel sources.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import daxmode.sim._regions as _regions
from daxmode.sim._files import (
    BLOCK_STATE_RE,
    DAX_BUS,
    DEV_NAME_RE,
    DRIVER_ATTR_RE,
    MEMORY,
    NODE,
    ONLINE_ZONE,
    SIM_MARKER,
    err,
    put,
    symlink,
)
from daxmode.sysfs import Sysfs


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
                    raise err(errno.EBUSY, f"{name}: could not reserve range {s:#x}-{e:#x}")
        for s, e in ranges:
            self.state["reserved"].append({"name": name, "owner": drv, "start": s, "end": e, "leaked": False})
        self.dirty = True

    def release(self, name: str, drv: str, keep: Iterable[tuple[int, int]] = ()) -> None:
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
            raise err(errno.ENXIO, f"{name}: size 0")
        if drv == "kmem":
            if d["target_node"] < 0:
                raise err(errno.EINVAL, f"{name}: rejecting DAX region with invalid node: -1")
            ranges = self.aligned_ranges(name)
            if not ranges:
                raise err(errno.EINVAL, f"{name}: rejecting DAX region without any memory after alignment")
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
        symlink(devdir / "driver", drvdir)
        symlink(drvdir / name, devdir)

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
        online = policy in ONLINE_ZONE
        put(f"{d}/phys_index", f"{bid:08x}")
        put(f"{d}/state", "online" if online else "offline")
        put(f"{d}/valid_zones", ONLINE_ZONE[policy] if online else "Normal Movable")
        put(f"{d}/removable", "0" if bid in self.state["unremovable"] else "1")
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
            raise err(errno.ENOENT, f"memory{bid} does not exist") from None
        if value in ONLINE_ZONE:
            if cur.startswith("online"):
                raise err(errno.EINVAL, f"memory{bid} already online")  # device_online() == 1
            put(f"{d}/state", "online")
            put(f"{d}/valid_zones", ONLINE_ZONE[value])
        elif value == "offline":
            if cur == "offline":
                raise err(errno.EINVAL, f"memory{bid} already offline")
            if bid in self.state["refuse_offline"]:
                raise err(errno.EBUSY, f"memory{bid}: unmovable pages")
            put(f"{d}/state", "offline")
            put(f"{d}/valid_zones", "Normal Movable")
        else:
            raise err(errno.EINVAL, f"bad memory state {value!r}")

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
                    raise err(f["errno"], "injected fault")
        text = value.strip()
        m = DRIVER_ATTR_RE.match(rel)
        if m:
            drv, attr = m.groups()
            if not self.loaded(drv):
                raise err(errno.ENOENT, f"driver {drv} not loaded")
            getattr(self, f"_{attr}")(drv, text)
            return
        m = BLOCK_STATE_RE.match(rel)
        if m:
            self.set_block(int(m.group(1)), text)
            return
        if rel == f"{MEMORY}/auto_online_blocks":
            if text not in ("offline", *ONLINE_ZONE):
                raise err(errno.EINVAL, f"bad policy {text!r}")
            self.p(rel).write_text(text + "\n")
            return
        if _regions.write(self, rel, text):  # dynamic regions: create/seed/delete/size/align
            return
        path = self.p(rel)
        if not path.exists():
            raise err(errno.ENOENT, shown)
        raise err(errno.EACCES, f"{shown} is read-only in this model")

    def _valid_name(self, text: str) -> None:
        m = DEV_NAME_RE.match(text)
        if not m or text != f"dax{int(m.group(1))}.{int(m.group(2))}":
            raise err(errno.EINVAL, f"not a dax device name: {text!r}")

    def _bind(self, drv: str, name: str) -> None:
        if self.dev(name) is None or not self.matches(drv, name):
            raise err(errno.ENODEV, f"{drv} does not match {name}")
        if self.driver_of(name) is not None:
            raise err(errno.EBUSY, f"{name} already bound")
        self.probe(drv, name)

    def _unbind(self, drv: str, name: str) -> None:
        if self.dev(name) is None or self.driver_of(name) != drv:
            raise err(errno.ENODEV, f"{name} not bound to {drv}")
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
            raise err(errno.ENOENT, f"Module {module} not found")
        if self.loaded(module):
            return
        d = self.p(f"{DAX_BUS}/drivers/{module}")
        d.mkdir(parents=True)
        for attr in ("bind", "unbind", "new_id", "remove_id"):
            put(d / attr, "", 0o200)
        self.attach(module)


@contextmanager
def world(root: Path) -> Iterator[_World]:
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


def _delay(root: Path) -> float:
    try:
        return float((root / SIM_MARKER / "delay").read_text())
    except (OSError, ValueError):
        return 0.0


class SimKernel:
    """The kernel hook a test (or ``daxmode --sim``) attaches to a simulated root's Sysfs."""

    def write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        rel = rel.lstrip("/")
        root = Path(sysfs.root)
        delay = _delay(root)
        if delay:  # a slow kernel (Sim.slow_writes): other processes' writes interleave here
            time.sleep(delay)
        with world(root) as w:
            try:
                w.write(rel, value)
                rc = 0
            except OSError as e:
                rc = e.errno or errno.EIO
            if not BLOCK_STATE_RE.match(rel):  # block states cannot change seeds or free space
                _regions.sync(w)  # a bound seed stops being the seed (ops)
            with open(w.meta / "writes.log", "a") as log:
                log.write(f"/{rel}\t{value}\t{errno.errorcode.get(rc, rc) if rc else 'ok'}\n")
            if rc:
                raise OSError(rc, os.strerror(rc))

    def modprobe(self, sysfs: Sysfs, module: str) -> None:
        with world(Path(sysfs.root)) as w:
            w.modprobe(module)
            with open(w.meta / "writes.log", "a") as log:
                log.write(f"modprobe\t{module}\tok\n")
