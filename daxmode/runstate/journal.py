"""A small journal of the transition in flight, for SIGKILL and crashes.

Signals are caught and rolled back (daxmode.signals); a SIGKILL, an OOM kill or a crash is
not.  So a transition records, in ``run/daxmode/<dev>.journal``, where it started, where it
is going, the step it is in and the shared state it is changing (the devices that were
unbound before a ``new_id``); and a hold of ``auto_online_blocks`` records the value it
replaced in ``run/daxmode/policy.hold``.  Both are removed when the run ends, whatever the
outcome.  One that is still there while nobody holds its lock (flocks die with their
process) marks an interrupted run: the next command on that device reports it, and
``daxmode set`` repairs what it left (daxmode._executor.recover).  The executor is the one
writer: it records and clears, and the steps report what they change through it.  ``/run`` is
a tmpfs: after a power loss the journal is gone, and so is the kernel state it described.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, NamedTuple

from daxmode import runstate
from daxmode.errors import UnsafePath
from daxmode.runstate import locks
from daxmode.sysfs import Sysfs

POLICY_HOLD = "policy.hold"


def _file(name: str) -> str:
    return f"{runstate.key(name)}.journal"


def _write(sysfs: Sysfs, file: str, data: dict[str, Any]) -> None:
    """Replace the file atomically (:func:`daxmode.runstate.write_at`)."""
    dfd = runstate.open_run_dir(sysfs)
    try:
        runstate.write_at(dfd, file, runstate.encode(data), sysfs.shown(f"{runstate.RUN_DIR}/{file}"))
    finally:
        os.close(dfd)


def _read(sysfs: Sysfs, file: str) -> dict[str, Any] | None:
    try:
        dfd = runstate.open_run_dir(sysfs, create=False)
    except (OSError, UnsafePath):
        return None  # missing, not root (the directory is 0700), or not ours: nothing we may trust
    try:
        raw = runstate.read_at(dfd, file, sysfs.shown(f"{runstate.RUN_DIR}/{file}"))
    finally:
        os.close(dfd)
    if raw is None:
        return None
    data = runstate.decode(raw)
    return data if data is not None else {"corrupt": True}


def _remove(sysfs: Sysfs, file: str) -> None:
    try:
        dfd = runstate.open_run_dir(sysfs, create=False)
    except (OSError, UnsafePath):
        return
    try:
        runstate.remove_at(dfd, file)
    finally:
        os.close(dfd)


# --- the device journal --------------------------------------------------------------------


_mine: dict[str, dict[str, Any]] = {}  # journal path -> what this process last wrote there


def record(sysfs: Sysfs, name: str, **fields: Any) -> dict[str, Any]:
    """Start or update this process's journal for ``name`` with ``fields``.  What was written
    before is kept in memory, so an update is one write and one rename, never a read."""
    key = sysfs.fspath(f"{runstate.RUN_DIR}/{_file(name)}")
    data = _mine.get(key)
    if data is None or data.get("pid") != os.getpid():
        data = {"pid": os.getpid(), "started": time.time(), "device": name}
    data.update(fields)
    _write(sysfs, _file(name), data)
    _mine[key] = data
    return data


def clear(sysfs: Sysfs, name: str) -> None:
    _mine.pop(sysfs.fspath(f"{runstate.RUN_DIR}/{_file(name)}"), None)
    _remove(sysfs, _file(name))


def mark_repaired(sysfs: Sysfs, intr: Interruption, note: str) -> None:
    """Keep an interrupted run's journal (``list`` still names it until a ``set`` succeeds) but
    record that its shared state was repaired, so the repair is not repeated."""
    data = {k: v for k, v in intr.data.items() if k != "bind"}
    data["repaired"] = note
    _write(sysfs, _file(intr.device), data)


class Interruption(NamedTuple):
    """What an interrupted run left on record."""

    device: str
    pid: int | None
    start: str | None  # mode name, or None (unbound)
    target: str | None
    step: str | None
    data: dict[str, Any]

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "an earlier run"
        where = f" during '{self.step}'" if self.step else ""
        done = " (its leftovers were repaired)" if self.data.get("repaired") else ""
        return (
            f"{self.device}: a transition {self.start or 'unbound'} -> {self.target or '?'} by {who} "
            f"was interrupted{where}{done}"
        )


def interrupted(sysfs: Sysfs, name: str) -> Interruption | None:
    """The journal of a run that ended without clearing it (its device lock is free), if any."""
    data = _read(sysfs, _file(name))
    if data is None:
        return None
    if data.get("pid") == os.getpid() or locks.is_held_elsewhere(sysfs, f"{name}.lock"):
        return None  # a run in progress (ours or another's), not an interrupted one
    return Interruption(
        device=name,
        pid=data.get("pid"),
        start=data.get("from"),
        target=data.get("to"),
        step=data.get("step"),
        data=data,
    )


# --- the auto_online_blocks hold ------------------------------------------------------------


def hold_policy(sysfs: Sysfs, value: str) -> None:
    """Record the policy value a run is about to replace (under the bus lock)."""
    _write(sysfs, POLICY_HOLD, {"pid": os.getpid(), "value": value, "since": time.time()})


def release_policy(sysfs: Sysfs) -> None:
    _remove(sysfs, POLICY_HOLD)


def stale_policy_hold(sysfs: Sysfs) -> tuple[str, int | None] | None:
    """(value, pid) of a hold whose run died (the bus lock is free), or None."""
    data = _read(sysfs, POLICY_HOLD)
    if not data or "value" not in data:
        return None
    if locks.is_held_elsewhere(sysfs, "bus.lock"):
        return None
    return str(data["value"]), data.get("pid")


def journals(sysfs: Sysfs) -> list[str]:
    """Device names that have a journal file (for listing)."""
    try:
        dfd = runstate.open_run_dir(sysfs, create=False)
    except (OSError, UnsafePath):
        return []
    try:
        names = os.listdir(dfd)
    except OSError as e:
        if e.errno == errno.EACCES:
            return []
        raise
    finally:
        os.close(dfd)
    return sorted(
        runstate.unkey(n.removesuffix(".journal"))
        for n in names
        if n.endswith(".journal") and not n.startswith(".")
    )
