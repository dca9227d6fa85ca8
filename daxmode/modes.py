"""Mode transitions: the table of steps as data, the planner, and the safe entry points.

``TRANSITIONS`` says which steps take a device from one mode (or from unbound) to another.
:func:`plan` checks the preconditions and lays the steps out as concrete writes (what
``--dry-run`` prints); :func:`set_mode` takes the device lock, repairs what an interrupted
run left (kernel.journal), and hands the plan to the executor (daxmode._executor), which
verifies every step, rolls back on any failure or signal, and says exactly which state a
device is left in when the rollback fails too.

Rules kept (daxctl.md section 6, and where daxmode goes further):

* never unbind kmem while one of the device's blocks is online (the kernel would
  "succeed" and leak the range until reboot);
* hold ``auto_online_blocks`` at ``offline`` while kmem probes, restore it always;
* ``new_id`` binds every unbound device the driver matches: those we did not target are
  unbound again, and our id entry is removed when the device leaves the driver;
* fsdev_dax binds only through its id list (fsdev patch V10), so always ``new_id``;
* a device something is mounted on (famfs, daxmode's FUSE server) keeps its mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from daxmode import signals
from daxmode._executor import execute, recover
from daxmode._steps import STEP_OF, Ctx, Offline, Options, PlanState, Progress, Step
from daxmode.errors import BadMode, DaxmodeError, DeviceBusy, KernelRefused, LegacyDeviceModel, NotRoot
from daxmode.kernel import drivers, memory
from daxmode.kernel.devices import DRIVERS, DaxDevice, Mode, get_device
from daxmode.kernel.drivers import Action
from daxmode.kernel.memory import MemoryBlock, compress_blocks
from daxmode.kernel.mounts import mounts_using
from daxmode.runstate import journal, locks
from daxmode.sysfs import Sysfs

__all__ = [
    "TRANSITIONS",
    "Action",
    "Mode",
    "Options",
    "Outcome",
    "Plan",
    "Progress",
    "plan",
    "set_mode",
    "temporary_mode",
]

DEVDAX, FSDEV, RAM = Mode.DEVDAX, Mode.FSDEV, Mode.SYSTEM_RAM
_OFF = ("offline", None)
_ON = ("online", None)


def _unbind(m: Mode) -> tuple[str, str]:
    return ("unbind", m.driver)


def _bind(m: Mode) -> tuple[str, str]:
    return ("bind", m.driver)


# A step spec is (kind, driver-or-None); "online" is dropped with --no-online.
TRANSITIONS: dict[tuple[Mode | None, Mode], tuple[tuple[str, str | None], ...]] = {
    (None, DEVDAX): (_bind(DEVDAX),),
    (None, FSDEV): (_bind(FSDEV),),
    (None, RAM): (_bind(RAM), _ON),
    (DEVDAX, DEVDAX): (),
    (DEVDAX, FSDEV): (_unbind(DEVDAX), _bind(FSDEV)),
    (DEVDAX, RAM): (_unbind(DEVDAX), _bind(RAM), _ON),
    (FSDEV, DEVDAX): (_unbind(FSDEV), _bind(DEVDAX)),
    (FSDEV, FSDEV): (),
    (FSDEV, RAM): (_unbind(FSDEV), _bind(RAM), _ON),
    (RAM, DEVDAX): (_OFF, _unbind(RAM), _bind(DEVDAX)),
    # two steps through devdax: fsdev_dax then starts from device_dax's state (daxctl refuses it)
    (RAM, FSDEV): (_OFF, _unbind(RAM), _bind(DEVDAX), _unbind(DEVDAX), _bind(FSDEV)),
    (RAM, RAM): (_ON,),  # a no-op unless some blocks are offline and onlining was asked for
}


def mode_name(m: Mode | None) -> str:
    return m.value if m else "unbound"


@dataclass
class Plan:
    device: str
    start: Mode | None
    target: Mode
    steps: list[Step]
    actions: list[Action]
    blocks: list[MemoryBlock] = field(default_factory=list)  # the device's blocks when planned

    def render(self) -> list[str]:
        head = f"{self.device}: {mode_name(self.start)} -> {self.target}"
        if not self.actions:
            return [head + ": nothing to do"]
        return [head] + ["  " + a.render() for a in self.actions]


@dataclass
class Outcome:
    device: str
    start: Mode | None
    target: Mode
    plan: Plan
    changed: bool
    dry_run: bool = False
    online_blocks: int = 0
    total_blocks: int = 0
    movable: bool | None = None
    warnings: list[str] = field(default_factory=list)
    side_effects_undone: list[str] = field(default_factory=list)
    recovered: str | None = None  # what an interrupted earlier run left, and how it was repaired

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.device}: dry run, {len(self.plan.actions)} action(s) planned"
        what = f"already {self.target}" if not self.changed else f"{mode_name(self.start)} -> {self.target}"
        if self.target is Mode.SYSTEM_RAM:
            zone = "" if self.movable is None else (", movable" if self.movable else ", not movable")
            what += f" ({self.online_blocks}/{self.total_blocks} memory blocks online{zone})"
        return f"{self.device}: {what}"

    def to_json(self) -> dict[str, object]:
        """What ``set --json`` prints: one object, keys in the style of ``list --json``."""
        out: dict[str, object] = {
            "chardev": self.device,
            "from": mode_name(self.start),
            "to": self.target.value,
            "changed": self.changed,
            "steps": [s.describe() for s in self.plan.steps],
        }
        if self.dry_run:
            out["dry_run"] = True
            out["plan"] = [a.to_json() for a in self.plan.actions]
        if self.target is Mode.SYSTEM_RAM and not self.dry_run:
            out["online_memblocks"] = self.online_blocks
            out["total_memblocks"] = self.total_blocks
            if self.movable is not None:
                out["movable"] = self.movable
        out["side_effects_undone"] = self.side_effects_undone
        out["warnings"] = self.warnings
        if self.recovered:
            out["recovered"] = self.recovered
        return out


def check_device(dev: DaxDevice) -> None:
    if dev.legacy:
        raise LegacyDeviceModel(
            f"{dev.name} uses the legacy /sys/class/dax device model, which cannot be reconfigured; "
            "move to the dax bus model with `daxctl migrate-device-model` and reboot"
        )
    if dev.driver is not None and dev.mode is None:
        raise DeviceBusy(f"{dev.name} is bound to driver {dev.driver}, which daxmode does not manage")


def plan(sysfs: Sysfs, dev: DaxDevice, target: Mode, opts: Options) -> Plan:
    """Check preconditions and lay out the steps and writes; touches nothing.

    Raises the error the user should see for a refused request (busy, mounted, memory
    online without --force, no usable memory for system-ram).
    """
    check_device(dev)
    start, name = dev.mode, dev.name
    if dev.size == 0:
        raise BadMode(f"{name} has size 0; no driver binds a device without memory")
    ctx = Ctx(sysfs, dev, opts)
    mem = memory.device_memory(sysfs, dev)
    online = [b.id for b in mem.online] if mem else []
    offline = [b.id for b in mem.offline] if mem else []
    if start is not Mode.SYSTEM_RAM and (online or offline):
        raise DeviceBusy(
            f"{name}: {compress_blocks(online + offline)} of its range are still present without kmem "
            "(a range leaked by an earlier kmem unbind with memory online); no driver can bind until reboot"
        )
    if start is not target:
        users = mounts_using(sysfs, name)
        if users:
            m = users[0]
            raise DeviceBusy(f"{name} is in use: mounted on {m.mount_point} ({m.fstype}); unmount it first")
    if start is Mode.SYSTEM_RAM and target is not Mode.SYSTEM_RAM and online and not opts.force:
        raise DeviceBusy(
            f"{name}: {len(online)} memory block(s) online ({compress_blocks(online)}); "
            "use --force to offline them"
        )
    if target is Mode.SYSTEM_RAM and start is not Mode.SYSTEM_RAM:
        if dev.target_node < 0:
            raise BadMode(f"{name} has no target_node (firmware gave none); kmem rejects it for system-ram")
        if dev.ranges is None:
            raise KernelRefused(f"cannot read the ranges of {name} (mappingN/resource are root-only)")
        if not ctx.ids:
            raise BadMode(
                f"{name} holds no whole {ctx.bsize >> 20} MiB memory block; kmem cannot use it as system-ram"
            )
    specs = TRANSITIONS[(start, target)]
    if start is Mode.SYSTEM_RAM and target is Mode.SYSTEM_RAM and not (opts.online and offline):
        specs = ()
    steps = [STEP_OF[k](d) for k, d in specs if not (k == "online" and not opts.online)]
    if start is Mode.SYSTEM_RAM and not online:
        steps = [s for s in steps if not isinstance(s, Offline)]
    st = PlanState(
        online=list(online),
        offline=list(offline),
        loaded={d for d in DRIVERS if drivers.loaded(sysfs, d)},
        policy=memory.read_policy(sysfs),
    )
    actions = [a for s in steps for a in s.actions(ctx, st)]
    return Plan(name, start, target, steps, actions, mem.blocks if mem else [])


def set_mode(sysfs: Sysfs, name: str, target: Mode, opts: Options | None = None) -> Outcome:
    """Put device ``name`` into ``target`` mode, safely; see the module docstring.

    Raises NotRoot, UnknownDevice, LegacyDeviceModel, BadMode, DeviceBusy or KernelRefused
    before changing anything; RolledBack, LeftPartial or Interrupted (exit 130) after.
    """
    opts = opts or Options()
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot("daxmode set needs root: it writes sysfs and reads root-only attributes")
    dev = get_device(sysfs, name)
    check_device(dev)
    if opts.dry_run:
        p = plan(sysfs, dev, target, opts)
        return Outcome(dev.name, p.start, target, p, changed=False, dry_run=True)
    with locks.device_lock(sysfs, dev.name, timeout=max(60.0, opts.timeout)):
        recovered = recover(sysfs, dev.name, opts)
        try:
            dev = get_device(sysfs, dev.name)  # re-read under the lock: someone may have changed it
            p = plan(sysfs, dev, target, opts)
            res = execute(sysfs, dev, p, opts)
        except DaxmodeError as e:
            if recovered:  # the repair happened; say so beside the refusal or failure
                e.warnings = [recovered, *getattr(e, "warnings", [])]  # type: ignore[attr-defined]
            raise
        journal.clear(sysfs, dev.name)  # the device is where a run asked for: nothing left to report
        out = _outcome(res.ctx, p, res.changed)
        if recovered:
            out.recovered = recovered
            out.warnings.insert(0, recovered)
        return out


def _outcome(ctx: Ctx, p: Plan, changed: bool) -> Outcome:
    out = Outcome(ctx.name, p.start, p.target, p, changed=changed, warnings=ctx.warnings)
    out.side_effects_undone = ctx.undone_side_effects
    if p.target is Mode.SYSTEM_RAM:
        blocks = ctx.current()
        if any(b.online and b.zones is None for b in blocks):
            zones = memory.read_zones(ctx.sysfs, [b.id for b in blocks])
            blocks = [MemoryBlock(b.id, b.state, zones[b.id]) for b in blocks]
        out.total_blocks = len(blocks)
        out.online_blocks = sum(b.online for b in blocks)
        if blocks and out.online_blocks == len(blocks):
            out.movable = all(b.zones == "Movable" for b in blocks)
    return out


@contextmanager
def temporary_mode(sysfs: Sysfs, name: str, target: Mode, opts: Options | None = None) -> Iterator[Outcome]:
    """Hold the device lock, switch to ``target``, and put the starting mode back afterwards,
    also when the body raises or SIGINT/SIGTERM/SIGHUP arrive (they raise Interrupted in the
    body, so the restore runs before the process exits).

    Memory this switch offlined (needs ``opts.force``) is onlined again in its zone; memory
    it onlined is offlined again when restoring.
    """
    opts = opts or Options()
    dev = get_device(sysfs, name)
    with locks.device_lock(sysfs, dev.name), signals.raising():
        dev = get_device(sysfs, dev.name)
        start = dev.mode
        mem = memory.device_memory(sysfs, dev)
        was_online = bool(mem and mem.online)
        movable = bool(mem and mem.online and all(b.zones == "Movable" for b in mem.online))
        out = set_mode(sysfs, dev.name, target, opts)
        try:
            yield out
        finally:
            with signals.shielded():
                _restore(sysfs, dev.name, start, was_online, movable, opts)


def _restore(
    sysfs: Sysfs, name: str, start: Mode | None, was_online: bool, movable: bool, opts: Options
) -> None:
    if start is None:
        cur = get_device(sysfs, name)
        if cur.driver is not None:
            ctx = Ctx(sysfs, cur, opts)
            step = STEP_OF["bind"](cur.driver)
            step.bound = True  # type: ignore[attr-defined]
            step.undo(ctx)
        return
    cur = get_device(sysfs, name)
    if cur.mode is not start or (start is Mode.SYSTEM_RAM and was_online):
        set_mode(
            sysfs,
            name,
            start,
            Options(force=True, online=was_online, movable=movable or not was_online, timeout=opts.timeout),
        )
