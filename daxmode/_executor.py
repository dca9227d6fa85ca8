"""Running a plan: steps, verification, rollback on any failure or signal, and recovery.

A transition runs with SIGINT/SIGTERM/SIGHUP deferred (daxmode.signals): they take effect at
the next checkpoint (before a write, inside a wait, between steps) and roll the transition
back like a failed step, exit 130.  Any exception rolls back, not only daxmode's own.  The
rollback undoes the step that failed (its partial work) and then the completed steps in
reverse, verifies the starting state from sysfs, and otherwise names exactly what is left.

While it runs, ``run/daxmode/<dev>.journal`` records where it is (runstate.journal); a run that
dies without clearing it (SIGKILL) is repaired by :func:`recover` at the next ``set``.
"""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from typing import Any

from daxmode import signals
from daxmode._plan import Plan, mode_name
from daxmode._steps import Bind, Ctx, Options, Step, Unbind
from daxmode.errors import DaxmodeError, KernelRefused, LeftPartial, RolledBack
from daxmode.kernel import drivers, memory
from daxmode.kernel.devices import DaxDevice, Mode, driver_of, get_device, read_device
from daxmode.kernel.memory import compress_blocks
from daxmode.runstate import journal, locks
from daxmode.signals import Interrupted
from daxmode.sysfs import Sysfs


class Journal:
    """The journal of this run on one device (:mod:`daxmode.runstate.journal`): the executor is its
    one writer, and the steps report what they change through ``ctx.journal``."""

    def __init__(self, sysfs: Sysfs, name: str) -> None:
        self.sysfs = sysfs
        self.name = name

    def record(self, **fields: Any) -> None:
        journal.record(self.sysfs, self.name, **fields)

    def hold_policy(self, value: str) -> None:
        journal.hold_policy(self.sysfs, value)

    def release_policy(self) -> None:
        journal.release_policy(self.sysfs)

    def clear(self) -> None:
        journal.clear(self.sysfs, self.name)


def residual(sysfs: Sysfs, dev: DaxDevice, policy: str | None) -> str:
    """Exactly what state the device is in: driver, and each block's state, compressed."""
    drv = driver_of(sysfs, dev.name)
    parts = [f"driver {drv} bound" if drv else "no driver bound (disabled)"]
    if dev.ranges is not None:
        blocks = memory.present_in(sysfs, dev)
        if blocks:
            on = [b.id for b in blocks if b.online]
            off = [b.id for b in blocks if not b.online]
            parts.append(f"memory blocks online: {compress_blocks(on)}; offline: {compress_blocks(off)}")
        else:
            parts.append("no memory blocks present")
    now = memory.read_policy(sysfs)
    if policy is not None and now != policy:
        parts.append(f"auto_online_blocks is {now!r} (was {policy!r})")
    return ", ".join(parts)


def _policy_is(sysfs: Sysfs, policy: str | None) -> bool:
    if policy is None:
        return True
    with locks.bus_lock(sysfs):  # not while another run holds it at offline
        return memory.read_policy(sysfs) == policy


def _in_mode(
    sysfs: Sysfs, dev: DaxDevice, mode: Mode | None, online: set[int] | None, policy: str | None
) -> bool:
    """Verify ``mode`` from sysfs: the driver link, the blocks, and the policy."""
    if driver_of(sysfs, dev.name) != (mode.driver if mode else None) or not _policy_is(sysfs, policy):
        return False
    if dev.ranges is None:
        return True
    blocks = memory.present_in(sysfs, dev)
    if mode is not Mode.SYSTEM_RAM:
        return not blocks
    return online is None or {b.id for b in blocks if b.online} == online


def _arrived(ctx: Ctx, mode: Mode, policy: str | None) -> bool:
    """Verify the target after the steps: the driver link, the policy, which blocks exist
    (one scan), and their states as the kernel's answers to our writes left them."""
    if ctx.driver() != mode.driver or not _policy_is(ctx.sysfs, policy):
        return False
    if ctx.dev.ranges is None:
        return True
    known = ctx.current()
    if mode is not Mode.SYSTEM_RAM:
        return not known
    return bool(known) and (not ctx.opts.online or all(b.online for b in known))


def _describe(e: BaseException) -> str:
    if isinstance(e, DaxmodeError):
        return str(e)
    return f"internal error: {type(e).__name__}: {e}"


def _signum(e: BaseException) -> int | None:
    if isinstance(e, Interrupted):
        return e.signum
    if isinstance(e, KeyboardInterrupt):
        return signal.SIGINT
    return None


class _BusHold:
    """The bus lock from an unbind until the bind that follows it: while a device is unbound,
    another run's ``new_id`` would bind it as a side effect it cannot tell from our own bind."""

    def __init__(self, sysfs: Sysfs, timeout: float) -> None:
        self.sysfs = sysfs
        self.timeout = timeout
        self.cm: AbstractContextManager[None] | None = None

    def acquire(self) -> None:
        if self.cm is None:
            cm = locks.bus_lock(self.sysfs, timeout=self.timeout)
            cm.__enter__()
            self.cm = cm

    def release(self) -> None:
        if self.cm is not None:
            cm, self.cm = self.cm, None
            cm.__exit__(None, None, None)


def execute(p: Plan) -> bool:
    """Run ``p``'s steps in the context it was planned in, under the device lock the caller held
    for planning too; True if anything changed.  See the module docstring.  The journal is
    cleared however it ends: the device is where the run asked for, or back where it started,
    or the error says exactly what is left (a plan with no steps clears what an interrupted
    run left, which :func:`recover` has repaired)."""
    ctx = p.ctx
    sysfs, dev, opts = ctx.sysfs, ctx.dev, ctx.opts
    log = Journal(sysfs, dev.name)
    ctx.journal = log
    if not p.steps:
        log.clear()
        return False
    with signals.deferred():
        with locks.bus_lock(sysfs):
            policy = memory.read_policy(sysfs)
        start_online = {b.id for b in p.blocks if b.online} if p.start is Mode.SYSTEM_RAM else None
        done: list[Step] = []
        current: Step | None = None
        failure: BaseException | None = None
        bus = _BusHold(sysfs, max(60.0, opts.timeout))
        try:
            log.record(
                **{"from": p.start.value if p.start else None, "to": p.target.value},
                steps=[s.describe() for s in p.steps],
                step=p.steps[0].describe(),
            )
            for step in p.steps:
                signals.checkpoint()
                ctx.say(f"step: {step.describe()}")
                if step is not p.steps[0] and not isinstance(step, Unbind | Bind):  # a bind journals itself
                    log.record(step=step.describe())
                current = step
                if isinstance(step, Unbind):
                    bus.acquire()
                step.apply(ctx)
                done.append(step)
                current = None
                if isinstance(step, Bind):
                    bus.release()
            signals.checkpoint()
            if not _arrived(ctx, p.target, policy):
                failure = KernelRefused(f"verification failed: {residual(sysfs, dev, policy)}")
        except BaseException as e:
            failure = e
        if failure is None:
            bus.release()
            log.clear()
            return True
        with signals.shielded():
            bus.acquire()  # the whole rollback: it unbinds and binds again
            try:
                err = _rollback(ctx, p, done, current, failure, policy, start_online)
            finally:
                bus.release()
            log.clear()
        signals.clear()
    raise err


def _rollback(
    ctx: Ctx,
    p: Plan,
    done: list[Step],
    current: Step | None,
    failure: BaseException,
    policy: str | None,
    start_online: set[int] | None,
) -> BaseException:
    sysfs, dev = ctx.sysfs, ctx.dev
    ctx.known = None  # from here on, trust only fresh reads
    notes: list[str] = []
    rb_err: BaseException | None = None
    undo = ([current] if current is not None else []) + list(reversed(done))
    for step in undo:
        ctx.say(f"rollback: {step.describe()}")
        try:
            note = step.undo(ctx)
        except BaseException as e:
            rb_err = e
            break
        if note and step is current:
            notes.append(note)  # the failing step's partial work; the rest is "back in <mode>"
    if rb_err is None and policy is not None:
        with locks.bus_lock(sysfs):
            if memory.read_policy(sysfs) != policy:
                ctx.say("rollback: restore auto_online_blocks")
                try:
                    memory.write_policy(ctx.write, policy)
                except DaxmodeError as e:
                    rb_err = e
    back = rb_err is None and _in_mode(sysfs, dev, p.start, start_online, policy)
    state = (
        f"rolled back, {dev.name} is back in {mode_name(p.start)}"
        if back
        else (
            f"rollback failed: {_describe(rb_err)}"
            if rb_err
            else "rollback did not restore the starting state"
        )
        + f"; {dev.name} is left with {residual(sysfs, dev, policy)}"
    )
    what = f"{dev.name}: {mode_name(p.start)} -> {p.target}"
    sig = _signum(failure)
    if sig is not None:
        return Interrupted(sig, f"{what} interrupted by {signal.Signals(sig).name}; {state}")
    head = f"{what} failed: {_describe(failure)}"
    if back:
        if ctx.changes == 0:
            return KernelRefused(f"{head}; nothing was changed")
        return RolledBack("; ".join([head, *notes, state]))
    return LeftPartial(f"{head}; {state}")


def recover(sysfs: Sysfs, name: str, opts: Options) -> str | None:
    """Repair what an interrupted run left (call with the device lock held): a held
    auto_online_blocks, devices its new_id bound as a side effect, its stale id entry.
    Returns a description for the user, or None if there was nothing to repair."""
    notes: list[str] = []
    with locks.bus_lock(sysfs, timeout=max(60.0, opts.timeout)), signals.shielded():
        hold = journal.stale_policy_hold(sysfs)
        if hold is not None:
            value, pid = hold
            memory.write_policy(sysfs.write, value)
            journal.release_policy(sysfs)
            notes.append(f"restored auto_online_blocks to {value!r} (held by interrupted daxmode pid {pid})")
        intr = journal.interrupted(sysfs, name)
        if intr is not None:
            notes.insert(0, intr.describe())
            bind = intr.data.get("bind") or {}
            drv = bind.get("driver")
            if drv in ("device_dax", "kmem", "fsdev_dax"):
                notes += _undo_stale_bind(sysfs, name, drv, bind.get("unbound_before") or [], opts)
            notes.append(f"{name} is now {read_device(sysfs, name).mode_name}")
            journal.mark_repaired(sysfs, intr, "; ".join(notes))
    return "; ".join(notes) if notes else None


def _undo_stale_bind(
    sysfs: Sysfs, name: str, drv: str, unbound_before: list[str], opts: Options
) -> list[str]:
    notes = []
    for other in unbound_before:
        if other == name or driver_of(sysfs, other) != drv or locks.is_held_elsewhere(sysfs, f"{other}.lock"):
            continue
        try:
            if drv == "kmem":
                mem = memory.device_memory(sysfs, get_device(sysfs, other))
                if mem and mem.online:
                    memory.offline_blocks(sysfs, sysfs.write, mem.online)
            drivers.unbind(sysfs, sysfs.write, other, drv, opts.timeout)
            notes.append(f"unbound {other} from {drv} (bound as a side effect of its new_id)")
        except DaxmodeError as e:
            notes.append(f"could not unbind {other} from {drv}: {e}")
    if driver_of(sysfs, name) != drv and drivers.loaded(sysfs, drv):
        try:
            drivers.remove_id(sysfs.write, name, drv)
            notes.append(f"removed its {drv} id entry")
        except DaxmodeError as e:
            notes.append(f"could not remove its {drv} id entry: {e}")
    return notes
