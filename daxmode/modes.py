"""Mode transitions, the entry points: :func:`set_mode` and :func:`temporary_mode`.

One flow, each module importing only the ones after it: :func:`set_mode` takes the device
lock, repairs what an interrupted run left (:func:`daxmode._executor.recover`), reads the device
once, plans (:mod:`daxmode._plan`: the steps as data, the preconditions, the writes ``--dry-run``
prints, and the step context), executes (:mod:`daxmode._executor`: verifies every step, rolls
back on any failure or signal, keeps and clears the journal, and says exactly which state a
device is left in when the rollback fails too) and reports (:mod:`daxmode._outcome`).
The steps themselves are :mod:`daxmode._steps`.

Rules kept (daxctl's, and where daxmode goes further):

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

from daxmode import signals
from daxmode._executor import execute, recover
from daxmode._outcome import Outcome, outcome
from daxmode._plan import TRANSITIONS, Plan, check_device, mode_name, plan
from daxmode._steps import Bind, Ctx, Options, Progress
from daxmode.errors import DaxmodeError, NotRoot
from daxmode.kernel import memory
from daxmode.kernel.devices import Mode, existing_name, get_device
from daxmode.kernel.drivers import Action
from daxmode.runstate import locks
from daxmode.sysfs import Sysfs

__all__ = [
    "TRANSITIONS",
    "Action",
    "Mode",
    "Options",
    "Outcome",
    "Plan",
    "Progress",
    "check_device",
    "mode_name",
    "plan",
    "set_mode",
    "temporary_mode",
]


def set_mode(sysfs: Sysfs, name: str, target: Mode, opts: Options | None = None) -> Outcome:
    """Put device ``name`` into ``target`` mode, safely; see the module docstring.

    Raises NotRoot, UnknownDevice, LegacyDeviceModel, BadMode, DeviceBusy or KernelRefused
    before changing anything; RolledBack, LeftPartial or Interrupted (exit 130) after.
    """
    opts = opts or Options()
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot("daxmode set needs root: it writes sysfs and reads root-only attributes")
    name = existing_name(sysfs, name)
    if opts.dry_run:
        p = plan(sysfs, get_device(sysfs, name), target, opts)
        return Outcome(name, p.start, target, p, changed=False, dry_run=True)
    with locks.device_lock(sysfs, name, timeout=max(60.0, opts.timeout)):
        recovered = recover(sysfs, name, opts)
        try:
            p = plan(sysfs, get_device(sysfs, name), target, opts)  # read under the lock
            changed = execute(p)
        except DaxmodeError as e:
            if recovered:  # the repair happened; say so beside the refusal or failure
                e.warnings.insert(0, recovered)
            raise
        out = outcome(p, changed)
        if recovered:
            out.recovered = recovered
            out.warnings.insert(0, recovered)
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
            step = Bind(cur.driver)
            step.bound = True
            step.undo(Ctx(sysfs, cur, opts))
        return
    cur = get_device(sysfs, name)
    if cur.mode is not start or (start is Mode.SYSTEM_RAM and was_online):
        set_mode(
            sysfs,
            name,
            start,
            Options(force=True, online=was_online, movable=movable or not was_online, timeout=opts.timeout),
        )
