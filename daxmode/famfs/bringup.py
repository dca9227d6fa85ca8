"""``famfs up`` / ``down``: format if asked, then mount with daxmode's own server (famfs's tools are
not needed), or only prepare the device (fsdev mode) with ``--no-mount``.

``up`` leaves the device as it found it on any failure: formatting maps the device through
:func:`daxmode.fsdev.map_device` (an fsdev device is switched to devdax and back for it), and
:func:`daxmode.famfs.mount.command.mount` restores the mode itself when mounting fails.  ``down`` is
``daxmode famfs umount`` (which restores the mode); for a ``--no-mount`` preparation the mode it
replaced is remembered under /run/daxmode/bringup so ``down --restore-mode`` can return to it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field

from daxmode import runstate
from daxmode.errors import BadMode, DeviceBusy, FamfsError
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.famfs.media.volume import has_superblock, mkfs
from daxmode.famfs.mount import command as M
from daxmode.famfs.mount import records
from daxmode.fsdev import dax_info, map_device, mounted_at
from daxmode.kernel.devices import resolve_name
from daxmode.sysfs import Sysfs

_STORE = runstate.Records("bringup")
"""What ``up --no-mount`` replaced, one record per mount point (:mod:`daxmode.runstate`)."""


@dataclass
class UpResult:
    """What ``famfs up`` did (docs/json.md)."""

    device: str
    mountpoint: str
    previous_mode: str
    formatted: bool
    mounted: bool
    data_path: str | None = None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["chardev"] = d.pop("device")
        return d


def up(
    sysfs: Sysfs,
    device: str,
    mountpoint: str,
    *,
    format: bool = False,
    mount: bool = True,
    log_len: int = L.DEFAULT_LOG_LEN,
    version: int = L.DEFAULT_VERSION,
    data_path: str = M.AUTO,
) -> UpResult:
    """Bring famfs up on ``device``: (format), then ``daxmode famfs mount``, or fsdev mode only."""
    from daxmode.modes import Mode, Options, set_mode

    name = resolve_name(sysfs, device)
    info = dax_info(sysfs, name)
    where = mounted_at(sysfs, name)
    if where:
        raise DeviceBusy(f"{name} is already mounted at {', '.join(where)}")
    if info.mode not in ("devdax", "fsdev"):
        raise BadMode(
            f"{name} is in {info.mode or 'no'} mode; switch it to devdax first (daxmode set {name} devdax)"
        )
    if mount:  # every check the mount makes, before formatting anything
        _make_mountpoint(mountpoint)
        M.precheck(sysfs, name, mountpoint, data_path)
    res = UpResult(name, os.path.abspath(mountpoint), info.mode, False, False)
    with map_device(sysfs, name, writable=format) as m:
        if not has_superblock(m.buf):
            if not format:
                raise FamfsError(f"{name} has no famfs superblock; use --format to create one")
            mk = mkfs(m, ensure_system_uuid(sysfs), log_len=log_len, version=version)
            res.formatted = True
            res.steps.append(f"formatted {name} (famfs v{mk.superblock.version}, uuid {mk.superblock.uuid})")
            res.steps += mk.warnings
        else:
            problems = L.superblock_problems(memoryview(m.buf)[: L.SB_SIZE], m.size)
            if problems:
                raise FamfsError(f"{name}: {problems[0]}")
    if mount:
        got = M.mount(sysfs, name, mountpoint, data_path=data_path)
        res.mounted = True
        res.data_path = got.data_path
        res.steps += got.steps
        return res
    # recorded first: a mode switch nobody can undo with `down --restore-mode` is never made
    rec = {"device": res.device, "mountpoint": res.mountpoint, "previous_mode": res.previous_mode}
    _STORE.save(sysfs, res.mountpoint, rec)
    if info.mode != "fsdev":
        try:
            set_mode(sysfs, name, Mode.FSDEV, Options())
        except BaseException:
            _STORE.remove(sysfs, res.mountpoint)
            raise
        res.steps.append(f"{name}: devdax -> fsdev")
    return res


def _make_mountpoint(path: str) -> None:
    """Create the mount point if it is missing; never through a symlink in its place (mkdir does
    not follow one: EEXIST, and the mount's checks then refuse the symlink)."""
    ap = os.path.abspath(path)
    os.makedirs(os.path.dirname(ap), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(ap, 0o755)


def down(sysfs: Sysfs, mountpoint: str, *, restore_mode: bool = False) -> list[str]:
    """Unmount a famfs mount (restoring its device's mode), or undo a ``--no-mount`` preparation."""
    from daxmode.modes import Mode, Options, set_mode

    mp = os.path.abspath(mountpoint)
    held = M.hold_for_umount(mp)  # a symlink (or a path through one) is refused, as by umount
    if held is not None:
        held.close()
    if records.load(sysfs, mp) is not None or M.mount_at(sysfs, mp) is not None:
        return M.umount(sysfs, mp).lines()
    state = _STORE.load(sysfs, mp)
    device, prev = (state or {}).get("device"), (state or {}).get("previous_mode")
    if not isinstance(device, str) or not isinstance(prev, str):
        raise FamfsError(f"{mp} is not a famfs mount and no `famfs up` record exists for it")
    steps = [f"{mp} was not mounted"]
    if restore_mode and dax_info(sysfs, device).mode != prev:
        set_mode(sysfs, device, Mode.parse(prev), Options())
        steps.append(f"{device}: returned to {prev} mode")
    _STORE.remove(sysfs, mp)
    return steps
