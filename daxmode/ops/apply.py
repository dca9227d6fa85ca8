"""``daxmode apply``: bring devices to the modes the configuration asks for.

Idempotent by construction: each device goes through :func:`daxmode.modes.set_mode`,
which plans nothing for a device already in its mode, so running apply twice (or from
udev on every hot-plug) changes a device at most once.  A failure on one device does not
stop the others; each gets its own result line and the caller exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from daxmode.errors import DaxmodeError
from daxmode.kernel.devices import bus_device_names, device_facts, read_device, resolve_name
from daxmode.modes import Mode, Options, Progress, set_mode
from daxmode.ops import config as cfgmod
from daxmode.signals import Interrupted
from daxmode.sysfs import Sysfs

CHANGED = "changed"
UNCHANGED = "unchanged"
WOULD_CHANGE = "would-change"
NO_RULE = "no-rule"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass
class ApplyResult:
    device: str
    status: str
    rule: str | None = None  # file:line of the rule that applied
    start: str | None = None  # mode before
    target: str | None = None  # mode the rule asks for
    message: str = ""
    exit_code: int = 0
    plan: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """``apply --json``: the modes before and asked for are ``from``/``to``, as ``set --json``."""
        out: dict[str, object] = {"chardev": self.device, "status": self.status}
        for k, v in (("rule", self.rule), ("from", self.start), ("to", self.target)):
            if v is not None:
                out[k] = v
        if self.message:
            out["message"] = self.message
        if self.status == FAILED:
            out["exit_code"] = self.exit_code
        if self.plan:
            out["plan"] = self.plan
        return out


def apply(
    sysfs: Sysfs,
    devices: Iterable[str] | None = None,
    *,
    dry_run: bool = False,
    config: cfgmod.Config | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> list[ApplyResult]:
    """One result per device (all dax-bus devices, or those named).

    A malformed configuration raises ConfigError before any device is touched; an
    explicitly named device that does not exist raises UnknownDevice.
    """
    cfg = config if config is not None else cfgmod.load(sysfs)
    if devices:
        names = [resolve_name(sysfs, d) for d in devices]
        for n in names:
            read_device(sysfs, n)  # UnknownDevice, listing the devices that exist
    else:
        names = bus_device_names(sysfs)
    return [_apply_one(sysfs, cfg, n, dry_run, log, progress) for n in names]


def _apply_one(
    sysfs: Sysfs,
    cfg: cfgmod.Config,
    name: str,
    dry_run: bool,
    log: Callable[[str], None] | None,
    progress: Callable[[Progress], None] | None,
) -> ApplyResult:
    res = ApplyResult(name, FAILED)
    try:
        facts = device_facts(sysfs, name)
        entry = cfgmod.resolve(cfg, facts)
        dev = read_device(sysfs, name)
        res.start = dev.mode_name
        if entry is None:
            res.status = NO_RULE
            return res
        res.rule = entry.where
        res.target = entry.mode.value
        if dev.size == 0:
            res.status = SKIPPED
            res.message = "size 0 (an unallocated seed); nothing can bind it"
            return res
        if dev.mode is entry.mode and entry.mode is not Mode.SYSTEM_RAM:
            # nothing to plan (set_mode would do nothing either); also works without root
            res.status = UNCHANGED
            res.message = f"already {entry.mode.value}"
            return res
        opts = Options(
            force=entry.force,
            online=entry.online,
            movable=entry.movable,
            dry_run=dry_run,
            log=log,
            progress=progress,
        )
        out = set_mode(sysfs, name, entry.mode, opts)
        if dry_run:
            res.plan = [a.render() for a in out.plan.actions]
            res.status = WOULD_CHANGE if res.plan else UNCHANGED
        else:
            res.status = CHANGED if out.changed else UNCHANGED
            res.message = out.summary().split(": ", 1)[-1]
            if out.warnings:
                res.message += "; " + "; ".join(out.warnings)
    except Interrupted:
        raise  # Ctrl-C stops apply (the device in progress was rolled back), not just one device
    except DaxmodeError as e:
        res.status = FAILED
        res.message = str(e)
        res.exit_code = e.exit_code
    return res


def exit_code(results: list[ApplyResult]) -> int:
    """0 if nothing failed, else the code of the first failure (codes say what went wrong)."""
    for r in results:
        if r.status == FAILED:
            return r.exit_code or 1
    return 0
