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
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from daxmode.errors import InvalidArgument, NotRoot, UnsafePath
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
    """The daxmode this process runs as: its console script (``argv[0]``), or, under
    ``python -m daxmode``, the script beside this interpreter.  Never a PATH search: whatever is
    first on PATH is not necessarily what root should run for every new device."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "daxmode" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "daxmode")
    if os.path.isfile(beside):
        return beside
    raise InvalidArgument("cannot tell which daxmode script runs this; give it with --daxmode PATH")


def _chain(path: str) -> list[str]:
    """``/``, ``/a``, ``/a/b``, ... ``path`` (absolute, normalised)."""
    out = ["/"]
    for part in path.strip("/").split("/"):
        if part:
            out.append(os.path.join(out[-1], part))
    return out


def _unsafe_component(p: str) -> str | None:
    me = os.geteuid()
    try:
        st = os.lstat(p)
    except OSError as e:
        return f"{p}: {e.strerror}"
    if st.st_uid not in (0, me):
        return f"{p} is owned by uid {st.st_uid}"
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o022:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and st.st_uid == 0:
        return None  # root's sticky directory (/tmp): nobody else can replace what is in it
    return f"{p} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"


def untrusted(executable: str, _depth: int = 0) -> str | None:
    """Why root should not run ``executable`` for every new device, or None.

    It and every directory above it, on its path as given and after symlinks, must be owned by
    root (or whoever runs this) and not writable by group or others; the same for the interpreter
    its ``#!`` line names.  Otherwise anyone who can write there chooses what root runs."""
    for path in (os.path.abspath(executable), os.path.realpath(executable)):
        for p in _chain(path):
            why = _unsafe_component(p)
            if why:
                return why
    real = os.path.realpath(executable)
    if not os.path.isfile(real):
        return f"{executable} is not a file"
    try:
        with open(real, "rb") as f:
            first = f.readline(256)
    except OSError as e:
        return f"{real}: {e.strerror}"
    if first.startswith(b"#!"):
        interp = first[2:].split()
        if interp and interp[0].startswith(b"/"):
            if _depth >= 4:
                return f"{real}: its #! interpreters go on and on"
            return untrusted(os.fsdecode(interp[0]), _depth + 1)
    return None


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
    exe = os.path.abspath(executable) if executable else default_executable()
    files = render(flavour, exe)
    if prefix is None:  # with a prefix the path names a file on the system being packaged
        why = untrusted(exe)
        if why:
            would = "would refuse" if dry_run else "refusing"
            raise UnsafePath(f"{would} to install units that run {exe} as root: {why}")
    report = UnitsReport(flavour, dry_run=dry_run)
    base = _base(sysfs, prefix)
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
