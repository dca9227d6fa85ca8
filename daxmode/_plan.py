"""The planner: which steps take a device from one mode to another, and the writes they make.

``TRANSITIONS`` says which steps take a device from one mode (or from unbound) to another.
:func:`plan` checks the preconditions and lays the steps out as concrete writes (what
``--dry-run`` prints), in a step context the executor then runs them in (:mod:`daxmode._executor`).
Touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daxmode._steps import STEP_OF, Ctx, Offline, Options, PlanState, Step
from daxmode.errors import BadMode, DeviceBusy, InvalidArgument, KernelRefused, LegacyDeviceModel
from daxmode.kernel import drivers, memory
from daxmode.kernel.devices import DRIVERS, DaxDevice, Mode
from daxmode.kernel.drivers import Action
from daxmode.kernel.memory import MemoryBlock, compress_blocks
from daxmode.kernel.mounts import mounts_using
from daxmode.sysfs import Sysfs

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
    ctx: Ctx
    """The step context the planner built (block size, block ids, options); the executor runs
    the steps in it, knowing the blocks the planner read (``ctx.known``)."""
    blocks: list[MemoryBlock] = field(default_factory=list)  # the device's blocks when planned

    def render(self) -> list[str]:
        head = f"{self.device}: {mode_name(self.start)} -> {self.target}"
        if not self.actions:
            return [head + ": nothing to do"]
        return [head] + ["  " + a.render() for a in self.actions]


def check_device(dev: DaxDevice) -> None:
    if dev.legacy:
        raise LegacyDeviceModel(
            f"{dev.name} uses the legacy /sys/class/dax device model, which cannot be reconfigured; "
            "move to the dax bus model with `daxctl migrate-device-model` and reboot"
        )
    if dev.driver is not None and dev.mode is None:
        raise DeviceBusy(f"{dev.name} is bound to driver {dev.driver}, which daxmode does not manage")


def _refuse_unmet_options(sysfs: Sysfs, name: str, online: list[int], opts: Options) -> None:
    """A system-ram device asked for system-ram again with an option its online memory does not
    meet: refused, never reported as done (online memory is not offlined or re-zoned in place:
    that is a transition out of system-ram and back, which --force makes explicit)."""
    if not online:
        return
    again = f"daxmode set {name} devdax --force, then system-ram"
    if not opts.online:
        raise InvalidArgument(
            f"{name} is already system-ram with {len(online)} memory block(s) online; --no-online does "
            f"not offline them ({again} --no-online)"
        )
    if not opts.movable and all(z == "Movable" for z in memory.read_zones(sysfs, online).values()):
        raise InvalidArgument(
            f"{name} is already system-ram, online in ZONE_MOVABLE; --no-movable does not re-zone "
            f"online memory ({again} --no-movable)"
        )


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
    if start is Mode.SYSTEM_RAM and target is Mode.SYSTEM_RAM:
        _refuse_unmet_options(sysfs, name, online, opts)
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
    blocks = mem.blocks if mem else []
    ctx.known = {b.id: b for b in blocks}
    return Plan(name, start, target, steps, actions, ctx, blocks)
