"""``daxmode famfs mount`` / ``umount``: famfs served by daxmode's own FUSE server.

:func:`mount` checks everything it can before touching anything (root, /dev/fuse, the mount
point, the device and its mode, the data path), then starts the server (:mod:`.mountserver`):
in the background by default (``fork``, no second interpreter start-up), returning once the mount
is live; in this process with ``foreground``.  The server switches the device to the mode its
data path needs (devdax for ``copy``, fsdev for ``dax``) under the device lock, refuses a log
that fails fsck, mounts, answers INIT, and only then reports success; it puts the mode back when
the file system is unmounted, on any failure and on SIGTERM (which unmounts cleanly).

:func:`umount` unmounts and waits for the server to restore the mode; if the server is gone
(``kill -9``) it restores the mode itself from the server's record (:mod:`.records`) and says
so.  The mount line in /proc/self/mountinfo names the device as its source and has fstype
``fuse.famfs``, which is what the mode manager checks before it lets a device leave its mode.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from daxmode import errors as E
from daxmode.errors import (
    BadMode,
    DaxmodeError,
    DeviceBusy,
    FamfsError,
    InvalidArgument,
    KernelRefused,
    LeftPartial,
    NotRoot,
)
from daxmode.famfs.mount import attach as A
from daxmode.famfs.mount import records as S
from daxmode.famfs.mount.handlers import COPY, DATA_PATHS, DAX
from daxmode.famfs.mount.spec import (
    AUTO,
    FSTYPE,
    V1,
    MountResult,
    Target,
    UmountResult,
    error_from,
    umount_refused,
)
from daxmode.fsdev import dax_info, looks_like_device, open_image
from daxmode.fuse import kernel as K
from daxmode.kernel.devices import resolve_name
from daxmode.kernel.features import detect_kernel
from daxmode.kernel.mountpoint import MNT_DETACH, MountPoint, hold_mountpoint, open_mountpoint
from daxmode.kernel.mounts import mount_at, mounts_using
from daxmode.sysfs import Sysfs

PROBE_DIR = "probe"  # in the run directory: the mount point of the FUSE INIT probe
UMOUNT_WAIT = 180.0
"""Seconds ``umount`` waits for the server to restore the mode (a TCG guest switches slowly)."""


# --- checks (nothing changes) -------------------------------------------------------------------
def check_mountpoint(sysfs: Sysfs, path: str) -> str:
    """The absolute mount point if :func:`hold_mountpoint` accepts it (nothing is kept open; the
    server holds it again and mounts on that handle)."""
    with hold_mountpoint(sysfs, path) as mp:
        return mp.path


def resolve_target(sysfs: Sysfs, target: str) -> Target:
    """A device (UnknownDevice if there is none by that name) or an image file."""
    if os.path.lexists(target) and not looks_like_device(target):
        path = os.path.abspath(target)
        fd = open_image(path, writable=False)  # a regular file by its own path, or refused
        try:
            return Target("image", path, size=os.fstat(fd).st_size)
        finally:
            os.close(fd)
    if not looks_like_device(target):
        raise InvalidArgument(f"{target}: neither a dax device (daxX.Y) nor an image file")
    info = dax_info(sysfs, resolve_name(sysfs, target))
    return Target("device", f"/dev/{info.name}", info.name, info.mode, info.size)


def check_device(sysfs: Sysfs, t: Target) -> None:
    """Refuse a device that is mounted, unbound, foreign-bound, or system-ram with memory online."""
    from daxmode.kernel.devices import get_device
    from daxmode.kernel.memory import device_memory

    assert t.device is not None
    users = mounts_using(sysfs, t.device)
    if users:
        m = users[0]
        raise DeviceBusy(f"{t.device} is already mounted at {m.mount_point} ({m.fstype})")
    if t.mode is None:
        raise BadMode(f"{t.device} has no driver bound; bind it first (daxmode set {t.device} devdax)")
    if t.mode == "system-ram":
        mem = device_memory(sysfs, get_device(sysfs, t.device))
        if mem is None or mem.online:
            n = "some" if mem is None else str(len(mem.online))
            raise DeviceBusy(
                f"{t.device} is in system-ram mode with {n} memory block(s) online; famfs needs its memory: "
                f"daxmode set {t.device} devdax --force"
            )
    elif t.mode not in ("devdax", "fsdev"):
        raise DeviceBusy(f"{t.device} is bound to {t.mode}, which daxmode does not manage")


def choose_data_path(sysfs: Sysfs, t: Target, requested: str) -> tuple[str, str]:
    """(data path, why).  ``dax`` needs a famfs kernel that offers FUSE_DAX_FMAP to us at INIT:
    kallsyms tells a famfs kernel from a fuse-iomap one (both use INIT bit 43), and a throw-away
    probe mount shows whether the flag is really offered (the famfs fuse series V10 02/10 offers it only
    to a mounter with CAP_SYS_RAWIO).  ``famfs-v1`` needs the standalone famfs module (loaded, or
    installed for this kernel); auto picks it on such a kernel when it has no fuse famfs support."""
    if requested not in (AUTO, V1, *DATA_PATHS):
        raise InvalidArgument(f"--data-path {requested}: choose auto, dax, copy or {V1}")
    if requested == COPY:
        return COPY, "requested"
    if t.kind == "image":
        if requested in (DAX, V1):
            raise FamfsError(f"{t.source} is an image file: the {requested} data path needs a dax device")
        return COPY, "image file"
    ks = detect_kernel(sysfs)
    v1 = ks.famfs_v1 or ks.v1_module_installed
    if requested == V1 or (requested == AUTO and v1 and not ks.fuse_famfs):
        if not v1:
            raise FamfsError(f"--data-path {V1}: kernel {ks.release or '?'} has no standalone famfs module")
        return V1, "standalone famfs kernel module" + (" (requested)" if requested == V1 else "")
    if not ks.fuse_famfs:
        why = f"kernel {ks.release or '?'} has no famfs fuse support (no famfs_fuse_iomap_begin in kallsyms)"
        if requested == DAX:
            raise FamfsError(f"--data-path dax: {why}; use --data-path copy")
        return COPY, "stock kernel: " + why.split(" has ", 1)[1]
    if not ks.fsdev_driver:
        if requested == DAX:
            raise FamfsError("--data-path dax: the fsdev_dax driver is not available (modprobe fsdev_dax)")
        return COPY, "famfs kernel without the fsdev_dax driver"
    from daxmode import runstate

    try:  # the probe's mount point goes inside the checked run/daxmode
        probe = A.probe_init(os.path.join(runstate.run_dir(sysfs), PROBE_DIR))
    except OSError as e:
        raise KernelRefused(f"probing the kernel's FUSE INIT flags failed: {e}") from None
    if not probe.dax_fmap:
        why = "the famfs kernel did not offer FUSE_DAX_FMAP at INIT (needs CAP_SYS_RAWIO)"
        if requested == DAX:
            raise FamfsError(f"--data-path dax: {why}")
        return COPY, why
    return DAX, "famfs kernel offered FUSE_DAX_FMAP"


def precheck(sysfs: Sysfs, target: str, mountpoint: str, data_path: str) -> tuple[Target, str, str, str]:
    """Every check :func:`mount` makes before changing anything: (target, mount point, path, why)."""
    if data_path not in (AUTO, V1, *DATA_PATHS):
        raise InvalidArgument(f"--data-path {data_path}: choose auto, dax, copy or {V1}")
    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot("daxmode famfs mount needs root: it mounts, and switches the device's mode")
    if not os.path.exists(K.DEV_FUSE):
        raise KernelRefused(f"{K.DEV_FUSE} does not exist: the kernel has no FUSE (modprobe fuse)")
    t = resolve_target(sysfs, target)
    mp = check_mountpoint(sysfs, mountpoint)
    if t.kind == "device":
        check_device(sysfs, t)
    else:
        for r in S.records(sysfs):
            if r.source == t.source and S.server_alive(r):
                raise DeviceBusy(f"{t.source} is already mounted at {r.mountpoint}")
    path, why = choose_data_path(sysfs, t, data_path)
    return t, mp, path, why


# --- mount --------------------------------------------------------------------------------------
def mount(
    sysfs: Sysfs,
    target: str,
    mountpoint: str,
    *,
    data_path: str = AUTO,
    foreground: bool = False,
    on_ready: Callable[[MountResult], None] | None = None,
) -> MountResult:
    """Mount the famfs on ``target`` (dax device or image) at ``mountpoint``; see the module docstring.

    Background: returns the live mount's :class:`MountResult`.  Foreground: calls ``on_ready(result)``
    once the mount is live, serves until it is unmounted, then returns the result."""
    from daxmode.famfs.mount.server import Session

    t, mp, path, why = precheck(sysfs, target, mountpoint, data_path)
    if path == V1:  # the kernel serves the files: nothing runs in the background or foreground
        from daxmode.famfs.mount import v1

        return v1.mount(sysfs, t, mp, why, restore_mode)
    if foreground:
        sess = Session(sysfs, t, mp, path, why)
        res = sess.run(on_ready)
        return res
    return _spawn(sysfs, t, mp, path, why)


def _spawn(sysfs: Sysfs, t: Target, mp: str, path: str, why: str) -> MountResult:
    """Start the server as a daemon (double fork: it is never a child of the caller, so a long-lived
    caller collects no zombie); wait on a pipe for "live" or the error that stopped it."""
    from daxmode.famfs.mount.server import Session

    S.ensure_dir(sysfs)
    logfile = S.log_path(sysfs, mp)
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)  # the intermediate child: the server is orphaned to init
            _daemon_stdio(str(logfile))
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            Session(sysfs, t, mp, path, why, log_file=str(logfile)).run(_pipe_ready(wfd), report=wfd)
            code = 0
        except DaxmodeError as e:
            code = e.exit_code
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # the intermediate child exits at once
    msg = _read_report(rfd)
    os.close(rfd)
    if msg is None:  # the server died before saying anything: clean up after it like umount does
        steps = recover(sysfs, mp)
        raise E.RolledBack(f"the mount server died while mounting (see {logfile}); " + "; ".join(steps))
    if not msg.get("ok"):
        raise error_from(msg)
    return MountResult(**msg["result"])


def _daemon_stdio(logfile: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # The CLI's streams may be objects of their own (click's test runner): log to the fds.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _pipe_ready(wfd: int):
    def ready(res: MountResult) -> None:
        os.write(wfd, (json.dumps({"ok": True, "result": res.to_dict()}) + "\n").encode())
        os.close(wfd)

    return ready


def _read_report(rfd: int) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = os.read(rfd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.decode()) if data.strip() else None
    except ValueError:
        return None


# --- umount -------------------------------------------------------------------------------------
def _wait_gone(rec: S.MountRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while S.server_alive(rec):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(rec.pid, os.WNOHANG)  # our own child in tests and foreground callers
        time.sleep(0.05)
    return True


def hold_for_umount(mp: str) -> MountPoint | None:
    """The mount point's parent held by handle, for an unmount (UnsafePath for a symlink); None if
    it no longer exists (nothing can be mounted there)."""
    try:
        return open_mountpoint(mp, entry=False)
    except InvalidArgument:
        return None


def _detach(mp: str, lazy: bool) -> str:
    held = hold_for_umount(mp)
    if held is None:
        return f"{mp} was no longer mounted"
    with held:
        try:
            held.umount(MNT_DETACH if lazy else 0)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return f"{mp} was no longer mounted"
            raise umount_refused(mp, e) from None
    return f"unmounted {mp}" + (" (lazily: it goes away when the last open file is closed)" if lazy else "")


def restore_mode(sysfs: Sysfs, rec: S.MountRecord) -> str | None:
    """Put the device back in the mode it had before the mount, if it is not; a line saying so."""
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.runstate.locks import device_lock

    if rec.device is None or rec.previous_mode is None:
        return None
    now = dax_info(sysfs, rec.device).mode
    if now == rec.previous_mode:
        return None
    if now != rec.mode:  # someone changed it since the mount: not ours to undo
        return f"{rec.device} is in {now} mode (changed since the mount); left as is"
    users = mounts_using(sysfs, rec.device)
    if users:
        raise LeftPartial(
            f"{rec.device} is still mounted at {users[0].mount_point}; left in {now} mode "
            f"(was {rec.previous_mode} before the mount)"
        )
    with device_lock(sysfs, rec.device):
        set_mode(sysfs, rec.device, Mode.parse(rec.previous_mode), Options(online=False))
    return f"{rec.device}: {now} -> {rec.previous_mode} (its mode before the mount)"


def recover(sysfs: Sysfs, mountpoint: str) -> list[str]:
    """Clean up after a server that is gone: detach its mount, restore the mode, drop the record."""
    mp = os.path.abspath(mountpoint)
    rec = S.load(sysfs, mp)
    steps = []
    if mount_at(sysfs, mp) is not None:
        steps.append(_detach(mp, lazy=True))
    if rec is not None:
        try:
            line = restore_mode(sysfs, rec)
        except DaxmodeError as e:
            line = f"restoring the mode failed: {e}"
        if line:
            steps.append(line)
        S.remove(sysfs, mp)
    return steps or ["nothing was changed"]


def umount(
    sysfs: Sysfs, mountpoint: str, *, lazy: bool = False, timeout: float = UMOUNT_WAIT
) -> UmountResult:
    """Unmount a daxmode famfs mount and restore its device's mode; what was done."""
    from daxmode.famfs.mount.server import request_umount

    if sysfs.is_real and os.geteuid() != 0:
        raise NotRoot("daxmode famfs umount needs root")
    mp = os.path.abspath(mountpoint)
    held = hold_for_umount(
        mp
    )  # refuses a symlink (or a path through one) before anything is asked of a server
    if held is not None:
        held.close()
    rec = S.load(sysfs, mp)
    m = mount_at(sysfs, mp)
    if rec is None:
        if m is None:
            raise InvalidArgument(f"{mp} is not mounted")
        if m.fstype != FSTYPE:
            raise FamfsError(f"{mp} is not a famfs mount ({m.fstype} from {m.source})")
        steps = [_detach(mp, lazy), "no daxmode record for this mount: the device's mode was left as is"]
        return UmountResult(mp, m.source, None, None, steps)
    if rec.data_path == V1:
        from daxmode.famfs.mount import v1

        return UmountResult(mp, rec.source, rec.device, None, v1.umount(sysfs, rec, lazy, restore_mode))
    res = UmountResult(mp, rec.source, rec.device, rec.pid)
    steps = res.steps
    what = rec.device or rec.source
    alive = S.server_alive(rec)
    if alive:
        got = request_umount(sysfs, rec, lazy, timeout)
        if got is not None:
            server_steps, final = got
            steps += server_steps
            if not final.get("ok"):
                raise error_from(final)
            if final.get("pending"):
                steps.append(f"the server (pid {rec.pid}) serves the open files, then restores {what}")
                res.lazy = True
                return res
            if not _wait_gone(rec, 30):
                raise LeftPartial(f"{mp} was unmounted but its server (pid {rec.pid}) is still running")
            steps.append(f"server (pid {rec.pid}) stopped")
        else:  # alive but not listening (still mounting?): unmount under it and let it clean up
            if m is not None:
                steps.append(_detach(mp, lazy))
            if not _wait_gone(rec, timeout):
                raise LeftPartial(f"{mp}: its server (pid {rec.pid}) did not finish in {timeout:.0f} s")
            steps.append(f"server (pid {rec.pid}) stopped")
    else:
        steps.append(f"server (pid {rec.pid}) was not running (killed?); cleaning up after it")
        if m is not None:
            steps.append(_detach(mp, lazy))
    line = restore_mode(sysfs, rec)
    if line:
        steps.append(line)
    elif rec.device and not alive:
        steps.append(f"{rec.device} is in {rec.previous_mode} mode, as before the mount")
    S.remove(sysfs, mp)
    return res


# --- what is mounted ------------------------------------------------------------------------------
@dataclass
class MountStatus:
    """One daxmode famfs mount as ``famfs status`` shows it."""

    mountpoint: str
    source: str
    device: str | None
    data_path: str
    mode: str | None
    previous_mode: str | None
    server_pid: int
    server_running: bool
    mounted: bool
    """The kernel still has the mount (fuse.famfs at the mount point)."""
    phase: str
    skipped_entries: list[str] = field(default_factory=list)
    """Log entries the live server skipped (extent validator refusals, bad slots or paths), each
    one line; the first 100 (the server's log has them all)."""

    @property
    def state(self) -> str:
        if self.server_running and self.mounted:
            return "live"
        return "server not running" if self.mounted else "stale"

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["chardev"] = d.pop("device")
        return d


def mounts(sysfs: Sysfs) -> list[MountStatus]:
    """daxmode's famfs mounts: record, server liveness and whether the kernel still has the mount."""
    out = []
    for r in S.records(sysfs):
        m = mount_at(sysfs, r.mountpoint)
        alive = S.server_alive(r)
        mounted = m is not None and m.fstype == (r.fstype or FSTYPE)
        skipped: list[str] = []
        if alive and mounted:  # the entries the server refused or skipped, each named once
            skipped = _skipped_entries(r.mountpoint)
        out.append(
            MountStatus(
                mountpoint=r.mountpoint,
                source=r.source,
                device=r.device,
                data_path=r.data_path,
                mode=r.mode,
                previous_mode=r.previous_mode,
                server_pid=r.pid,
                server_running=alive,
                mounted=mounted,
                phase=r.phase,
                skipped_entries=skipped,
            )
        )
    return out


def _skipped_entries(mountpoint: str, timeout: float = 2.0) -> list[str]:
    """The log entries a live server skipped (refused by the extent validator, bad slots, bad
    paths), asked through the mount in a thread: a wedged server must not hang ``status``."""
    got: list[list[str]] = []

    def ask() -> None:
        with contextlib.suppress(FamfsError, ValueError, TypeError, KeyError):
            got.append([str(x) for x in server_stats(mountpoint)["namespace"]["errors"]])  # type: ignore[index]

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    return got[0] if got else []


def server_stats(mountpoint: str) -> dict[str, object]:
    """The live server's counters (its ``user.daxmode.stats`` xattr on the mount's root)."""
    from daxmode.famfs.mount.handlers import STATS_XATTR

    try:
        return json.loads(os.getxattr(mountpoint, STATS_XATTR.decode()))
    except OSError as e:
        raise FamfsError(f"{mountpoint}: no daxmode server answers ({e.strerror})") from None
