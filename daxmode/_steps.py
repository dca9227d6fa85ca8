"""The reversible steps a transition is made of, and the context they share.

Each step has three faces: ``actions`` (the writes it would make, for ``--dry-run``, built
from the kernel layer's ``*_actions``), ``apply`` and ``undo``.  ``apply`` records what it
changed as it goes; ``undo`` reverses exactly that and is safe to call after an ``apply``
that stopped part way (a failed write, or a signal at a checkpoint), so the executor undoes
the failing step and then the completed ones, in reverse.  ``undo`` returns a few words on
what it did, for the message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from daxmode import signals
from daxmode.errors import DaxmodeError, KernelRefused, SysfsError
from daxmode.kernel import drivers, memory, paths
from daxmode.kernel.devices import DaxDevice, driver_of, get_device
from daxmode.kernel.drivers import Action
from daxmode.kernel.memory import MemoryBlock, compress_blocks
from daxmode.runstate import locks
from daxmode.sysfs import Sysfs


class StepFailed(DaxmodeError):
    """A step could not complete; the executor undoes it and the steps before it."""

    exit_code = KernelRefused.exit_code


class Progress(NamedTuple):
    """One event of a long step: block ``done`` of ``total`` onlined or offlined."""

    device: str
    what: str  # "onlining" | "offlining"
    done: int
    total: int


@dataclass
class Options:
    force: bool = False  # offline online memory when leaving system-ram
    online: bool = True  # online the blocks when entering system-ram
    movable: bool = True  # online_movable (ZONE_MOVABLE) rather than online
    dry_run: bool = False
    timeout: float = 10.0  # for each wait on a driver link or device node
    log: Callable[[str], None] | None = None  # told about each action as it happens
    progress: Callable[[Progress], None] | None = None  # block-by-block progress of long steps


class PlanState:
    """What the planner assumes while laying steps out (dry-run needs no kernel)."""

    def __init__(self, online: list[int], offline: list[int], loaded: set[str], policy: str | None) -> None:
        self.online = online
        self.offline = offline
        self.loaded = loaded
        self.policy = policy


class JournalWriter(Protocol):
    """Where a step records the shared state it changes (the executor's journal)."""

    def record(self, **fields: Any) -> None: ...

    def hold_policy(self, value: str) -> None: ...

    def release_policy(self) -> None: ...


class _Unjournaled:
    """Before the executor runs the steps (planning) or outside a run (putting a mode back):
    nothing to record."""

    def record(self, **fields: Any) -> None:
        return None

    def hold_policy(self, value: str) -> None:
        return None

    def release_policy(self) -> None:
        return None


class Ctx:
    """What steps share: the device, options, and a record of everything done."""

    def __init__(self, sysfs: Sysfs, dev: DaxDevice, opts: Options) -> None:
        self.sysfs = sysfs
        self.dev = dev
        self.opts = opts
        self.journal: JournalWriter = _Unjournaled()
        self.warnings: list[str] = []
        self.undone_side_effects: list[str] = []
        self.changes = 0  # writes the kernel accepted
        self.bsize = memory.block_size(sysfs)
        self.ids = memory.block_ids(dev.ranges or [], self.bsize)
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
        """Every write of a transition: a signal checkpoint, the log line, then the write."""
        signals.checkpoint()
        self.say(f"write {value!r} > /{rel}")
        self.sysfs.write(rel, value)
        self.changes += 1

    def progress(self, what: str) -> Callable[[int, int], None] | None:
        cb = self.opts.progress
        if cb is None:
            return None
        return lambda done, total: cb(Progress(self.name, what, done, total))

    def driver(self) -> str | None:
        return driver_of(self.sysfs, self.name)

    def present(self) -> list[int]:
        return memory.present_blocks(self.sysfs, self.dev.ranges or [], self.bsize)

    def current(self) -> list[MemoryBlock]:
        """The device's present blocks as known, reading them only if unknown."""
        if self.known is None:
            self.known = {b.id: b for b in memory.scan_blocks(self.sysfs, self.present())}
        return [self.known[i] for i in sorted(self.known)]


class Step(ABC):
    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def actions(self, ctx: Ctx, st: PlanState) -> list[Action]: ...

    @abstractmethod
    def apply(self, ctx: Ctx) -> None: ...

    @abstractmethod
    def undo(self, ctx: Ctx) -> str:
        """Reverse what ``apply`` recorded; return what was done ("" if nothing)."""


def _fail(res: memory.BlockPass) -> None:
    if res.failures:
        raise StepFailed("; ".join(res.failures))


class Offline(Step):
    """Offline the device's online blocks (--force); undo re-onlines them in their zones.

    ``removable`` is not read up front: kernels since 5.9 always report 1 there, so it is
    consulted only to explain a failed offline."""

    def __init__(self) -> None:
        self.done: list[MemoryBlock] = []

    def describe(self) -> str:
        return "offline memory"

    def actions(self, ctx: Ctx, st: PlanState) -> list[Action]:
        acts = [Action("write", paths.block_attr(b, "state"), "offline") for b in st.online]
        st.offline, st.online = st.offline + st.online, []
        return acts

    def apply(self, ctx: Ctx) -> None:
        cur = ctx.current()
        online = [b for b in cur if b.online]
        missing = [b.id for b in online if b.zones is None]
        if missing:  # the zone of each, to re-online it there if we roll back
            zones = memory.read_zones(ctx.sysfs, missing)
            online = [MemoryBlock(b.id, b.state, b.zones or zones[b.id]) for b in online]
        by_id = {b.id: b for b in online}
        ctx.known = None
        res = memory.offline_blocks(ctx.sysfs, ctx.write, online, progress=ctx.progress("offlining"))
        self.done = [by_id[i] for i in res.changed]
        _fail(res)
        ctx.known = {b.id: MemoryBlock(b.id, "offline") for b in cur}

    def undo(self, ctx: Ctx) -> str:
        ctx.known = None
        if not self.done:
            return ""
        blocks, self.done = list(reversed(self.done)), []
        res = memory.online_blocks(
            ctx.sysfs,
            ctx.write,
            blocks,
            lambda b: memory.zone_value(b.zones, ctx.opts.movable),
            keep_going=True,
        )
        _fail(res)
        return f"onlined again {compress_blocks(b.id for b in blocks)}"


class Online(Step):
    """Online the device's offline blocks as online_movable (or online); verify the zones."""

    def __init__(self) -> None:
        self.mine: list[int] = []

    def describe(self) -> str:
        return "online memory"

    def _value(self, ctx: Ctx) -> str:
        return "online_movable" if ctx.opts.movable else "online"

    def actions(self, ctx: Ctx, st: PlanState) -> list[Action]:
        value = self._value(ctx)
        acts = [Action("write", paths.block_attr(b, "state"), value) for b in st.offline]
        st.online, st.offline = st.online + st.offline, []
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
        ctx.known = None
        res = memory.online_blocks(
            ctx.sysfs, ctx.write, todo, lambda b: value, progress=ctx.progress("onlining")
        )
        self.mine = list(res.changed)
        _fail(res)
        mine = set(self.mine)
        # online_movable always lands in ZONE_MOVABLE (mm/memory_hotplug.c zone_for_pfn_range),
        # so read the zone only where the kernel chose it: plain "online", or blocks not ours.
        movable = ctx.opts.movable
        check = [i for i in ids if i not in mine] if movable else ids
        zones = memory.read_zones(ctx.sysfs, check)
        want = "Movable" if movable else "Normal"
        wrong = [i for i in check if zones[i] != want]
        if wrong:
            who = "onlined by daxmode" if mine.issuperset(wrong) else "onlined before daxmode ran"
            ctx.warnings.append(f"{ctx.name}: {compress_blocks(wrong)} not in zone {want} ({who})")
        ctx.known = {i: MemoryBlock(i, "online", zones.get(i, want)) for i in ids}

    def undo(self, ctx: Ctx) -> str:
        ctx.known = None
        if not self.mine:
            return ""
        ids, self.mine = list(reversed(self.mine)), []
        _fail(
            memory.offline_blocks(
                ctx.sysfs, ctx.write, [MemoryBlock(i, "online") for i in ids], keep_going=True
            )
        )
        return f"offlined again {compress_blocks(ids)}"


def refuse_unsafe_kmem_unbind(ctx: Ctx) -> None:
    """kmem's remove with a block online "succeeds" and leaks the range until reboot."""
    ctx.known = None
    on = [b.id for b in ctx.current() if b.online]
    if on:
        raise StepFailed(f"refusing to unbind kmem from {ctx.name}: {compress_blocks(on)} online")


class Unbind(Step):
    """remove_id then unbind; refuses kmem while a block is online."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.done = False

    def describe(self) -> str:
        return f"unbind {self.driver}"

    def actions(self, ctx: Ctx, st: PlanState) -> list[Action]:
        if self.driver == "kmem":
            st.online, st.offline = [], []  # kmem's remove takes the blocks away
        return drivers.unbind_actions(ctx.name, self.driver)

    def apply(self, ctx: Ctx) -> None:
        if self.driver == "kmem":
            refuse_unsafe_kmem_unbind(ctx)
        try:
            drivers.unbind(ctx.sysfs, ctx.write, ctx.name, self.driver, ctx.opts.timeout)
        finally:
            self.done = ctx.driver() != self.driver
        if self.driver == "kmem":
            left = ctx.present()
            ctx.known = None
            if left:
                raise StepFailed(f"kmem unbind left {compress_blocks(left)} present (range leaked)")
            ctx.known = {}

    def undo(self, ctx: Ctx) -> str:
        if not self.done or ctx.driver() == self.driver:
            return ""
        self.done = False
        Bind(self.driver).apply(ctx)
        return f"bound {self.driver} again"


class Bind(Step):
    """Load the module if needed, new_id (+ bind), verify the link, undo new_id's side effects.

    The whole window runs under the bus lock and shielded from signals: it holds
    ``auto_online_blocks`` at ``offline`` while kmem probes (kmem applies the policy during
    probe; daxctl aborts instead), and the side-effect accounting compares the unbound devices
    before and after, which another run binding at the same time would falsify."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.bound = False
        self.id_added = False

    def describe(self) -> str:
        return f"bind {self.driver}"

    def actions(self, ctx: Ctx, st: PlanState) -> list[Action]:
        acts: list[Action] = []
        hold = self.driver == "kmem" and memory.policy_onlines(st.policy)
        if hold:
            acts.append(Action("write", paths.AUTO_ONLINE, "offline", f"hold: policy is {st.policy}"))
        acts += drivers.bind_actions(ctx.name, self.driver, is_loaded=self.driver in st.loaded)
        st.loaded.add(self.driver)
        if hold:
            acts.append(Action("write", paths.AUTO_ONLINE, st.policy or "", "restore"))
        if self.driver == "kmem":
            st.offline, st.online = list(ctx.ids), []
        return acts

    def apply(self, ctx: Ctx) -> None:
        sysfs = ctx.sysfs
        err: BaseException | None = None
        with locks.bus_lock(sysfs, timeout=max(60.0, ctx.opts.timeout)), signals.shielded():
            policy = memory.read_policy(sysfs) if self.driver == "kmem" else None
            hold = memory.policy_onlines(policy)
            try:
                ctx.journal.record(
                    step=self.describe(),
                    bind={"driver": self.driver, "unbound_before": sorted(drivers.unbound_devices(sysfs))},
                )
                if hold:
                    ctx.journal.hold_policy(policy or "online")
                    ctx.write(paths.AUTO_ONLINE, "offline")
                self.id_added = True
                res = drivers.bind(sysfs, ctx.write, ctx.name, self.driver, ctx.opts.timeout)
                self.bound = True
                self._undo_side_effects(ctx, res.side_effects)
            except BaseException as e:
                err = e
            finally:
                if hold:
                    try:
                        ctx.write(paths.AUTO_ONLINE, policy or "online")
                        ctx.journal.release_policy()
                    except SysfsError as e:
                        err = err or StepFailed(f"could not restore auto_online_blocks to {policy}: {e}")
        if self.driver == "kmem":
            ctx.known = None  # hot-added blocks: presence by scan, states by the kernel's answers
        if err is not None:
            raise err
        drivers.wait_node(sysfs, ctx.name, ctx.opts.timeout)

    def _undo_side_effects(self, ctx: Ctx, others: list[str]) -> None:
        for other in others:
            msg = f"{other} was bound to {self.driver} as a side effect of new_id"
            try:
                if self.driver == "kmem":
                    mem = memory.device_memory(ctx.sysfs, get_device(ctx.sysfs, other))
                    if mem and mem.online:
                        _fail(memory.offline_blocks(ctx.sysfs, ctx.write, mem.online))
                drivers.unbind(ctx.sysfs, ctx.write, other, self.driver, ctx.opts.timeout)
                ctx.warnings.append(msg + "; unbound it again")
                ctx.undone_side_effects.append(other)
            except DaxmodeError as e:
                ctx.warnings.append(msg + f"; could not unbind it: {e}")

    def undo(self, ctx: Ctx) -> str:
        """Unbind if we bound it (kmem: offline first, e.g. blocks a udev rule onlined), and
        drop our id entry either way, so a later new_id elsewhere cannot re-bind it here."""
        note = ""
        if ctx.driver() == self.driver and (self.bound or self.id_added):
            if self.driver == "kmem":
                ctx.known = None
                on = [b for b in ctx.current() if b.online]
                if on:
                    _fail(memory.offline_blocks(ctx.sysfs, ctx.write, on, keep_going=True))
            drivers.unbind(ctx.sysfs, ctx.write, ctx.name, self.driver, ctx.opts.timeout)
            note = f"unbound {self.driver}"
        elif self.id_added and drivers.loaded(ctx.sysfs, self.driver):
            drivers.remove_id(ctx.write, ctx.name, self.driver)
        self.bound = self.id_added = False
        return note


STEP_OF: dict[str, Callable[[str | None], Step]] = {
    "offline": lambda _d: Offline(),
    "online": lambda _d: Online(),
    "unbind": lambda d: Unbind(d or ""),
    "bind": lambda d: Bind(d or ""),
}
