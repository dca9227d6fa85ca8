"""Mode transitions: a table of steps, a planner, and an executor that rolls back.

``TRANSITIONS`` says, as data, which steps take a device from one mode (or from
unbound) to another.  :func:`plan` turns them into concrete sysfs writes for one
device (what ``--dry-run`` prints); :func:`set_mode` checks preconditions, takes
the device lock, runs the steps, verifies each one, and on failure undoes the
completed steps in reverse.  If the undo fails too, the error names exactly which
driver is bound and which memory blocks are online.

Rules kept (daxctl.md section 6, and where daxmode goes further):

* never unbind kmem while one of the device's blocks is online (the kernel would
  "succeed" and leak the range until reboot);
* hold ``auto_online_blocks`` at ``offline`` while kmem probes, restore it always;
* ``new_id`` binds every unbound device the driver matches: those we did not target
  are unbound again, and our id entry is removed when the device leaves the driver;
* fsdev_dax binds only through its id list (fsdev patch V10), so always ``new_id``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from daxmode import events
from daxmode.device import (
    DAX_BUS,
    DAX_DEVICES,
    MEMORY,
    DaxDevice,
    DeviceMemory,
    MemoryBlock,
    Mode,
    block_ids,
    block_rel,
    block_size,
    compress_blocks,
    device_memory,
    get_device,
    present_block_ids,
    present_blocks,
    read_blocks,
    read_zones,
    scan_blocks,
)
from daxmode.errors import (
    BadMode,
    DaxmodeError,
    DeviceBusy,
    KernelRefused,
    LeftPartial,
    LegacyDeviceModel,
    NotRoot,
    RolledBack,
    SysfsError,
)
from daxmode.lock import device_lock
from daxmode.mounts import mounts_using
from daxmode.sysfs import Sysfs

__all__ = [
    "TRANSITIONS",
    "Action",
    "Mode",
    "Options",
    "Outcome",
    "Plan",
    "plan",
    "set_mode",
    "temporary_mode",
]

AUTO_ONLINE = f"{MEMORY}/auto_online_blocks"


# --------------------------------------------------------------------------------------
# the transition table (data)
# --------------------------------------------------------------------------------------

# A step spec is (kind, driver-or-None).  "online" is dropped when --no-online.
DEVDAX, FSDEV, RAM = Mode.DEVDAX, Mode.FSDEV, Mode.SYSTEM_RAM
_OFF = ("offline", None)
_ON = ("online", None)


def _unbind(m: Mode) -> tuple[str, str]:
    return ("unbind", m.driver)


def _bind(m: Mode) -> tuple[str, str]:
    return ("bind", m.driver)


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
    # two steps through devdax, as issue 2 asks: fsdev_dax then starts from device_dax's state
    (RAM, FSDEV): (_OFF, _unbind(RAM), _bind(DEVDAX), _unbind(DEVDAX), _bind(FSDEV)),
    (RAM, RAM): (_ON,),  # a no-op unless some blocks are offline and onlining was asked for
}


# --------------------------------------------------------------------------------------
# options, actions, outcome
# --------------------------------------------------------------------------------------


@dataclass
class Options:
    force: bool = False  # offline online memory when leaving system-ram
    online: bool = True  # online the blocks when entering system-ram
    movable: bool = True  # online_movable (ZONE_MOVABLE) rather than online
    dry_run: bool = False
    timeout: float = 10.0  # for each wait on a driver link or device node
    log: Callable[[str], None] | None = None  # told about each action as it happens


@dataclass(frozen=True)
class Action:
    """One planned kernel interaction: a sysfs write, or loading a module."""

    kind: str  # "write" | "modprobe"
    path: str  # relative to the root ("" for modprobe)
    value: str
    note: str = ""

    def render(self) -> str:
        if self.kind == "modprobe":
            return f"modprobe {self.value}" + (f"  # {self.note}" if self.note else "")
        return f"write {self.value!r} > /{self.path}" + (f"  # {self.note}" if self.note else "")


@dataclass
class Plan:
    device: str
    start: Mode | None
    target: Mode
    steps: list[Step]
    actions: list[Action]
    blocks: list[MemoryBlock] = field(default_factory=list)  # the device's blocks when planned

    def render(self) -> list[str]:
        head = f"{self.device}: {_name(self.start)} -> {self.target}"
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
    writes: int = 0

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.device}: dry run, {len(self.plan.actions)} action(s) planned"
        what = f"already {self.target}" if not self.changed else f"{_name(self.start)} -> {self.target}"
        if self.target is Mode.SYSTEM_RAM:
            zone = "" if self.movable is None else (", movable" if self.movable else ", not movable")
            what += f" ({self.online_blocks}/{self.total_blocks} memory blocks online{zone})"
        return f"{self.device}: {what}"


def _name(m: Mode | None) -> str:
    return m.value if m else "unbound"


class StepFailed(DaxmodeError):
    """A step failed and has undone its own partial effect (or says it could not)."""

    exit_code = KernelRefused.exit_code


# --------------------------------------------------------------------------------------
# execution context and steps
# --------------------------------------------------------------------------------------


class Ctx:
    """What steps share: the device, options, and a record of everything done."""

    def __init__(self, sysfs: Sysfs, dev: DaxDevice, opts: Options) -> None:
        self.sysfs = sysfs
        self.dev = dev
        self.opts = opts
        self.warnings: list[str] = []
        self.writes = 0  # attempted
        self.changes = 0  # writes the kernel accepted
        self.bsize = block_size(sysfs)
        self.ids = block_ids(dev.ranges or [], self.bsize)
        # What we know of the device's present blocks, from one scan plus the kernel's answers
        # to our own writes (a state write succeeds only once the block changed state); None:
        # unknown, read again.  This keeps a 4096-block switch at ~1 read per block.
        self.known: dict[int, MemoryBlock] | None = None

    @property
    def name(self) -> str:
        return self.dev.name

    def say(self, msg: str) -> None:
        if self.opts.log:
            self.opts.log(msg)

    def write(self, rel: str, value: str) -> None:
        self.say(f"write {value!r} > /{rel}")
        self.writes += 1
        self.sysfs.write(rel, value)
        self.changes += 1

    def driver(self, name: str | None = None) -> str | None:
        if name is None or name == self.name:
            return self.sysfs.link_name(f"{self.dev.path}/driver")
        return self.sysfs.link_name(f"{DAX_DEVICES}/{name}/driver")

    def blocks(self) -> list[MemoryBlock]:
        """The device's present blocks with state and zone: one directory scan, ~one read each."""
        return scan_blocks(self.sysfs, self.present())

    def present(self) -> list[int]:
        """The device's blocks that exist now (a few existence checks per range)."""
        return present_blocks(self.sysfs, self.dev.ranges or [], self.bsize)

    def current(self) -> list[MemoryBlock]:
        """The device's present blocks as known, reading them only if unknown."""
        if self.known is None:
            self.known = {b.id: b for b in self.blocks()}
        return [self.known[i] for i in sorted(self.known)]

    def unbound_devices(self) -> set[str]:
        return {n for n in self.sysfs.listdir(DAX_DEVICES) if self.driver(n) is None}


def _online_value(zone: str | None, movable: bool) -> str:
    if zone == "Movable":
        return "online_movable"
    if zone == "Normal":
        return "online_kernel"
    return "online_movable" if movable else "online"


class Step(ABC):
    """One reversible step.  ``apply`` either completes or undoes its own partial work."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def actions(self, ctx: Ctx, sim: _PlanState) -> list[Action]: ...

    @abstractmethod
    def apply(self, ctx: Ctx) -> None: ...

    @abstractmethod
    def undo(self, ctx: Ctx) -> None: ...


@dataclass
class _PlanState:
    """What the planner assumes while laying steps out (dry-run needs no kernel)."""

    online: list[int]
    offline: list[int]
    loaded: set[str]
    policy: str | None


def _offline_blocks(
    ctx: Ctx, blocks: list[MemoryBlock], done: list[MemoryBlock], best_effort: bool = False
) -> None:
    """Offline ``blocks`` in order, appending each one offlined to ``done``.

    Stops at the first failure, or with ``best_effort`` (rollback) tries every block and
    then reports all that failed."""
    failed: list[str] = []
    for b in blocks:
        rel = block_rel(b.id, "state")
        try:
            ctx.write(rel, "offline")
        except SysfsError as e:
            now = ctx.sysfs.read_or(rel, "")
            if now and not now.startswith("online") and now != "going-offline":
                done.append(b)  # someone else got there first
                continue
            rm = ctx.sysfs.read_or(block_rel(b.id, "removable"))
            why = (
                " (removable=0: the kernel cannot offline it)" if rm is not None and rm.strip() == "0" else ""
            )
            failed.append(f"could not offline {b.name}: {e}{why}")
            if not best_effort:
                break
            continue
        done.append(b)
    if failed:
        raise StepFailed("; ".join(failed))


def _online_blocks(
    ctx: Ctx,
    blocks: list[MemoryBlock],
    value_of: Callable[[MemoryBlock], str],
    best_effort: bool = False,
) -> list[int]:
    """Online ``blocks``; return the ids this call onlined.  A failed write counts as success
    if the block is online afterwards (another agent raced us).  On failure, re-offline what
    this call onlined, then raise; with ``best_effort`` (rollback) try every block first and
    keep what came online."""
    mine: list[int] = []
    failed: list[str] = []
    for b in blocks:
        rel = block_rel(b.id, "state")
        try:
            ctx.write(rel, value_of(b))
            mine.append(b.id)
        except SysfsError as e:
            if (ctx.sysfs.read_or(rel, "") or "").startswith("online"):
                continue
            failed.append(f"could not online {b.name}: {e}")
            if not best_effort:
                break
    if not failed:
        return mine
    note = ""
    if mine and not best_effort:
        try:
            _offline_blocks(ctx, [MemoryBlock(i, "online") for i in reversed(mine)], [], best_effort=True)
            note = f"; offlined again {compress_blocks(mine)}"
        except StepFailed as e2:
            note = f"; and offlining them again failed: {e2}"
    raise StepFailed("; ".join(failed) + note)


class Offline(Step):
    """Offline the device's online blocks (--force); undo re-onlines them in their zones.

    ``removable`` is not read up front: kernels since 5.9 always report 1 there, so it is
    consulted only to explain a failed offline (which is then rolled back)."""

    def __init__(self) -> None:
        self.done: list[MemoryBlock] = []

    def describe(self) -> str:
        return "offline memory"

    def actions(self, ctx: Ctx, st: _PlanState) -> list[Action]:
        acts = [Action("write", block_rel(b, "state"), "offline") for b in st.online]
        st.offline += st.online
        st.online = []
        return acts

    def apply(self, ctx: Ctx) -> None:
        cur = ctx.current()
        online = [b for b in cur if b.online]
        missing = [b.id for b in online if b.zones is None]
        if missing:  # the zone of each, to re-online it there if we roll back
            zones = read_zones(ctx.sysfs, missing)
            online = [MemoryBlock(b.id, b.state, b.zones or zones[b.id]) for b in online]
        self.done = []
        try:
            _offline_blocks(ctx, online, self.done)
        except StepFailed as e:
            note = ""
            if self.done:
                try:
                    self._reonline(ctx)
                    note = f"; onlined again {compress_blocks(b.id for b in self.done)}"
                except StepFailed as e2:
                    note = f"; and re-onlining failed: {e2}"
            ctx.known = None
            raise StepFailed(f"{e}{note}") from None
        ctx.known = {b.id: MemoryBlock(b.id, "offline") for b in cur}

    def _reonline(self, ctx: Ctx) -> None:
        value_of = lambda b: _online_value(b.zones, ctx.opts.movable)  # noqa: E731
        _online_blocks(ctx, list(reversed(self.done)), value_of, best_effort=True)

    def undo(self, ctx: Ctx) -> None:
        ctx.known = None
        if self.done:
            self._reonline(ctx)


class Online(Step):
    """Online the device's offline blocks as online_movable (or online); verify zones."""

    def __init__(self) -> None:
        self.mine: list[int] = []

    @staticmethod
    def _value(ctx: Ctx) -> str:
        return "online_movable" if ctx.opts.movable else "online"

    def describe(self) -> str:
        return "online memory"

    def actions(self, ctx: Ctx, st: _PlanState) -> list[Action]:
        value = self._value(ctx)
        acts = [Action("write", block_rel(b, "state"), value) for b in st.offline]
        st.online += st.offline
        st.offline = []
        return acts

    def apply(self, ctx: Ctx) -> None:
        if ctx.known is None:
            # Just hot-added by our kmem bind with the policy held at offline: the blocks are
            # offline unless another agent (a udev rule) raced us, which makes our write fail
            # with EINVAL and the block then counts as already online.  No read needed.
            ids = ctx.present()
            todo = [MemoryBlock(i, "offline") for i in ids]
        else:
            cur = ctx.current()
            ids = [b.id for b in cur]
            todo = [b for b in cur if not b.online]
        if len(ids) < len(ctx.ids):
            ctx.warnings.append(f"{ctx.name}: only {len(ids)} of {len(ctx.ids)} memory blocks are present")
        value = self._value(ctx)
        self.mine = _online_blocks(ctx, todo, lambda b: value)
        mine = set(self.mine)
        # online_movable always lands in ZONE_MOVABLE (mm/memory_hotplug.c zone_for_pfn_range),
        # so read the zone only where the kernel chose it: plain "online", or blocks not ours.
        movable = ctx.opts.movable
        check = [i for i in ids if i not in mine] if movable else ids
        zones = read_zones(ctx.sysfs, check)
        want = "Movable" if movable else "Normal"
        wrong = [i for i in check if zones[i] != want]
        if wrong:
            who = "onlined by daxmode" if mine.issuperset(wrong) else "onlined before daxmode ran"
            ctx.warnings.append(f"{ctx.name}: {compress_blocks(wrong)} not in zone {want} ({who})")
        ctx.known = {i: MemoryBlock(i, "online", zones.get(i, want)) for i in ids}

    def undo(self, ctx: Ctx) -> None:
        ctx.known = None
        if self.mine:
            done: list[MemoryBlock] = []
            _offline_blocks(ctx, [MemoryBlock(i, "online") for i in reversed(self.mine)], done, True)
            self.mine = []


class Unbind(Step):
    """remove_id then unbind; refuses kmem while a block is online (the range would leak)."""

    def __init__(self, driver: str) -> None:
        self.driver = driver

    def describe(self) -> str:
        return f"unbind {self.driver}"

    def actions(self, ctx: Ctx, st: _PlanState) -> list[Action]:
        d = f"{DAX_BUS}/drivers/{self.driver}"
        acts = [Action("write", f"{d}/remove_id", ctx.name), Action("write", f"{d}/unbind", ctx.name)]
        if self.driver == "kmem":
            st.online, st.offline = [], []  # kmem remove takes the blocks away
        return acts

    def apply(self, ctx: Ctx) -> None:
        unbind(ctx, ctx.name, self.driver)

    def undo(self, ctx: Ctx) -> None:
        Bind(self.driver).apply(ctx)


def unbind(ctx: Ctx, name: str, driver: str) -> None:
    """Unbind ``name`` from ``driver`` and verify; for kmem only with all its blocks offline."""
    cur = ctx.driver(name)
    if cur != driver:
        raise StepFailed(f"{name} is bound to {cur or 'no driver'}, not {driver}")
    if driver == "kmem" and name == ctx.name:
        on = [b.id for b in ctx.current() if b.online]
        if on:
            raise StepFailed(f"refusing to unbind kmem from {name}: {compress_blocks(on)} online")
    d = f"{DAX_BUS}/drivers/{driver}"
    ctx.write(f"{d}/remove_id", name)
    try:
        ctx.write(f"{d}/unbind", name)
    except SysfsError as e:
        if ctx.driver(name) is not None:
            raise StepFailed(f"could not unbind {name} from {driver}: {e}") from None
    devpath = ctx.dev.path if name == ctx.name else f"{DAX_DEVICES}/{name}"
    events.wait_driver(ctx.sysfs, devpath, None, ctx.opts.timeout)
    if driver == "kmem" and name == ctx.name:
        left = ctx.present()
        ctx.known = None
        if left:
            raise StepFailed(f"kmem unbind left {compress_blocks(left)} present (range leaked)")
        ctx.known = {}


class Bind(Step):
    """Load the module if needed, new_id (+ bind), verify the link, undo new_id side effects."""

    def __init__(self, driver: str) -> None:
        self.driver = driver

    def describe(self) -> str:
        return f"bind {self.driver}"

    def actions(self, ctx: Ctx, st: _PlanState) -> list[Action]:
        d = f"{DAX_BUS}/drivers/{self.driver}"
        acts = []
        hold = self.driver == "kmem" and (st.policy or "").startswith("online")
        if hold:
            acts.append(Action("write", AUTO_ONLINE, "offline", f"hold: policy is {st.policy}"))
        if self.driver not in st.loaded:
            acts.append(Action("modprobe", "", self.driver, "driver directory missing"))
            st.loaded.add(self.driver)
        acts.append(Action("write", f"{d}/new_id", ctx.name))
        acts.append(Action("write", f"{d}/bind", ctx.name, "only if new_id did not bind it"))
        if hold:
            acts.append(Action("write", AUTO_ONLINE, st.policy or "", "restore"))
        if self.driver == "kmem":
            st.offline, st.online = list(ctx.ids), []
        return acts

    def apply(self, ctx: Ctx) -> None:
        sysfs, name, drv = ctx.sysfs, ctx.name, self.driver
        d = f"{DAX_BUS}/drivers/{drv}"
        policy = sysfs.read_or(AUTO_ONLINE) if drv == "kmem" else None
        hold = policy is not None and policy.startswith("online")
        if hold:
            ctx.write(AUTO_ONLINE, "offline")
        err: DaxmodeError | None = None
        try:
            before = ctx.unbound_devices()
            if not sysfs.is_dir(d):
                ctx.say(f"modprobe {drv}")
                sysfs.modprobe(drv)
            if ctx.driver() != drv:
                try:
                    ctx.write(f"{d}/new_id", name)
                except SysfsError as e:
                    ctx.say(f"new_id: {e} (trying bind)")
            if ctx.driver() != drv:
                try:
                    ctx.write(f"{d}/bind", name)
                except SysfsError as e:
                    if ctx.driver() != drv:
                        err = StepFailed(f"could not bind {name} to {drv}: {e}")
            if err is None and ctx.driver() != drv:
                try:
                    events.wait_driver(sysfs, ctx.dev.path, drv, ctx.opts.timeout)
                except KernelRefused as e:
                    err = StepFailed(f"could not bind {name} to {drv}: {e}")
            self._undo_side_effects(ctx, before)
        except DaxmodeError as e:
            err = err or e
        finally:
            if hold:
                try:
                    ctx.write(AUTO_ONLINE, policy or "online")
                except SysfsError as e:
                    err = err or StepFailed(f"could not restore auto_online_blocks to {policy}: {e}")
        if self.driver == "kmem":
            ctx.known = None  # hot-added blocks: presence by scan, states by the kernel's answers
        if err is not None:
            self._cleanup_failed(ctx)
            raise err
        if not sysfs.exists(f"dev/{name}"):
            events.wait_node(sysfs, name, True, ctx.opts.timeout)

    def _cleanup_failed(self, ctx: Ctx) -> None:
        """Leave no trace of a failed bind: drop our id entry, and unbind if it did bind."""
        d = f"{DAX_BUS}/drivers/{self.driver}"
        try:
            if ctx.driver() == self.driver:
                self.undo(ctx)
            elif ctx.sysfs.is_dir(d):
                ctx.write(f"{d}/remove_id", ctx.name)
        except DaxmodeError as e:
            ctx.warnings.append(f"cleanup after failed bind: {e}")

    def _undo_side_effects(self, ctx: Ctx, before: set[str]) -> None:
        for other in sorted(before - {ctx.name}):
            drv = ctx.driver(other)
            if drv is None:
                continue
            msg = f"{other} was bound to {drv} as a side effect of new_id"
            try:
                if drv == "kmem":
                    self._offline_other(ctx, other)
                unbind(ctx, other, drv)
                ctx.warnings.append(msg + "; unbound it again")
            except DaxmodeError as e:
                ctx.warnings.append(msg + f"; could not unbind it: {e}")

    def _offline_other(self, ctx: Ctx, other: str) -> None:
        dev = get_device(ctx.sysfs, other)
        mem = device_memory(ctx.sysfs, dev)
        if mem and mem.online:
            _offline_blocks(ctx, mem.online, [])

    def undo(self, ctx: Ctx) -> None:
        if self.driver == "kmem":
            ctx.known = None
            on = [b for b in ctx.current() if b.online]  # e.g. onlined by a udev rule
            if on:
                _offline_blocks(ctx, on, [])
        if ctx.driver() == self.driver:
            unbind(ctx, ctx.name, self.driver)


_STEP_OF: dict[str, Callable[[str | None], Step]] = {
    "offline": lambda _d: Offline(),
    "online": lambda _d: Online(),
    "unbind": lambda d: Unbind(d or ""),
    "bind": lambda d: Bind(d or ""),
}


# --------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------


def _check_device(sysfs: Sysfs, dev: DaxDevice) -> None:
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
    _check_device(sysfs, dev)
    start = dev.mode
    name = dev.name
    if dev.size == 0:
        raise BadMode(f"{name} has size 0; no driver binds a device without memory")
    ctx = Ctx(sysfs, dev, opts)
    mem = device_memory(sysfs, dev, zones=False)
    online = [b.id for b in mem.online] if mem else []
    offline = [b.id for b in mem.offline] if mem else []

    if start is not Mode.SYSTEM_RAM and (online or offline):
        raise DeviceBusy(
            f"{name}: {compress_blocks(online + offline)} of its range are still present without kmem "
            "(a range leaked by an earlier kmem unbind with memory online); no driver can bind until reboot"
        )
    if start is not target:  # any mount naming the device (famfs, daxmode's fuse.famfs) holds its mode
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
    steps = [_STEP_OF[k](d) for k, d in specs if not (k == "online" and not opts.online)]
    if start is Mode.SYSTEM_RAM and not online:
        steps = [s for s in steps if not isinstance(s, Offline)]
    st = _PlanState(
        online=list(online),
        offline=list(offline),
        loaded={
            drv for drv in ("device_dax", "kmem", "fsdev_dax") if sysfs.is_dir(f"{DAX_BUS}/drivers/{drv}")
        },
        policy=sysfs.read_or(AUTO_ONLINE),
    )
    actions = [a for s in steps for a in s.actions(ctx, st)]
    return Plan(name, start, target, steps, actions, mem.blocks if mem else [])


# --------------------------------------------------------------------------------------
# executing
# --------------------------------------------------------------------------------------


def residual(sysfs: Sysfs, dev: DaxDevice, policy: str | None) -> str:
    """Exactly what state the device is in: driver, and each block's state, compressed."""
    drv = sysfs.link_name(f"{dev.path}/driver")
    parts = [f"driver {drv} bound" if drv else "no driver bound (disabled)"]
    if dev.ranges is not None:
        bsize = block_size(sysfs)
        ids = block_ids(dev.ranges, bsize)
        present = present_block_ids(sysfs)
        blocks = read_blocks(sysfs, [b for b in ids if b in present])
        on = [b.id for b in blocks if b.online]
        off = [b.id for b in blocks if not b.online]
        if blocks:
            parts.append(f"memory blocks online: {compress_blocks(on)}; offline: {compress_blocks(off)}")
        else:
            parts.append("no memory blocks present")
    now = sysfs.read_or(AUTO_ONLINE)
    if policy is not None and now != policy:
        parts.append(f"auto_online_blocks is {now!r} (was {policy!r})")
    return ", ".join(parts)


def _in_mode(
    sysfs: Sysfs, dev: DaxDevice, mode: Mode | None, online: set[int] | None, policy: str | None
) -> bool:
    """Verify ``mode`` from sysfs: the driver link, the blocks, and the policy."""
    if sysfs.link_name(f"{dev.path}/driver") != (mode.driver if mode else None):
        return False
    if policy is not None and sysfs.read_or(AUTO_ONLINE) != policy:
        return False
    if dev.ranges is None:
        return True
    ids = block_ids(dev.ranges, block_size(sysfs))
    present = present_block_ids(sysfs)
    blocks = read_blocks(sysfs, [b for b in ids if b in present])
    if mode is not Mode.SYSTEM_RAM:
        return not blocks
    if online is None:
        return True
    return {b.id for b in blocks if b.online} == online


def _arrived(ctx: Ctx, mode: Mode, policy: str | None) -> bool:
    """Verify the target after the steps: the driver link, the policy, which blocks exist
    (one scan), and their states as the kernel's answers to our writes left them."""
    sysfs = ctx.sysfs
    if ctx.driver() != mode.driver:
        return False
    if policy is not None and sysfs.read_or(AUTO_ONLINE) != policy:
        return False
    if ctx.dev.ranges is None:
        return True
    # ctx.known, when set, came from our own scan after the last driver change plus the
    # kernel's answers to our writes; otherwise scan now.
    known = ctx.current()
    if mode is not Mode.SYSTEM_RAM:
        return not known
    if not known:
        return False
    return not ctx.opts.online or all(b.online for b in known)


def _execute(sysfs: Sysfs, dev: DaxDevice, p: Plan, opts: Options) -> Outcome:
    ctx = Ctx(sysfs, dev, opts)
    policy = sysfs.read_or(AUTO_ONLINE)
    ctx.known = {b.id: b for b in p.blocks}  # read by plan() under the same lock
    start_online: set[int] | None = None
    if p.start is Mode.SYSTEM_RAM:
        start_online = {b.id for b in p.blocks if b.online}
    done: list[Step] = []
    failure: DaxmodeError | None = None
    for step in p.steps:
        ctx.say(f"step: {step.describe()}")
        try:
            step.apply(ctx)
        except DaxmodeError as e:
            failure = e
            break
        done.append(step)
    if failure is None and not _arrived(ctx, p.target, policy):
        failure = KernelRefused(f"verification failed: {residual(sysfs, dev, policy)}")
    if failure is None:
        return _outcome(ctx, p, changed=bool(p.steps))

    ctx.known = None  # from here on, trust only fresh reads
    head = f"{dev.name}: {_name(p.start)} -> {p.target} failed: {failure}"
    rb_err: DaxmodeError | None = None
    for step in reversed(done):
        ctx.say(f"rollback: {step.describe()}")
        try:
            step.undo(ctx)
        except DaxmodeError as e:
            rb_err = e
            break
    if rb_err is None and policy is not None and sysfs.read_or(AUTO_ONLINE) != policy:
        ctx.say("rollback: restore auto_online_blocks")
        try:
            ctx.write(AUTO_ONLINE, policy)
        except SysfsError as e:
            rb_err = e
    if rb_err is None and _in_mode(sysfs, dev, p.start, start_online, policy):
        if ctx.changes == 0:
            raise KernelRefused(f"{head}; nothing was changed")
        raise RolledBack(f"{head}; rolled back, {dev.name} is back in {_name(p.start)}")
    why = f"rollback failed: {rb_err}" if rb_err else "rollback did not restore the starting state"
    raise LeftPartial(f"{head}; {why}; {dev.name} is left with {residual(sysfs, dev, policy)}")


def _outcome(ctx: Ctx, p: Plan, changed: bool) -> Outcome:
    out = Outcome(ctx.name, p.start, p.target, p, changed=changed, warnings=ctx.warnings, writes=ctx.writes)
    if p.target is Mode.SYSTEM_RAM:
        blocks = ctx.current()
        if any(b.online and b.zones is None for b in blocks):
            zones = read_zones(ctx.sysfs, [b.id for b in blocks])
            blocks = [MemoryBlock(b.id, b.state, zones[b.id]) for b in blocks]
        out.total_blocks = len(blocks)
        out.online_blocks = sum(b.online for b in blocks)
        if blocks and out.online_blocks == len(blocks):
            out.movable = all(b.zones == "Movable" for b in blocks)
    return out


def set_mode(sysfs: Sysfs, name: str, target: Mode, opts: Options | None = None) -> Outcome:
    """Put device ``name`` into ``target`` mode, safely; see the module docstring.

    Raises NotRoot, UnknownDevice, LegacyDeviceModel, BadMode, DeviceBusy or
    KernelRefused before changing anything; RolledBack or LeftPartial after.
    """
    opts = opts or Options()
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot("daxmode set needs root: it writes sysfs and reads root-only attributes")
    dev = get_device(sysfs, name)
    _check_device(sysfs, dev)
    if opts.dry_run:
        p = plan(sysfs, dev, target, opts)
        return Outcome(dev.name, p.start, target, p, changed=False, dry_run=True)
    with device_lock(sysfs, dev.name, timeout=max(60.0, opts.timeout)):
        dev = get_device(sysfs, dev.name)  # re-read under the lock: someone may have changed it
        p = plan(sysfs, dev, target, opts)
        return _execute(sysfs, dev, p, opts)


@contextmanager
def temporary_mode(sysfs: Sysfs, name: str, target: Mode, opts: Options | None = None) -> Iterator[Outcome]:
    """Hold the device lock, switch to ``target``, and put the starting mode back afterwards.

    Memory this switch offlined (needs ``opts.force``) is onlined again in its zone; memory
    it onlined is offlined again when restoring.
    """
    opts = opts or Options()
    dev = get_device(sysfs, name)
    with device_lock(sysfs, dev.name):
        dev = get_device(sysfs, dev.name)
        start = dev.mode
        mem = device_memory(sysfs, dev, zones=True)
        was_online = bool(mem and mem.online)
        movable = bool(mem and mem.online and all(b.zones == "Movable" for b in mem.online))
        out = set_mode(sysfs, dev.name, target, opts)
        try:
            yield out
        finally:
            if start is None:
                cur = get_device(sysfs, dev.name)
                if cur.driver is not None:
                    ctx = Ctx(sysfs, cur, opts)
                    Bind(cur.driver).undo(ctx)
            elif start is not target or (start is Mode.SYSTEM_RAM and was_online):
                set_mode(
                    sysfs,
                    dev.name,
                    start,
                    Options(
                        force=True, online=was_online, movable=movable or not was_online, timeout=opts.timeout
                    ),
                )


def describe_transitions() -> list[str]:
    """The table as text (for docs and ``--help``)."""
    out = []
    for (a, b), specs in TRANSITIONS.items():
        steps = ", ".join(f"{k} {d}" if d else k for k, d in specs) or "nothing"
        out.append(f"{_name(a)} -> {b}: {steps}")
    return out


__all__ += ["DeviceMemory", "describe_transitions", "residual"]
