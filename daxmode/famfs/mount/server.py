"""One famfs mount's server process: set up under the device lock, serve, tear down.

Set-up order (each step undone on any failure, exception or signal, newest first):

1. write the state record (phase "starting"), take the device lock;
2. copy path: switch the device to devdax if needed, map it, fsck, play the log;
   dax path from devdax: map, fsck, play, unmap, switch to fsdev (an fsdev device cannot be read);
   dax path from fsdev: nothing yet (the metadata is read through the mount, step 4);
3. mount(2) with fstype ``fuse.famfs`` and the device as source, answer INIT (the dax path needs
   the kernel to have offered FUSE_DAX_FMAP), start the worker threads;
4. dax path: map ``.meta/.superblock`` and ``.meta/.log`` through the mount from this thread (the
   workers answer the OPEN and GET_FMAP this causes), check the superblock against what was read
   before the switch (or fsck it now), and read the log through the mount from then on;
5. record phase "live", release the lock, report.

Then it serves until the file system is unmounted.  A ``umount`` request on the control socket
(``daxmode famfs umount``) or SIGTERM unmounts: the server first drops its own mapping of the log
(on the dax path it keeps the mount busy), and takes it back if the unmount is refused.  Tear-down
closes /dev/fuse (releasing the kernel's hold on the dax device), unmaps, restores the mode under
the device lock, and deletes the record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from daxmode import cacheflush
from daxmode.errors import (
    DaxmodeError,
    FamfsError,
    KernelRefused,
    LeftPartial,
    RolledBack,
    UnsafePath,
)
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.media.identity import read_system_uuid
from daxmode.famfs.mount import attach as A
from daxmode.famfs.mount import records as S
from daxmode.famfs.mount.compat import FamfsCompat, shadow_dir
from daxmode.famfs.mount.handlers import COPY, DAX, Device, FamfsFuse
from daxmode.famfs.mount.metamap import MountLog
from daxmode.famfs.mount.namespace import Namespace
from daxmode.famfs.mount.spec import (
    FSTYPE,
    MODE_FOR,
    SUBTYPE,
    MountResult,
    Target,
    report_error,
    umount_refused,
)
from daxmode.fsdev import map_device, map_image
from daxmode.fuse import kernel as K
from daxmode.fuse.server import FuseError, Server, Stats
from daxmode.kernel.devices import node_path
from daxmode.kernel.mountpoint import MNT_DETACH, MountPoint, detach, hold_mountpoint
from daxmode.kernel.mounts import set_fuse_readahead
from daxmode.kernel.paths import fd_path
from daxmode.kernel.procs import process_start
from daxmode.signals import Interrupted
from daxmode.sizes import count
from daxmode.sysfs import Sysfs

WORKERS = 4
READ_AHEAD_KB = 8192
FIRST_REPLY = 15.0
"""Seconds an unmount request waits for the server's first answer (the unmount itself)."""


def control_name(mountpoint: str) -> str:
    """The control socket's name in the root-only run directory (runstate checks it: a real
    directory, ours, 0700), so no other user can bind it first or connect to it; both ends still
    check SO_PEERCRED.  Reached as /proc/self/fd/DIR/NAME: ``sun_path`` holds 108 bytes."""
    import hashlib

    return f"famfs-{hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]}.sock"


def _peer(c: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the other end: the client that connected, or the process that listens."""
    import struct

    creds = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class Session:
    """Mount, serve and unmount one famfs (see the module docstring)."""

    def __init__(
        self, sysfs: Sysfs, t: Target, mountpoint: str, data_path: str, why: str, *, log_file: str = ""
    ) -> None:
        self.sysfs = sysfs
        self.t = t
        self.mp = mountpoint
        self.path = data_path
        self.why = why
        self.log_file = log_file
        self.need = MODE_FOR[data_path] if t.device else None
        self.switched = False
        self.steps: list[str] = []
        self.stack = contextlib.ExitStack()  # the device/image mapping (copy path)
        self.ns: Namespace | None = None
        self.fs: FamfsFuse | None = None
        self.server: Server | None = None
        self.conn: A.Connection | None = None
        self.held: MountPoint | None = None
        self.conn_id: int | None = None
        self.mlog: MountLog | None = None
        self.stop_signal = 0
        self.rec: S.MountRecord | None = None
        self.live = False
        self.stats = Stats()
        self._umount_lock = threading.Lock()
        self._reporter: socket.socket | None = None
        self._control: socket.socket | None = None
        self.compat: FamfsCompat | None = None

    # --- logging and signals ------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} daxmode famfs {self.mp}: {msg}",
            file=sys.stderr,
            flush=True,
        )

    def step(self, msg: str) -> None:
        self.steps.append(msg)
        self.log(msg)
        if self._reporter is not None:
            with contextlib.suppress(OSError):
                self._reporter.sendall((json.dumps({"step": msg}) + "\n").encode())

    def _signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum
        if self.live:
            threading.Thread(target=self.unmount, args=(False, True), daemon=True).start()

    def _check(self) -> None:
        if self.stop_signal:
            sig = self.stop_signal
            raise Interrupted(sig, f"interrupted by {signal.Signals(sig).name} while mounting")

    # --- the whole life ----------------------------------------------------------------------------
    def run(
        self, on_ready: Callable[[MountResult], None] | None = None, *, report: int | None = None
    ) -> MountResult:
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                res = self._setup()
            except BaseException as e:
                err = self._failed(e)
                if report is not None:
                    report_error(report, err)
                raise err from None
            self.live = True
            if on_ready is not None:
                on_ready(res)
            if self.stop_signal:  # a signal during the last set-up steps
                threading.Thread(target=self.unmount, args=(False, True), daemon=True).start()
            assert self.server is not None
            self.server.wait()
            self.log("the file system was unmounted")
            try:
                self._teardown()
                self._done(ok=True)
            except DaxmodeError as e:
                self.log(f"tear-down failed: {e}")
                self._done(ok=False, err=e)
                raise
            return res
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _failed(self, e: BaseException) -> DaxmodeError:
        """Undo everything after a failed set-up; the error to report says what state is left."""
        if isinstance(e, KeyboardInterrupt):
            e = Interrupted(signal.SIGINT, "interrupted while mounting")
        elif not isinstance(e, DaxmodeError):
            if isinstance(e, OSError):
                e = KernelRefused(str(e))
            else:
                import traceback

                self.log(traceback.format_exc())
                e = DaxmodeError(f"{type(e).__name__}: {e}")
        switched = self.switched
        try:
            self._teardown()
        except DaxmodeError as e2:
            return LeftPartial(f"{e}; cleaning up also failed: {e2}")
        if switched:
            return RolledBack(f"{e}; {self.t.device} was returned to {self.t.mode} mode")
        return e

    # --- set-up ------------------------------------------------------------------------------------
    def _switch(self, mode: str) -> None:
        from daxmode.modes import Mode, Options, set_mode

        assert self.t.device is not None
        cur = self.t.mode if not self.switched else None
        set_mode(self.sysfs, self.t.device, Mode.parse(mode), Options())
        self.switched = True
        self.step(f"{self.t.device}: {cur or 'devdax'} -> {mode}")

    def _setup(self) -> MountResult:
        from daxmode.runstate.locks import device_lock

        t = self.t
        self.rec = S.MountRecord(
            self.mp, t.source, t.device, self.path, FSTYPE, previous_mode=t.mode, mode=self.need,
            pid=os.getpid(), pid_start=process_start(os.getpid()) or 0, log=self.log_file,
        )  # fmt: skip
        S.save(self.sysfs, self.rec)
        lock = device_lock(self.sysfs, t.device) if t.device else contextlib.nullcontext()
        with lock:
            if self.path == COPY:
                self._setup_copy()
            elif t.mode == "fsdev":
                self._mount_and_init()
                self._attach_via_mount(None)
            else:
                if t.mode != "devdax":
                    self._switch("devdax")
                sb_head = self._read_before_switch()
                self._check()
                self._switch("fsdev")
                self._check()
                self._mount_and_init()
                self._attach_via_mount(sb_head)
            self._check()
            self.rec.phase = "live"
            S.save(self.sysfs, self.rec)
        self._start_control()
        ns = self.ns
        assert ns is not None
        self.step(
            f"mounted {t.source} at {self.mp} ({FSTYPE}, data path {self.path}: {self.why}); "
            f"{count(ns.files, 'file')}, {count(ns.dirs, 'directory', 'directories')} "
            f"from {count(ns.played, 'log entry', 'log entries')}"
        )
        return MountResult(
            self.mp, t.source, t.device, self.path, self.why, t.mode, self.need, server_pid=os.getpid(),
            steps=list(self.steps), files=ns.files, directories=ns.dirs, entries=ns.played,
        )  # fmt: skip

    def _skipped(self, why: str) -> None:
        self.log(f"log entry skipped: {why}")

    def _fsck(self, buf: L.Bytes, size: int) -> L.Superblock:
        """Refuse a volume whose superblock or log header is bad; entries that fail (the extent
        validator's refusals, bad CRCs, missing parents) are skipped by the namespace as it plays,
        each named once in the server's log and in ``famfs status``, and the rest is served."""
        rep = fsck(buf, size)
        fatal = rep.fatal
        if fatal:
            more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
            raise FamfsError(
                f"{self.t.source}: refusing to mount a famfs that fails fsck: {fatal[0]}{more}; "
                f"run daxmode famfs fsck {self.t.device or self.t.source}"
            )
        assert rep.superblock is not None
        return rep.superblock

    def _is_master(self, sb: L.Superblock) -> bool:
        me = read_system_uuid(self.sysfs)
        return me is not None and me == sb.system_uuid

    def _setup_copy(self) -> None:
        t = self.t
        if t.device is not None and t.mode != "devdax":
            self._switch("devdax")
            self._check()
        if t.device is not None:
            m = self.stack.enter_context(map_device(self.sysfs, t.device, writable=True))
        else:
            m = self.stack.enter_context(map_image(t.source, writable=True))
        sb = self._fsck(m.buf, m.size)
        mv = memoryview(m.buf)
        self.stack.callback(mv.release)
        self.ns = self._namespace(
            sb, mv[L.LOG_OFFSET : L.LOG_OFFSET + sb.log_len], sync=m.sync, is_master=self._is_master(sb),
            device_size=m.size, on_error=self._skipped,
        )  # fmt: skip
        self.stack.callback(self.ns.detach_log)  # runs before mv.release (ExitStack is LIFO)
        self.fs = FamfsFuse(
            self.ns, COPY, device=Device(mv, m.sync, m.size), stats=self.stats, info=self._info
        )
        self._check()
        self._mount_and_init()

    def _read_before_switch(self) -> bytes:
        """Dax path: the device is still devdax: map, fsck and play the log, then unmap."""
        assert self.t.device is not None
        with map_device(self.sysfs, self.t.device, writable=False) as m:
            sb = self._fsck(m.buf, m.size)
            mv = memoryview(m.buf)
            try:
                head = bytes(mv[: L.SB_SIZE])
                self.ns = self._namespace(
                    sb,
                    mv[L.LOG_OFFSET : L.LOG_OFFSET + sb.log_len],
                    sync=m.sync,
                    is_master=self._is_master(sb),
                    device_size=m.size,
                    on_error=self._skipped,
                )
                self.ns.detach_log()
            finally:
                mv.release()
        self.fs = FamfsFuse(self.ns, DAX, daxdev=self.t.source, stats=self.stats, info=self._info)
        return head

    def _mount_and_init(self) -> None:
        if self.ns is None:  # dax path from fsdev: the metadata comes through the mount
            self.ns = self._namespace(None, None, device_size=self.t.size or None, on_error=self._skipped)
            self.fs = FamfsFuse(self.ns, DAX, daxdev=self.t.source, stats=self.stats, info=self._info)
        assert self.fs is not None and self.compat is not None
        self.compat.install(self.fs, lambda: self.conn.fd if self.conn else None, self._spare_worker)
        self.compat.start_rest()
        # The final checks and the mount on one handle: a path swapped since the command's checks
        # (or during these) cannot send the mount anywhere else.
        self.held = hold_mountpoint(self.sysfs, self.mp)
        self.conn = A.mount_fuse(self.t.source, self.held, SUBTYPE)
        self.server = Server(self.conn.fd, self.fs, workers=WORKERS, log=self.log, stats=self.stats)
        try:
            init = self.server.handshake()
        except FuseError as e:
            if e.errno == errno.EOPNOTSUPP:
                raise FamfsError(f"the kernel did not offer FUSE_DAX_FMAP at INIT: {e}") from None
            raise KernelRefused(f"FUSE INIT failed: {e}") from None
        self.server.start()
        self.log(f"INIT: FUSE 7.{init.minor}, flags {init.flags:#x}, max_write {init.max_write}")
        self._check_placed()
        self._set_readahead()

    def _check_placed(self) -> None:
        """The name must lead to this mount now (a directory renamed away before the attach takes
        the mount with it: refused and undone through the mount's own handle); then the handle is
        dropped (it would keep the mount busy)."""
        conn = self.conn
        assert conn is not None
        self.conn_id = os.minor(os.fstat(conn.mount_fd).st_dev)
        if not conn.placed():
            with contextlib.suppress(OSError):
                detach(conn.mount_fd)
            conn.release_mount_fd()
            raise UnsafePath(
                f"mount point {self.mp} was replaced while mounting (renamed, or swapped for a symlink); "
                "the mount was undone"
            )
        conn.release_mount_fd()

    def _namespace(self, *args: object, **kw: object) -> Namespace:
        """The mount's namespace, mirrored into the famfs shadow tree famfs's CLI reads
        (daxmode.famfs.mount.compat)."""
        if self.compat is None:
            volume = node_path(self.sysfs, self.t.device) if self.t.device else self.t.source
            self.compat = FamfsCompat(shadow_dir(S.ensure_dir(self.sysfs), self.mp), volume, self.log)
        return self.compat.namespace(*args, **kw)

    def _spare_worker(self) -> None:
        if self.server is not None:
            self.server.add_worker()

    def _set_readahead(self) -> None:
        """Copy path: a deeper readahead window for mmap (the bdi default is 128 KiB; 8 MiB measured
        1.4x faster mmap reads of a 1 GiB file); this mount's bdi only."""
        if self.path != COPY or self.conn_id is None:
            return
        set_fuse_readahead(self.conn_id, 1024)

    def _attach_via_mount(self, sb_head: bytes | None) -> None:
        """Dax path: read the superblock (and from now on the log) through the mount itself."""
        ns = self.ns
        assert ns is not None
        assert self.held is not None
        sbpath = os.path.join(self.mp, ".meta", ".superblock")
        try:
            with open(self.held.inside(".meta/.superblock"), "rb") as f:
                head = f.read(L.SB_SIZE)
        except OSError as e:
            raise FamfsError(f"reading {sbpath} through the DAX mount failed: {e.strerror}") from None
        if sb_head is not None and head != sb_head:
            raise FamfsError(f"{sbpath} read through the DAX mount differs from the device's superblock")
        if sb_head is None:
            problems = L.superblock_problems(head, self.t.size)
            if problems:
                raise FamfsError(f"{self.t.source}: {problems[0]}")
            sb = L.unpack_superblock(head)
            ns.is_master = self._is_master(sb)
            ns.attach_log(sb, None)
        self._open_log()
        if sb_head is None:  # nothing was checked before the mount: fsck what the mount shows
            assert self.mlog is not None and ns.sb is not None
            self.mlog.invalidate(None, 0, ns.sb.log_len)
            whole = bytearray(L.LOG_OFFSET + ns.sb.log_len)
            whole[: L.SB_SIZE] = head
            whole[L.LOG_OFFSET :] = self.mlog.buf
            self._fsck(whole, self.t.size)
        self._attach_log_view()

    def _open_log(self) -> None:
        assert self.ns is not None and self.ns.sb is not None
        assert self.held is not None
        path = os.path.join(self.mp, ".meta", ".log")
        try:
            self.mlog = MountLog(self.held.inside(".meta/.log"), self.ns.sb.log_len, cacheflush.get())
        except OSError as e:
            raise FamfsError(f"opening {path} through the DAX mount failed: {e.strerror}") from None

    def _attach_log_view(self) -> None:
        assert self.mlog is not None and self.ns is not None
        self.ns.set_log(self.mlog.view, self.mlog)

    def _info(self) -> dict[str, object]:
        return {"mountpoint": self.mp, "source": self.t.source, "pid": os.getpid(), "why": self.why}

    # --- unmounting -----------------------------------------------------------------------------
    def _drop_meta(self) -> None:
        if self.mlog is not None:
            assert self.ns is not None
            self.ns.detach_log()
            self.mlog.close()
            self.mlog = None

    def unmount(self, lazy: bool, from_signal: bool = False) -> None:
        """Unmount (control request or SIGTERM); DeviceBusy if files are open and not ``lazy``.

        A signal falls back to a lazy unmount: the server then serves until the last file closes.
        The unmount goes through the held directory, never by a name looked up again."""
        assert self.held is not None
        with self._umount_lock:
            had_meta = self.mlog is not None
            self._drop_meta()
            try:
                self.held.umount(MNT_DETACH if lazy else 0)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    self._not_there()
                    return
                if e.errno == errno.EBUSY and from_signal:
                    self.log("busy: detaching lazily; serving until the last open file is closed")
                    self.held.umount(MNT_DETACH)
                    self.step(f"unmounted {self.mp} lazily (files were open)")
                    return
                if had_meta:
                    self._open_log()
                    self._attach_log_view()
                raise umount_refused(self.mp, e) from None
            self.step(f"unmounted {self.mp}" + (" lazily" if lazy else ""))

    def _not_there(self) -> None:
        """Nothing is mounted on the held directory any more: unmounted already (the serving loop is
        ending), or moved (``mount --move``): abort the connection, so the unmount ends now with the
        server, wherever the mount went."""
        assert self.server is not None
        if self.server.wait(timeout=1):
            return
        if self.conn_id is not None and K.abort_connection(self.conn_id):
            self.step(
                f"{self.mp} no longer leads to this mount; its FUSE connection {self.conn_id} was aborted"
            )

    def _teardown(self) -> None:
        from daxmode.modes import Mode, Options, set_mode
        from daxmode.runstate.locks import device_lock

        self._drop_meta()
        if self.conn is not None:
            assert self.held is not None
            if self.conn.mount_fd >= 0:  # set-up failed before the mount was checked in place
                with contextlib.suppress(OSError):
                    detach(self.conn.mount_fd)
                self.conn.release_mount_fd()
            elif self.server is not None and not self.server.wait(timeout=0):
                with contextlib.suppress(OSError):  # still ours: the session has not ended
                    self.held.umount(MNT_DETACH)
            if self.server is not None and self.server.initialized.is_set():
                self.server.wait(timeout=10)
            os.close(self.conn.fd)  # the kernel drops its dax device holder with the connection
            self.conn = None
        if self.held is not None:
            self.held.close()
            self.held = None
        self.stack.close()
        self._stop_control()
        if self.compat is not None:
            self.compat.close()
            self.compat = None
        if self.switched and self.t.device is not None and self.t.mode is not None:
            with device_lock(self.sysfs, self.t.device):
                set_mode(self.sysfs, self.t.device, Mode.parse(self.t.mode), Options(online=False))
            self.switched = False
            self.step(f"{self.t.device}: {self.need} -> {self.t.mode} (its mode before the mount)")
        S.remove(self.sysfs, self.mp)

    # --- control socket ---------------------------------------------------------------------------
    def _start_control(self) -> None:
        from daxmode import runstate

        name = control_name(self.mp)
        dfd = runstate.open_run_dir(self.sysfs)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)  # a socket left by a server that was killed
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(f"{fd_path(dfd)}/{name}")
        finally:
            os.close(dfd)
        s.listen(4)
        self._control = s
        threading.Thread(target=self._control_loop, args=(s,), name="control", daemon=True).start()

    def _stop_control(self) -> None:
        from daxmode import runstate

        if self._control is None:
            return
        with contextlib.suppress(OSError):
            self._control.close()
        self._control = None
        with contextlib.suppress(OSError, UnsafePath):
            dfd = runstate.open_run_dir(self.sysfs, create=False)
            try:
                os.unlink(control_name(self.mp), dir_fd=dfd)
            finally:
                os.close(dfd)

    def _control_loop(self, s: socket.socket) -> None:
        while True:
            try:
                c, _addr = s.accept()
            except OSError:
                return
            try:
                if _peer(c)[1] not in (0, os.geteuid()):
                    c.close()
                    continue
                req = json.loads(c.makefile("r").readline() or "{}")
            except (OSError, ValueError):
                c.close()
                continue
            if req.get("op") != "umount":
                with contextlib.suppress(OSError):
                    c.sendall(b'{"done": true, "ok": false, "type": "InvalidArgument", "exit_code": 11, '
                              b'"message": "unknown control request"}\n')  # fmt: skip
                c.close()
                continue
            self._reporter = c
            lazy = bool(req.get("lazy"))
            try:
                self.unmount(lazy)
            except DaxmodeError as e:
                self._reporter = None
                with contextlib.suppress(OSError):
                    c.sendall((json.dumps(_err(e)) + "\n").encode())
                c.close()
                continue
            if lazy and self.server is not None and not self.server.wait(timeout=0.5):
                self._reporter = None
                with contextlib.suppress(OSError):
                    c.sendall(b'{"done": true, "ok": true, "pending": true}\n')
                c.close()
            return  # the main thread reports the rest (tear-down) and closes the connection

    def _done(self, ok: bool, err: DaxmodeError | None = None) -> None:
        c, self._reporter = self._reporter, None
        if c is None:
            return
        msg = {"done": True, "ok": True} if ok else _err(err)
        with contextlib.suppress(OSError):
            c.sendall((json.dumps(msg) + "\n").encode())
            c.close()


def _err(e: DaxmodeError | None) -> dict[str, object]:
    assert e is not None
    return {"done": True, "ok": False, "type": type(e).__name__, "exit_code": e.exit_code, "message": str(e)}


def request_umount(
    sysfs: Sysfs, rec: S.MountRecord, lazy: bool, timeout: float, first: float = FIRST_REPLY
) -> tuple[list[str], dict] | None:
    """Ask the live server of ``rec`` to unmount over its control socket; (steps it reports, final
    message), or None if no server listens there.  The one listening must be that server (its pid,
    root or us): anything else is not trusted.  The first reply must come within ``first`` seconds
    (the unmount itself); the tear-down that follows may take ``timeout``."""
    from daxmode import runstate

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dfd = runstate.open_run_dir(sysfs, create=False)
        try:
            s.connect(f"{fd_path(dfd)}/{control_name(rec.mountpoint)}")
        finally:
            os.close(dfd)
    except (OSError, UnsafePath):
        s.close()
        return None
    pid, uid = _peer(s)
    if pid != rec.pid or uid not in (0, os.geteuid()):
        s.close()
        raise UnsafePath(
            f"the control socket of {rec.mountpoint} is answered by pid {pid} (uid {uid}), not by its server "
            f"(pid {rec.pid}); not trusted"
        )
    s.settimeout(first)
    steps: list[str] = []
    final: dict = {}
    try:
        s.sendall((json.dumps({"op": "umount", "lazy": lazy}) + "\n").encode())
        for line in s.makefile("r"):
            s.settimeout(timeout)
            msg = json.loads(line)
            if "step" in msg:
                steps.append(msg["step"])
            if msg.get("done"):
                final = msg
                break
        else:
            final = _err(LeftPartial("the server closed its control socket without a result"))
    except TimeoutError:
        final = _err(LeftPartial(f"the server (pid {rec.pid}) did not answer the unmount request in time"))
    except (OSError, ValueError) as e:
        final = _err(LeftPartial(f"lost the server while unmounting: {e}"))
    finally:
        s.close()
    return steps, final
