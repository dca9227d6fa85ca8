"""Sub-devices of dynamic dax regions (hmem, CXL RAM): create, destroy, resize.

The writes are the kernel layer's (daxmode.kernel.regions); binding and unbinding go through
the mode manager, so memory online as system-ram is offlined safely, an fsdev device in use
is refused, and new_id's side effects are undone.  Unlike daxctl, a create that fails after
the device exists is undone (unbound, size 0, deleted, unless we reused a seed that was there
before: that one is left as found), and so is a destroy or resize; any exception or
SIGINT/SIGTERM/SIGHUP rolls back the same way (exit 130).  If an undo step fails too,
:class:`LeftPartial` says exactly which state the device is in.

Locks: the region's lock for the whole operation (two creates would otherwise claim the same
seed), then the device's lock; the mode manager takes the bus lock inside.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from daxmode import signals
from daxmode.errors import (
    DaxmodeError,
    DeviceBusy,
    InvalidArgument,
    LeftPartial,
    NotRoot,
    RolledBack,
    SysfsError,
)
from daxmode.kernel import drivers, regions
from daxmode.kernel.devices import Mode, get_device, parse_name, parse_region, read_device
from daxmode.kernel.drivers import Action
from daxmode.modes import Options, set_mode
from daxmode.runstate import locks
from daxmode.sizes import parse_size
from daxmode.sysfs import Sysfs


@dataclass
class SubdeviceResult:
    """What a create / destroy / resize did (or would do, with dry_run)."""

    action: str
    device: str
    region: int
    size: int | None = None
    align: int | None = None
    mode: str | None = None
    dry_run: bool = False
    steps: list[str] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"action": self.action, "chardev": self.device, "region": self.region}
        for k in ("size", "align", "mode", "note"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.dry_run:
            out["dry_run"] = True
            out["plan"] = self.steps
        return out


class _Writes:
    """The writes of one operation: recorded (for --dry-run and messages), checkpointed for signals."""

    def __init__(self, sysfs: Sysfs, dry_run: bool) -> None:
        self.sysfs = sysfs
        self.dry_run = dry_run
        self.done: list[str] = []

    def write(self, rel: str, value: str) -> None:
        signals.checkpoint()
        self.done.append(f"{value} > {self.sysfs.shown(rel)}")
        if not self.dry_run:
            self.sysfs.write(rel, value)

    def plan(self, line: str) -> None:
        self.done.append(line)


def _line(a: Action) -> str:
    return f"{a.value} > /{a.path}"


def _require_root(sysfs: Sysfs, what: str) -> None:
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot(f"{what} needs root (it writes /sys/bus/dax attributes)")


def _as_not_root(sysfs: Sysfs, e: SysfsError) -> DaxmodeError:
    if e.errno in (errno.EACCES, errno.EPERM) and sysfs.is_real and os.geteuid() != 0:
        return NotRoot(f"{e.path} is writable by root only")
    return e


def _state_of(sysfs: Sysfs, name: str) -> str:
    try:
        dev = read_device(sysfs, name)
    except DaxmodeError:
        return f"{name} is gone"
    return f"{name} is {dev.mode_name}, size {dev.size:#x}"


@contextmanager
def _guarded() -> Iterator[None]:
    with signals.deferred():
        yield


def _fail(cause: BaseException, undo: Callable[[], str], what: str, name: str, sysfs: Sysfs) -> DaxmodeError:
    """Run ``undo`` shielded; the error to raise for ``cause`` (Interrupted keeps exit 130)."""
    why = (
        str(cause) if isinstance(cause, DaxmodeError) else f"internal error: {type(cause).__name__}: {cause}"
    )
    with signals.shielded():
        try:
            left = undo()
            ok = True
        except BaseException as e:
            left = f"undo failed too ({e}): {_state_of(sysfs, name)}"
            ok = False
    signals.clear()
    if isinstance(cause, signals.Interrupted | KeyboardInterrupt):
        sig = cause.signum if isinstance(cause, signals.Interrupted) else 2
        return signals.Interrupted(sig, f"{what} interrupted; {left}")
    if not ok:
        return LeftPartial(f"{what} failed ({why}); {left}")
    if isinstance(cause, SysfsError) and isinstance(_as_not_root(sysfs, cause), NotRoot):
        return _as_not_root(sysfs, cause)
    return RolledBack(f"{what} failed: {why}; {left}")


def _to_unbound(sysfs: Sysfs, w: _Writes, name: str) -> Mode | None:
    """Through the mode manager to devdax (offlining memory safely, refusing if mounted), then
    unbind device_dax, which cannot strand memory.  Returns the mode to restore."""
    dev = read_device(sysfs, name)
    start = dev.mode
    if dev.driver is None:
        return None
    if start is None:
        raise DeviceBusy(f"{name} is bound to {dev.driver}, which daxmode does not manage; unbind it first")
    if w.dry_run:
        if start is not Mode.DEVDAX:
            w.plan(f"daxmode set {name} devdax --force")
        for a in drivers.unbind_actions(name, "device_dax"):
            w.plan(_line(a))
        return start
    if start is not Mode.DEVDAX:
        set_mode(sysfs, name, Mode.DEVDAX, Options(force=True))
    drivers.unbind(sysfs, w.write, name, "device_dax")
    return start


# --- create ---------------------------------------------------------------------------------------


def create_device(
    sysfs: Sysfs,
    region: str | int,
    *,
    size: str | int | None = None,
    align: str | int | None = None,
    mode: Mode = Mode.DEVDAX,
    online: bool = True,
    dry_run: bool = False,
) -> SubdeviceResult:
    """A new device in a dynamic region, sized (default: all available space) and bound in ``mode``."""
    rid = parse_region(region)
    attrs = regions.dynamic_region(sysfs, rid)
    if not dry_run:
        _require_root(sysfs, "create-device")
    want_align = parse_size(align, what="align") if align is not None else None
    if want_align is not None and want_align not in regions.VALID_ALIGNS:
        raise InvalidArgument(f"align {want_align:#x} is not 4K, 2M or 1G")
    eff_align = want_align or regions.region_align(sysfs, attrs)
    w = _Writes(sysfs, dry_run)
    with locks.region_lock(sysfs, rid), _guarded():
        avail = regions.available(sysfs, attrs)
        want = parse_size(size) if size is not None else avail - avail % regions.granule(eff_align)
        if want <= 0:
            raise InvalidArgument(f"region{rid} has no space left (available_size {avail:#x})")
        regions.check_size(want, eff_align, f"region{rid}")
        if want > avail:
            raise InvalidArgument(f"region{rid}: {want:#x} bytes wanted, {avail:#x} available")
        seed = regions.seed(sysfs, attrs)
        reused = bool(seed) and _is_empty_unbound(sysfs, seed)
        if dry_run:
            name = seed if reused else "<seed>"
            if not reused:
                w.plan(_line(regions.create_action(attrs)))
            if want_align is not None:
                w.plan(_line(regions.align_action(name, want_align)))
            w.plan(_line(regions.size_action(name, want)))
            w.plan(f"daxmode set {name} {mode.value}")
            return SubdeviceResult("create", name, rid, want, eff_align, mode.value, True, w.done)
        if reused:
            name = seed
        else:
            try:
                name = regions.create(sysfs, w.write, attrs)
            except SysfsError as e:
                raise _as_not_root(sysfs, e) from None
        with locks.device_lock(sysfs, name):
            try:
                if want_align is not None:
                    regions.set_align(w.write, name, want_align)
                regions.set_size(sysfs, w.write, name, want)
                set_mode(sysfs, name, mode, Options(online=online))
            except BaseException as e:
                raise _fail(
                    e, lambda: _undo_create(sysfs, attrs, name, reused), "create-device", name, sysfs
                ) from None
    dev = read_device(sysfs, name)
    return SubdeviceResult("create", name, rid, dev.size, dev.align, dev.mode_name, steps=w.done)


def _is_empty_unbound(sysfs: Sysfs, name: str) -> bool:
    try:
        dev = read_device(sysfs, name)
    except DaxmodeError:
        return False
    return dev.size == 0 and dev.driver is None


def _undo_create(sysfs: Sysfs, attrs: str, name: str, reused: bool) -> str:
    undo = _Writes(sysfs, False)
    if read_device(sysfs, name).driver is not None:
        _to_unbound(sysfs, undo, name)
    if regions.device_size(sysfs, name):
        regions.set_size(sysfs, undo.write, name, 0)
    if reused:
        return f"{name} left as found (an empty seed)"
    regions.delete(undo.write, attrs, name)
    return f"{name} deleted"


# --- destroy --------------------------------------------------------------------------------------


def destroy_device(
    sysfs: Sysfs, device: str, *, force: bool = False, dry_run: bool = False
) -> SubdeviceResult:
    """Unbind (with --force, through the mode manager), size 0, delete; device 0 is kept at size 0."""
    dev = get_device(sysfs, device)
    name = dev.name
    rid, dev_id = parse_name(name)
    attrs = regions.dynamic_region(sysfs, rid)
    if dev.driver is not None and not force:
        raise DeviceBusy(f"{name} is active ({dev.mode_name}); use --force to unbind and destroy it")
    if not dry_run:
        _require_root(sysfs, "destroy-device")
    w = _Writes(sysfs, dry_run)
    with locks.region_lock(sysfs, rid), locks.device_lock(sysfs, name), _guarded():
        start = _to_unbound(sysfs, w, name)
        try:
            if dev.size or dry_run:
                w.write(regions.size_action(name, 0).path, "0")
        except BaseException as e:
            if dry_run:
                raise
            raise _fail(e, lambda: _rebind(sysfs, name, start), "destroy-device", name, sysfs) from None
        note = None
        try:
            regions.delete(w.write, attrs, name)
        except SysfsError as e:
            if e.errno == errno.EBUSY and dev_id == 0:
                note = f"{name} kept with size 0: device 0 of a region is never deleted"
            else:
                raise LeftPartial(f"destroy-device: delete failed ({e}); {_state_of(sysfs, name)}") from None
    return SubdeviceResult("destroy", name, rid, 0, None, None, dry_run, w.done, note)


def _rebind(sysfs: Sysfs, name: str, start: Mode | None) -> str:
    if start is None:
        return "nothing was changed"
    set_mode(sysfs, name, start)
    return f"{name} is back in {start.value}"


# --- resize ---------------------------------------------------------------------------------------


def resize_device(
    sysfs: Sysfs, device: str, size: str | int, *, force: bool = False, dry_run: bool = False
) -> SubdeviceResult:
    """New size for an unbound device; with --force a bound one is unbound, resized and bound again."""
    dev = get_device(sysfs, device)
    name = dev.name
    rid, _ = parse_name(name)
    attrs = regions.dynamic_region(sysfs, rid)
    want = parse_size(size)
    regions.check_size(want, dev.align or regions.SUBSECTION, name)
    if dev.driver is not None and not force:
        raise DeviceBusy(
            f"{name} is bound ({dev.mode_name}); resize needs it unbound (--force unbinds and rebinds)"
        )
    if want == 0 and dev.driver is not None:
        raise InvalidArgument(f"{name}: size 0 cannot be bound again; use destroy-device")
    if not dry_run:
        _require_root(sysfs, "resize")
    w = _Writes(sysfs, dry_run)
    with locks.region_lock(sysfs, rid), locks.device_lock(sysfs, name), _guarded():
        avail = regions.available(sysfs, attrs)
        if want > dev.size and want - dev.size > avail:
            raise InvalidArgument(
                f"{name}: growing by {want - dev.size:#x} needs more than region{rid}'s {avail:#x} available"
            )
        old = dev.size
        start = _to_unbound(sysfs, w, name) if dev.driver is not None else None
        if dry_run:
            w.plan(_line(regions.size_action(name, want)))
            if start is not None:
                w.plan(f"daxmode set {name} {start.value}")
            return SubdeviceResult("resize", name, rid, want, dev.align, dev.mode_name, True, w.done)
        try:
            if want != old:
                regions.set_size(sysfs, w.write, name, want)
            if start is not None:
                set_mode(sysfs, name, start)
        except BaseException as e:
            raise _fail(e, lambda: _undo_resize(sysfs, name, old, start), "resize", name, sysfs) from None
    after = read_device(sysfs, name)
    return SubdeviceResult("resize", name, rid, after.size, after.align, after.mode_name, steps=w.done)


def _undo_resize(sysfs: Sysfs, name: str, old: int, start: Mode | None) -> str:
    undo = _Writes(sysfs, False)
    if read_device(sysfs, name).driver is not None:
        _to_unbound(sysfs, undo, name)
    if regions.device_size(sysfs, name) != old:
        regions.set_size(sysfs, undo.write, name, old)
    if start is not None:
        set_mode(sysfs, name, start)
    back = f"size {old:#x}" + (f", {start.value}" if start else ", unbound")
    return f"{name} is back at {back}"
