"""Install the udev rule and systemd unit that run ``daxmode apply`` when a dax device appears.

Two flavours (daxmode/data/):

* ``systemd``: ``90-daxmode.rules`` tags the device for systemd and wants
  ``daxmode-apply@<dev>.service`` (a oneshot running ``daxmode apply <dev>``), the way
  daxctl's ``90-daxctl-device.rules`` + ``daxdev-reconfigure@.service`` work (ndctl v81,
  ``daxctl/90-daxctl-device.rules`` and ``daxctl/daxdev-reconfigure@.service``).
* ``run``: without systemd as PID 1, ``90-daxmode-run.rules`` has udev start
  ``daxmode apply <dev>`` itself, detached, logging to /run/daxmode-apply.log.

Files go under the Sysfs root (``etc/udev/rules.d``, ``etc/systemd/system``) or under
``prefix`` (a packaging DESTDIR).  Both flavours share the rule's file name, so one
install replaces the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from daxmode.errors import InvalidArgument, NotRoot
from daxmode.sysfs import Sysfs

RULES_DIR = "etc/udev/rules.d"
UNIT_DIR = "etc/systemd/system"
RULE_NAME = "90-daxmode.rules"
UNIT_NAME = "daxmode-apply@.service"
FLAVOURS = ("auto", "systemd", "run")


@dataclass
class UnitsReport:
    flavour: str
    installed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False
    """Nothing was written: ``installed`` and ``removed`` are what would be."""

    def lines(self) -> list[str]:
        """What ``install-units``/``uninstall-units`` print: "would ..." on a dry run."""
        would = "would " if self.dry_run else ""
        out = [f"{would}{'install' if would else 'installed'} {p}" for p in self.installed]
        out += [f"{would}{'remove' if would else 'removed'} {p}" for p in self.removed]
        out += [f"ran {c}" for c in self.reloaded]
        return out + [f"note: {n}" for n in self.notes]

    def to_json(self) -> dict[str, object]:
        return {
            "flavour": self.flavour,
            "installed": self.installed,
            "removed": self.removed,
            "reloaded": self.reloaded,
            "notes": self.notes,
            "dry_run": self.dry_run,
        }


def template(name: str) -> str:
    """A shipped file (package data) as text."""
    return resources.files("daxmode").joinpath("data", name).read_text(encoding="utf-8")


def default_executable() -> str:
    """The daxmode command to put into the rule: the running one if it is a script, else PATH's."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "daxmode" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("daxmode")
    if found:
        return os.path.abspath(found)
    return "/usr/bin/daxmode"


def systemd_running(sysfs: Sysfs) -> bool:
    """sd_booted(): systemd is PID 1 iff /run/systemd/system is a directory."""
    return sysfs.is_dir("run/systemd/system")


def _base(sysfs: Sysfs, prefix: str | None) -> Path:
    return Path(prefix or sysfs.root)


def render(flavour: str, executable: str) -> dict[str, str]:
    """Relative path -> content for a flavour (``systemd`` or ``run``)."""
    if any(c.isspace() or c in "'\"\\" for c in executable):
        raise InvalidArgument(f"daxmode path {executable!r} has spaces or quotes; udev cannot run it")
    src = "90-daxmode.rules" if flavour == "systemd" else "90-daxmode-run.rules"
    files = {f"{RULES_DIR}/{RULE_NAME}": template(src).replace("@DAXMODE@", executable)}
    if flavour == "systemd":
        files[f"{UNIT_DIR}/{UNIT_NAME}"] = template("daxmode-apply@.service").replace("@DAXMODE@", executable)
    return files


def install(
    sysfs: Sysfs,
    *,
    prefix: str | None = None,
    flavour: str = "auto",
    executable: str | None = None,
    dry_run: bool = False,
) -> UnitsReport:
    if flavour not in FLAVOURS:
        raise InvalidArgument(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS)}")
    if flavour == "auto":
        flavour = "systemd" if systemd_running(sysfs) else "run"
    exe = executable or default_executable()
    report = UnitsReport(flavour, dry_run=dry_run)
    base = _base(sysfs, prefix)
    files = render(flavour, exe)
    stale = [] if flavour == "systemd" else [f"{UNIT_DIR}/{UNIT_NAME}"]
    for rel, content in files.items():
        target = base / rel
        report.installed.append(str(target))
        if dry_run:
            continue
        _write(target, content)
    for rel in stale:
        target = base / rel
        if target.exists():
            report.removed.append(str(target))
            if not dry_run:
                _unlink(target)
    if flavour == "run":
        report.notes.append("no systemd: udev runs daxmode apply itself; log in /run/daxmode-apply.log")
    if not dry_run and prefix is None:
        _reload(sysfs, report, systemd=flavour == "systemd" or bool(report.removed))
    return report


def uninstall(sysfs: Sysfs, *, prefix: str | None = None, dry_run: bool = False) -> UnitsReport:
    report = UnitsReport("any", dry_run=dry_run)
    base = _base(sysfs, prefix)
    for rel in (f"{RULES_DIR}/{RULE_NAME}", f"{UNIT_DIR}/{UNIT_NAME}"):
        target = base / rel
        if target.exists() or target.is_symlink():
            report.removed.append(str(target))
            if not dry_run:
                _unlink(target)
    if not report.removed:
        report.notes.append("nothing installed")
    if not dry_run and prefix is None and report.removed:
        _reload(sysfs, report, systemd=True)
    return report


def _write(target: Path, content: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except PermissionError:
        raise NotRoot(f"writing {target} needs root") from None
    except OSError as e:
        raise InvalidArgument(f"cannot write {target}: {e.strerror}") from None


def _unlink(target: Path) -> None:
    try:
        target.unlink()
    except PermissionError:
        raise NotRoot(f"removing {target} needs root") from None
    except OSError as e:
        raise InvalidArgument(f"cannot remove {target}: {e.strerror}") from None


def _reload(sysfs: Sysfs, report: UnitsReport, *, systemd: bool) -> None:
    """Tell the running udevd / systemd about the new files; only for the live root."""
    if not sysfs.is_real:
        return
    cmds = []
    if shutil.which("udevadm") and sysfs.exists("run/udev/control"):
        cmds.append(["udevadm", "control", "--reload"])
    if systemd and systemd_running(sysfs) and shutil.which("systemctl"):
        cmds.append(["systemctl", "daemon-reload"])
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            report.reloaded.append(" ".join(cmd))
        else:
            report.notes.append(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.returncode}")
