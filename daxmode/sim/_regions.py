"""Simulator extension: dynamic dax regions (create / seed / delete / size / align) and topology.

Hooked into the simulated kernel at three points: the write dispatcher, the post-write
sync, and ``Sim.add_region``.  The rules,
from Linux ``drivers/dax/bus.c`` (create_store, delete_store, size_store, dev_dax_resize,
dev_dax_shrink, align_store, dax_bus_probe, devm_create_dev_dax):

* ``dax_region/create``: ``kstrtoint``; anything but 1 -> EINVAL; no free space -> ENOSPC;
  else a new 0-size, unbound device with the lowest free id.  It becomes the region's
  *seed* if there is none, and always the *youngest* (what ``create`` reads back).
* ``seed`` reads the seed's name or an empty line; a successful probe of the seed clears it
  (dax_bus_probe), so does deleting it.
* ``dax_region/delete``: unknown name -> ENXIO; bound or size > 0 -> EBUSY; id 0 -> EBUSY
  (device 0 is kept so /sys/bus/dax stays populated); else the device is unregistered.
* device ``size``: ``kstrtoull(.., 0)`` (EINVAL), not a multiple of max(align, 2 MiB
  subsection) -> EINVAL, region driver unbound -> ENXIO, device bound -> EBUSY, growth
  beyond ``available_size`` -> ENOSPC.  Shrinking trims from the last range; growing takes
  free space first-fit from the region start, extending the device's last range in place
  when it borders the free space, else adding a range (a new ``mappingN``).
* device ``align``: ``kstrtoul`` failure -> ENXIO, not 4 KiB / 2 MiB / 1 GiB -> EINVAL,
  region driver unbound -> ENXIO, bound -> EBUSY, a range not a multiple -> EINVAL.
* static regions hide create/seed/delete and make size/align read-only (EACCES on write).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from daxmode.sim._files import DAX_BUS, MiB, err, put, symlink


class _World(Protocol):
    """What region rules need of the world (:class:`daxmode.sim._world._World`, which calls them)."""

    root: Path
    state: dict[str, Any]
    dirty: bool

    def p(self, rel: str) -> Path: ...

    def dev(self, name: str) -> dict[str, Any] | None: ...

    def dev_dir(self, name: str) -> Path: ...

    def driver_of(self, name: str) -> str | None: ...

    def size_of(self, name: str) -> int: ...


SUBSECTION = 2 * MiB  # memremap_compat_align() on x86 (mm/memremap.c)
VALID_ALIGNS = (4096, 2 * MiB, 1 << 30)  # PAGE_SIZE, PMD, PUD (dax_align_valid)
_REGION_ATTR = re.compile(r"^(.*)/dax_region/(create|delete)$")
_DEV_ATTR = re.compile(r"^sys/bus/dax/devices/(dax\d+\.\d+)/(size|align)$")


# --- hooks called from daxmode.sim ----------------------------------------------------------------


def region_files(dax_region_dir: os.PathLike[str] | str) -> None:
    """The attributes only dynamic regions show (called by Sim.add_region)."""
    from pathlib import Path

    d = Path(dax_region_dir)
    put(d / "create", "", 0o644)
    put(d / "seed", "", 0o444)
    put(d / "delete", "", 0o200)


def write(w: _World, rel: str, text: str) -> bool:
    """Handle a write this module models; False lets the core dispatcher go on."""
    m = _REGION_ATTR.match(rel)
    if m:
        rid = _region_at(w, m.group(1))
        if rid is None or not w.state["regions"][rid]["dynamic"]:
            return False  # hidden on static regions: the generic path answers
        (_create if m.group(2) == "create" else _delete)(w, rid, text)
        return True
    m = _DEV_ATTR.match(rel)
    if m:
        name, attr = m.groups()
        d = w.dev(name)
        if d is None or not w.state["regions"][d["region"]]["dynamic"]:
            return False  # static: 0444, the generic path answers EACCES
        (_resize if attr == "size" else _set_align)(w, name, text)
        return True
    return False


def sync(w: _World) -> None:
    """After any write: a seed that got bound stops being the seed (dax_bus_probe)."""
    for rid, reg in w.state["regions"].items():
        if not reg.get("dynamic"):
            continue
        seed = reg.get("seed")
        if seed and (w.dev(seed) is None or w.driver_of(seed) is not None):
            reg["seed"] = None
            w.dirty = True
        _refresh_region(w, rid)


# --- region attributes ----------------------------------------------------------------------------


def _region_at(w: _World, region_path: str) -> str | None:
    for rid, reg in w.state["regions"].items():
        if reg["path"] == region_path:
            return rid
    return None


def _region_dir(w: _World, rid: str) -> Path:
    return w.p(w.state["regions"][rid]["path"]) / "dax_region"


def _devices_of(w: _World, rid: str) -> list[str]:
    return [n for n, d in w.state["devices"].items() if d["region"] == rid]


def _allocated(w: _World, rid: str) -> list[tuple[int, int, str, int]]:
    """(start, end, device, range index) of every range in the region, by address."""
    out = []
    for n in _devices_of(w, rid):
        for i, (s, e, _) in enumerate(w.state["devices"][n]["ranges"]):
            out.append((s, e, n, i))
    return sorted(out)


def _avail(w: _World, rid: str) -> int:
    reg = w.state["regions"][rid]
    return reg["size"] - sum(e - s + 1 for s, e, _, _ in _allocated(w, rid))


def _region_bound(w: _World, rid: str) -> bool:
    return w.state["regions"][rid].get("driver_bound", True)


def _refresh_region(w: _World, rid: str) -> None:
    d = _region_dir(w, rid)
    reg = w.state["regions"][rid]
    put(d / "available_size", str(_avail(w, rid)), 0o444)
    if (d / "seed").exists():
        put(d / "seed", reg.get("seed") or "", 0o444)
        put(d / "create", reg.get("youngest") or "", 0o644)


def _create(w: _World, rid: str, text: str) -> None:
    try:
        val = int(text, 0)
    except ValueError:
        raise err(errno.EINVAL, f"create: {text!r} is not a number") from None
    if val != 1:
        raise err(errno.EINVAL, "create: only 1 is accepted")
    if _avail(w, rid) == 0:
        raise err(errno.ENOSPC, f"region{rid}: no space left")
    used = {int(n.split(".")[1]) for n in _devices_of(w, rid)}
    dev_id = next(i for i in range(len(used) + 1) if i not in used)  # ida_alloc: lowest free
    name = f"dax{rid}.{dev_id}"
    _new_device(w, rid, name)
    reg = w.state["regions"][rid]
    if not reg.get("seed"):
        reg["seed"] = name
    reg["youngest"] = name
    w.dirty = True
    _refresh_region(w, rid)


def _new_device(w: _World, rid: str, name: str) -> None:
    reg = w.state["regions"][rid]
    devdir = w.p(reg["path"]) / name
    devdir.mkdir()
    put(devdir / "size", "0", 0o644)
    put(devdir / "align", str(reg["align"]), 0o644)
    node = reg.get("target_node", 0)
    if node >= 0:
        put(devdir / "target_node", str(node), 0o444)
    put(devdir / "numa_node", str(max(node, 0)), 0o444)
    put(devdir / "modalias", "dax:t0*", 0o444)
    put(devdir / "resource", f"{reg['start']:#x}", 0o400)
    put(devdir / "mapping", "", 0o200)
    symlink(devdir / "subsystem", w.p(DAX_BUS))
    symlink(w.p(f"{DAX_BUS}/devices/{name}"), devdir)
    put(w.p(f"dev/{name}"), "")
    w.state["devices"][name] = {
        "region": rid,
        "path": str(devdir.relative_to(w.root)),
        "ranges": [],
        "target_node": node,
        "align": reg["align"],
    }
    w.dirty = True


def _delete(w: _World, rid: str, text: str) -> None:
    name = text.strip()  # device_find_child_by_name uses sysfs_streq
    d = w.dev(name)
    if d is None or d["region"] != rid:
        raise err(errno.ENXIO, f"region{rid}: no device {name!r}")
    if w.driver_of(name) is not None or w.size_of(name) > 0:
        raise err(errno.EBUSY, f"{name}: bound or sized")
    if int(name.split(".")[1]) == 0:
        raise err(errno.EBUSY, f"{name}: device 0 is never deleted")
    shutil.rmtree(w.dev_dir(name))
    os.unlink(w.p(f"{DAX_BUS}/devices/{name}"))
    dev_node = w.p(f"dev/{name}")
    if dev_node.exists():
        dev_node.unlink()
    del w.state["devices"][name]
    reg = w.state["regions"][rid]
    for k in ("seed", "youngest"):
        if reg.get(k) == name:
            reg[k] = None
    w.dirty = True
    _refresh_region(w, rid)


# --- device size / align --------------------------------------------------------------------------


def _dev_align(w: _World, name: str) -> int:
    d = w.state["devices"][name]
    return int(d.get("align") or int((w.dev_dir(name) / "align").read_text()))


def _resize(w: _World, name: str, text: str) -> None:
    try:
        size = int(text, 0)
        if size < 0:
            raise ValueError
    except ValueError:
        raise err(errno.EINVAL, f"size: {text!r} is not a number") from None
    if size % max(_dev_align(w, name), SUBSECTION):
        raise err(errno.EINVAL, f"{name}: size {size:#x} misaligned")
    d = w.state["devices"][name]
    rid = d["region"]
    if not _region_bound(w, rid):
        raise err(errno.ENXIO, f"region{rid}: region driver not bound")
    if w.driver_of(name) is not None:
        raise err(errno.EBUSY, f"{name}: bound to a driver")
    cur = w.size_of(name)
    if size == cur:
        return
    if size > cur and size - cur > _avail(w, rid):
        raise err(errno.ENOSPC, f"{name}: not enough space in region{rid}")
    if size < cur:
        _shrink(d, cur - size)
    else:
        _grow(w, name, size - cur)
    _write_ranges(w, name)
    _refresh_region(w, rid)
    w.dirty = True


def _shrink(d: dict[str, Any], amount: int) -> None:
    ranges = d["ranges"]
    while amount and ranges:
        s, e, off = ranges[-1]
        length = e - s + 1
        if amount >= length:
            ranges.pop()
            amount -= length
        else:
            ranges[-1] = [s, e - amount, off]
            amount = 0


def _grow(w: _World, name: str, to_alloc: int) -> None:
    d = w.state["devices"][name]
    rid = d["region"]
    reg = w.state["regions"][rid]
    rstart, rend = reg["start"], reg["start"] + reg["size"] - 1
    while to_alloc:
        children = _allocated(w, rid)
        if not children:
            _add_range(d, rstart, to_alloc)
            return
        alloc = 0
        done = False
        for k, (s, e, owner, idx) in enumerate(children):
            nxt = children[k + 1] if k + 1 < len(children) else None
            if k == 0 and s > rstart:
                alloc = min(s - rstart, to_alloc)
                _add_range(d, rstart, alloc)
                done = True
                break
            alloc = 0
            if nxt and nxt[0] > e + 1:
                alloc = min(nxt[0] - (e + 1), to_alloc)
            if not alloc and nxt is None and e < rend:
                alloc = min(rend - e, to_alloc)
            if not alloc:
                continue
            if owner == name and idx == len(d["ranges"]) - 1:  # adjust_ok: our last range
                d["ranges"][idx][1] = e + alloc
            else:
                _add_range(d, e + 1, alloc)
            done = True
            break
        if not done:
            raise err(errno.ENOSPC, f"{name}: no free space found")
        to_alloc -= alloc


def _add_range(d: dict[str, Any], start: int, size: int) -> None:
    pgoff = sum((e - s + 1) // 4096 for s, e, _ in d["ranges"])
    d["ranges"].append([start, start + size - 1, pgoff])


def _write_ranges(w: _World, name: str) -> None:
    """size, resource and mappingN/ as the kernel shows them after a resize."""
    d = w.state["devices"][name]
    devdir = w.dev_dir(name)
    for old in devdir.glob("mapping[0-9]*"):
        shutil.rmtree(old)
    for i, (s, e, off) in enumerate(d["ranges"]):
        md = devdir / f"mapping{i}"
        md.mkdir()
        put(md / "start", f"{s:#x}", 0o400)
        put(md / "end", f"{e:#x}", 0o400)
        put(md / "page_offset", f"{off:#x}", 0o400)
    reg = w.state["regions"][d["region"]]
    first = d["ranges"][0][0] if d["ranges"] else reg["start"]
    put(devdir / "resource", f"{first:#x}", 0o400)
    put(devdir / "size", str(w.size_of(name)), 0o644)


def _set_align(w: _World, name: str, text: str) -> None:
    try:
        val = int(text, 0)
    except ValueError:
        raise err(errno.ENXIO, f"align: {text!r} is not a number") from None
    if val not in VALID_ALIGNS:
        raise err(errno.EINVAL, f"align {val:#x} is not 4K, 2M or 1G")
    d = w.state["devices"][name]
    if not _region_bound(w, d["region"]):
        raise err(errno.ENXIO, f"region{d['region']}: region driver not bound")
    if w.driver_of(name) is not None:
        raise err(errno.EBUSY, f"{name}: bound to a driver")
    for s, e, _ in d["ranges"]:
        if (e - s + 1) % max(val, SUBSECTION):
            raise err(errno.EINVAL, f"{name}: align {val:#x} invalid for range {s:#x}-{e:#x}")
    d["align"] = val
    put(w.dev_dir(name) / "align", str(val), 0o644)
    w.dirty = True
