"""Sub-devices of dynamic dax regions (hmem, CXL RAM): create, destroy, resize.

The kernel interface (bus.c; daxctl.md 1.3, 2.7): write ``1`` to ``dax_region/create``
for a 0-size unbound device (the region's *seed*), size it through the device's ``size``
(hex, like daxctl), bind a driver; to destroy, unbind, write size 0 and write the name to
``dax_region/delete``.  Sizes must be multiples of max(align, 2 MiB) and the device must
be unbound to change size or align.

Unlike daxctl, a create that fails after the device exists is undone (unbound, size 0,
deleted, unless we reused a seed that was there before: that one is left as found); a
destroy or forced resize of a bound device first goes through the mode manager, so memory
online as system-ram is offlined safely and an fsdev device in use is refused.  If an
undo step fails too, :class:`LeftPartial` says exactly which state the device is in.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field

from daxmode.config import parse_size
from daxmode.device import Mode, get_device
from daxmode.errors import (
    DaxmodeError,
    DeviceBusy,
    InvalidArgument,
    KernelRefused,
    LeftPartial,
    NotRoot,
    RolledBack,
    SysfsError,
)
from daxmode.lock import device_lock
from daxmode.sysfs import Sysfs
from daxmode.topology import DAX_DEVICES, parse_name, parse_region, region_attr_dir, region_devices

log = logging.getLogger("daxmode.subdevices")

MiB = 1 << 20
SUBSECTION = 2 * MiB  # memremap_compat_align() on x86: the minimum device granularity
VALID_ALIGNS = (4096, 2 * MiB, 1 << 30)


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


class _Steps:
    """Writes, recorded for --dry-run plans and for the messages after a failure."""

    def __init__(self, sysfs: Sysfs, dry_run: bool) -> None:
        self.sysfs = sysfs
        self.dry_run = dry_run
        self.done: list[str] = []

    def write(self, rel: str, value: str) -> None:
        self.done.append(f"{value} > {self.sysfs.shown(rel)}")
        if not self.dry_run:
            log.debug("write %s > %s", value, self.sysfs.shown(rel))
            self.sysfs.write(rel, value)


def _require_root(sysfs: Sysfs, what: str) -> None:
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot(f"{what} needs root (it writes /sys/bus/dax attributes)")


def _as_not_root(sysfs: Sysfs, e: SysfsError) -> DaxmodeError:
    if e.errno in (errno.EACCES, errno.EPERM) and sysfs.is_real and os.geteuid() != 0:
        return NotRoot(f"{e.path} is writable by root only")
    return e


def _dynamic_region(sysfs: Sysfs, region: int) -> str:
    attrs = region_attr_dir(sysfs, region)
    if not sysfs.exists(f"{attrs}/create"):
        raise InvalidArgument(
            f"region{region} is static (a pmem namespace): its device size is fixed; "
            "only hmem and CXL RAM regions have sub-devices"
        )
    return attrs


def _granule(align: int) -> int:
    return max(align, SUBSECTION)


def _check_size(size: int, align: int, what: str) -> None:
    g = _granule(align)
    if size % g:
        unit = f"{g >> 20} MiB" if g >= 1 << 20 else f"{g >> 10} KiB"
        raise InvalidArgument(f"{what}: size {size:#x} is not a multiple of {unit} (max(align, 2 MiB))")


def _read_int(sysfs: Sysfs, rel: str) -> int:
    return int(sysfs.read(rel).strip(), 0)


def _hex(n: int) -> str:
    return f"{n:#x}"  # daxctl_dev_set_size() writes "%#llx"


def _unbind(sysfs: Sysfs, steps: _Steps, name: str) -> None:
    """remove_id (so new_id's binding does not come back), then unbind; verify the link went."""
    devpath = sysfs.realpath(f"{DAX_DEVICES}/{name}")
    drv = sysfs.link_name(f"{devpath}/driver")
    if drv is None:
        return
    steps.write(f"sys/bus/dax/drivers/{drv}/remove_id", name)
    steps.write(f"sys/bus/dax/drivers/{drv}/unbind", name)
    if not steps.dry_run and sysfs.link_name(f"{devpath}/driver") is not None:
        raise KernelRefused(f"{name}: still bound to {drv} after unbind")


def _to_unbound(sysfs: Sysfs, steps: _Steps, name: str, what: str) -> Mode | None:
    """Bring a bound device to unbound through the mode manager's safety checks.

    system-ram -> devdax offlines memory (with rollback) and fsdev -> devdax refuses while
    mounted; then device_dax is unbound, which cannot strand memory.  Returns the mode the
    device was in, so a caller can restore it.
    """
    from daxmode.modes import Options, set_mode

    dev = get_device(sysfs, name)
    start = dev.mode
    if dev.driver is None:
        return None
    if start is None:
        raise DeviceBusy(f"{name} is bound to {dev.driver}, which daxmode does not manage; unbind it first")
    if steps.dry_run:
        if start is not Mode.DEVDAX:
            steps.done.append(f"daxmode set {name} devdax --force")
        steps.done.append(f"{name} > /sys/bus/dax/drivers/device_dax/remove_id")
        steps.done.append(f"{name} > /sys/bus/dax/drivers/device_dax/unbind")
        return start
    if start is not Mode.DEVDAX:
        log.info("%s: %s -> devdax before %s", name, start.value, what)
        set_mode(sysfs, name, Mode.DEVDAX, Options(force=True))
    try:
        _unbind(sysfs, steps, name)
    except DaxmodeError as e:
        try:
            _bind(sysfs, name, start)
        except DaxmodeError as e2:
            raise LeftPartial(
                f"{what}: unbinding failed ({e}); restoring {start.value} failed ({e2})"
            ) from None
        raise RolledBack(f"{what}: unbinding {name} failed ({e}); it is back in {start.value}") from None
    return start


def _bind(sysfs: Sysfs, name: str, mode: Mode, online: bool = True) -> None:
    from daxmode.modes import Options, set_mode

    set_mode(sysfs, name, mode, Options(online=online))


def _state_of(sysfs: Sysfs, name: str) -> str:
    try:
        dev = get_device(sysfs, name)
    except DaxmodeError:
        return f"{name} is gone"
    return f"{name} is {dev.mode_name}, size {dev.size:#x}"


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
    rid = region if isinstance(region, int) else parse_region(region)
    attrs = _dynamic_region(sysfs, rid)
    if not dry_run:
        _require_root(sysfs, "create-device")
    avail = _read_int(sysfs, f"{attrs}/available_size")
    want_align = parse_size(align) if align is not None else None
    if want_align is not None and want_align not in VALID_ALIGNS:
        raise InvalidArgument(f"align {want_align:#x} is not 4K, 2M or 1G")
    region_align = _region_align(sysfs, attrs)
    eff_align = want_align or region_align
    want = parse_size(size) if size is not None else avail - avail % _granule(eff_align)
    if want <= 0:
        raise InvalidArgument(f"region{rid} has no space left (available_size {avail:#x})")
    _check_size(want, eff_align, f"region{rid}")
    if want > avail:
        raise InvalidArgument(f"region{rid}: {want:#x} bytes wanted, {avail:#x} available")

    steps = _Steps(sysfs, dry_run)
    seed = (sysfs.read_or(f"{attrs}/seed") or "").strip()
    reused = bool(seed) and _is_empty_unbound(sysfs, seed)
    if dry_run:
        if not reused:
            steps.write(f"{attrs}/create", "1")
        name = seed if reused else "<seed>"
        _plan_size(steps, name, want, want_align)
        steps.done.append(f"daxmode set {name} {mode.value}")
        return SubdeviceResult("create", name, rid, want, eff_align, mode.value, True, steps.done)

    if not reused:
        try:
            steps.write(f"{attrs}/create", "1")
        except SysfsError as e:
            raise _as_not_root(sysfs, e) from None
        seed = (sysfs.read_or(f"{attrs}/seed") or "").strip()
        if not seed:
            raise KernelRefused(f"region{rid}: create succeeded but {sysfs.shown(attrs)}/seed is empty")
    name = seed
    with device_lock(sysfs, name):
        try:
            if want_align is not None:
                steps.write(f"{DAX_DEVICES}/{name}/align", _hex(want_align))
            steps.write(f"{DAX_DEVICES}/{name}/size", _hex(want))
            got = _read_int(sysfs, f"{DAX_DEVICES}/{name}/size")
            if got != want:
                raise KernelRefused(f"{name}: size reads {got:#x} after writing {want:#x}")
            _bind(sysfs, name, mode, online)
        except DaxmodeError as e:
            raise _undo_create(sysfs, attrs, name, reused, e) from None
    dev = get_device(sysfs, name)
    return SubdeviceResult("create", name, rid, dev.size, dev.align, dev.mode_name, steps=steps.done)


def _region_align(sysfs: Sysfs, attrs: str) -> int:
    """dax_region/align is 0400: non-root falls back to the 2 MiB default hmem/CXL use."""
    text = sysfs.read_or(f"{attrs}/align")
    try:
        return int(text.strip(), 0) if text else SUBSECTION
    except ValueError:
        return SUBSECTION


def _is_empty_unbound(sysfs: Sysfs, name: str) -> bool:
    try:
        dev = get_device(sysfs, name)
    except DaxmodeError:
        return False
    return dev.size == 0 and dev.driver is None


def _plan_size(steps: _Steps, name: str, size: int, align: int | None) -> None:
    if align is not None:
        steps.done.append(f"{_hex(align)} > /sys/bus/dax/devices/{name}/align")
    steps.done.append(f"{_hex(size)} > /sys/bus/dax/devices/{name}/size")


def _undo_create(sysfs: Sysfs, attrs: str, name: str, reused: bool, cause: DaxmodeError) -> DaxmodeError:
    """Unbind, size 0, delete (unless the seed predates us); the RolledBack or LeftPartial to raise."""
    undo = _Steps(sysfs, False)
    try:
        _unbind(sysfs, undo, name)
        if _read_int(sysfs, f"{DAX_DEVICES}/{name}/size"):
            undo.write(f"{DAX_DEVICES}/{name}/size", "0")
        if not reused:
            undo.write(f"{attrs}/delete", name)
    except DaxmodeError as e2:
        return LeftPartial(
            f"create-device failed ({cause}); undo failed too ({e2}): {_state_of(sysfs, name)}"
        )
    left = f"{name} left as found (an empty seed)" if reused else f"{name} deleted"
    return RolledBack(f"create-device failed: {cause}; {left}")


# --- destroy --------------------------------------------------------------------------------------


def destroy_device(
    sysfs: Sysfs, device: str, *, force: bool = False, dry_run: bool = False
) -> SubdeviceResult:
    """Unbind (with --force, through the mode manager), size 0, delete; device 0 is kept at size 0."""
    name = os.path.basename(device)
    rid, dev_id = parse_name(name)
    attrs = _dynamic_region(sysfs, rid)
    dev = get_device(sysfs, name)
    if dev.driver is not None and not force:
        raise DeviceBusy(f"{name} is active ({dev.mode_name}); use --force to unbind and destroy it")
    if not dry_run:
        _require_root(sysfs, "destroy-device")
    steps = _Steps(sysfs, dry_run)
    with device_lock(sysfs, name):
        start = _to_unbound(sysfs, steps, name, "destroy")
        try:
            if dev.size or dry_run:
                steps.write(f"{DAX_DEVICES}/{name}/size", "0")
        except DaxmodeError as e:
            if start is not None and not dry_run:
                try:
                    _bind(sysfs, name, start)
                except DaxmodeError as e2:
                    raise LeftPartial(
                        f"destroy-device: size 0 failed ({e}); rebinding {start.value} failed ({e2})"
                    ) from None
                raise RolledBack(
                    f"destroy-device: size 0 failed ({e}); {name} is back in {start.value}"
                ) from None
            if isinstance(e, SysfsError):
                raise _as_not_root(sysfs, e) from None
            raise
        try:
            steps.write(f"{attrs}/delete", name)
            note = None
        except SysfsError as e:
            if e.errno == errno.EBUSY and dev_id == 0:
                note = f"{name} kept with size 0: device 0 of a region is never deleted"
            else:
                raise LeftPartial(f"destroy-device: delete failed ({e}); {_state_of(sysfs, name)}") from None
    return SubdeviceResult("destroy", name, rid, 0, None, None, dry_run, steps.done, note)


# --- resize ---------------------------------------------------------------------------------------


def resize_device(
    sysfs: Sysfs, device: str, size: str | int, *, force: bool = False, dry_run: bool = False
) -> SubdeviceResult:
    """New size for an unbound device; with --force a bound one is unbound, resized and bound again."""
    name = os.path.basename(device)
    rid, _ = parse_name(name)
    attrs = _dynamic_region(sysfs, rid)
    dev = get_device(sysfs, name)
    want = parse_size(size)
    _check_size(want, dev.align or SUBSECTION, name)
    avail = _read_int(sysfs, f"{attrs}/available_size")
    if want > dev.size and want - dev.size > avail:
        raise InvalidArgument(
            f"{name}: growing by {want - dev.size:#x} needs more than region{rid}'s {avail:#x} available"
        )
    if dev.driver is not None and not force:
        raise DeviceBusy(
            f"{name} is bound ({dev.mode_name}); resize needs it unbound (--force unbinds and rebinds)"
        )
    if want == 0 and dev.driver is not None:
        raise InvalidArgument(f"{name}: size 0 cannot be bound again; use destroy-device")
    if not dry_run:
        _require_root(sysfs, "resize")
    steps = _Steps(sysfs, dry_run)
    old = dev.size
    with device_lock(sysfs, name):
        start = _to_unbound(sysfs, steps, name, "resize") if dev.driver is not None else None
        try:
            if want != old or dry_run:
                steps.write(f"{DAX_DEVICES}/{name}/size", _hex(want))
            if start is not None and not dry_run:
                _bind(sysfs, name, start)
            elif start is not None:
                steps.done.append(f"daxmode set {name} {start.value}")
        except DaxmodeError as e:
            if dry_run:
                raise
            _undo_resize(sysfs, name, old, start, e)
    if dry_run:
        return SubdeviceResult("resize", name, rid, want, dev.align, dev.mode_name, True, steps.done)
    after = get_device(sysfs, name)
    return SubdeviceResult("resize", name, rid, after.size, after.align, after.mode_name, steps=steps.done)


def _undo_resize(sysfs: Sysfs, name: str, old: int, start: Mode | None, cause: DaxmodeError) -> None:
    undo = _Steps(sysfs, False)
    try:
        _unbind(sysfs, undo, name)
        if _read_int(sysfs, f"{DAX_DEVICES}/{name}/size") != old:
            undo.write(f"{DAX_DEVICES}/{name}/size", _hex(old))
        if start is not None:
            _bind(sysfs, name, start)
    except DaxmodeError as e2:
        raise LeftPartial(
            f"resize failed ({cause}); undo failed too ({e2}): {_state_of(sysfs, name)}"
        ) from None
    back = f"size {old:#x}" + (f", {start.value}" if start else ", unbound")
    if isinstance(cause, SysfsError) and not start:
        raise _as_not_root(sysfs, cause) from None
    raise RolledBack(f"resize failed: {cause}; {name} is back at {back}") from None


def region_summary(sysfs: Sysfs, region: str | int) -> dict[str, object]:
    """Region facts for messages and --json (size, available, devices)."""
    rid = region if isinstance(region, int) else parse_region(region)
    attrs = region_attr_dir(sysfs, rid)
    return {
        "region": rid,
        "size": _read_int(sysfs, f"{attrs}/size"),
        "available_size": _read_int(sysfs, f"{attrs}/available_size")
        if sysfs.exists(f"{attrs}/available_size")
        else 0,
        "devices": region_devices(sysfs, rid),
    }
