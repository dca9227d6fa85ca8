"""The guest's zygote: a pristine warm interpreter that forks Python commands for in-guest tests.

A test process cannot fork *itself* for a subprocess: it has used the modules it would run, and
their state goes with the fork (click's ``version_option`` keeps the first program name it saw; a
module-level cache, an open lock).  So the agent, right after preloading and before running
anything, forks this server; it listens on ``SOCKET``.  The in-guest suite's conftest installs
``ZygotePopen`` as ``subprocess.Popen``: for a command mhd.guest.warm can run, ``_execute_child`` sends
the argv, environment, cwd, credentials and the child's standard descriptors (SCM_RIGHTS) to the
zygote, which forks a child that sets them up the way Popen's child would and runs the command
(``warm.child_main``).  The zygote reports the child's exit status when it ends, so ``poll``,
``wait``, ``communicate``, ``send_signal`` and timeouts behave as for an exec'd child.

Differences a test can see: the child's parent is the zygote, not the test (``os.getppid()``,
``os.waitpid`` on the pid), and it runs in a process group of its own.  ``preexec_fn`` and
``executable`` cannot travel: such commands are exec'd (``user=``/``group=``/``extra_groups=``
do travel).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from mhd.constants import ZYGOTE_SOCKET
from mhd.guest import pipeline, warm

SOCKET = ZYGOTE_SOCKET
_MAX_FDS = 64


# ---- wire format: one request (length-prefixed JSON + descriptors), then JSON lines back ----------


def send_request(sock: socket.socket, req: dict, fds: list[int]) -> None:
    data = json.dumps(req).encode()
    head = struct.pack("!I", len(data))
    sock.sendmsg([head + data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])


def recv_request(sock: socket.socket) -> tuple[dict, list[int]]:
    fds: list[int] = []
    msg, anc, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(_MAX_FDS * 4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds += list(struct.unpack(f"{n}i", payload[: n * 4]))
    if len(msg) < 4:
        raise ConnectionError("short request")
    (size,) = struct.unpack("!I", msg[:4])
    body = msg[4:]
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise ConnectionError("truncated request")
        body += chunk
    return json.loads(body), fds


def launch_from(d: dict) -> warm.Launch:
    return warm.Launch(**{k: tuple(v) if isinstance(v, list) and k != "argv" else v for k, v in d.items()})


# ---- the server (in the zygote) ------------------------------------------------------------------


def _child(req: dict, fds: list[int]) -> None:
    """In the forked child: Popen's child-side set-up, then the command (never returns)."""
    try:
        targets = [0, 1, 2, *req["pass_fds"]]
        high = [os.dup(f) for f in fds]  # above every target, so no dup2 clobbers a source
        for t, f in zip(targets, high, strict=True):
            os.dup2(f, t, inheritable=True)
        for f in {*high, *fds} - set(targets):
            os.close(f)
        os.chdir(req["cwd"])
        if req["umask"] >= 0:
            os.umask(req["umask"])
        if req["start_new_session"]:
            os.setsid()
        else:
            os.setpgid(0, 0)  # the test's own group is in another session: a group of its own
        if req["gids"] is not None:
            os.setgroups(req["gids"])
        if req["gid"] is not None:
            os.setregid(req["gid"], req["gid"])
        if req["uid"] is not None:
            os.setreuid(req["uid"], req["uid"])
    except BaseException as e:
        with contextlib.suppress(Exception):
            os.write(2, f"zygote: cannot set up the child: {type(e).__name__}: {e}\n".encode())
        os._exit(127)
    warm.child_main(launch_from(req["launch"]), req["env"], tuple(req["pass_fds"]), req["close_fds"])


def _as_sh(status: int, errfd: int) -> int:
    """The wait status ``sh -c CMD`` would have: exit 128 + N for death by signal N, and its line."""
    if not os.WIFSIGNALED(status):
        return status
    sig = os.WTERMSIG(status)
    note = pipeline.signal_note(-sig)
    if note:
        with contextlib.suppress(OSError):
            os.write(errfd, note.encode())
    return (128 + sig) << 8


def _send(conn: socket.socket, msg: dict) -> None:
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(msg) + "\n").encode())


def serve(lsock: socket.socket) -> None:
    """Accept requests, fork their commands, report each exit status on its connection."""
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, _ = lsock.accept()
                try:
                    req, fds = recv_request(conn)
                except (OSError, ValueError, ConnectionError) as e:
                    _send(conn, {"error": f"bad request: {e}"})
                    conn.close()
                    continue
                try:
                    pid = os.fork()
                except OSError as e:
                    _send(conn, {"error": f"fork: {e}"})
                    for f in fds:
                        os.close(f)
                    conn.close()
                    continue
                if pid == 0:
                    _child(req, fds)
                # For sh -c (seen through), keep the child's stderr: dash's "Killed" line goes there.
                errfd = os.dup(fds[2]) if req.get("sh") else None
                for f in fds:
                    os.close(f)
                pidfd = os.pidfd_open(pid)
                sel.register(pidfd, selectors.EVENT_READ, (pid, conn, errfd))
                _send(conn, {"pid": pid})
            else:
                pid, conn, errfd = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                if errfd is not None:
                    status = _as_sh(status, errfd)
                    os.close(errfd)
                _send(conn, {"status": status})
                conn.close()


def start(path: str = SOCKET) -> int:
    """Fork the zygote from this (freshly preloaded) process; returns its pid."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    os.chmod(path, 0o600)
    lsock.listen(64)
    pid = os.fork()
    if pid == 0:
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: go with the agent
            serve(lsock)
        finally:
            os._exit(0)
    lsock.close()
    return pid


# ---- the client (in a test process) --------------------------------------------------------------


class ZygotePopen(subprocess.Popen):
    """``subprocess.Popen`` whose venv-Python children are forked by the zygote (see module doc)."""

    _zsock: socket.socket | None = None
    _zpath = SOCKET

    def _execute_child(  # type: ignore[override]
        self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo, creationflags, shell,
        p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, restore_signals,
        gid, gids, uid, umask, start_new_session, process_group,
    ):  # fmt: skip
        parent = super()._execute_child

        def exec_child() -> None:
            """The plain fork+exec, counted."""
            warm.stats["exec"] += 1
            return parent(
                args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo, creationflags,
                shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, restore_signals,
                gid, gids, uid, umask, start_new_session, process_group,
            )  # fmt: skip

        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        if shell:
            argv = ["/bin/sh", "-c", *argv]
        launch = None
        child_env = dict(os.environ if env is None else env)
        shell_seen = False
        if (
            warm.enabled()
            and executable is None
            and preexec_fn is None
            and process_group in (None, -1)
            and all(isinstance(a, str) for a in argv)
            and os.path.exists(self._zpath)
        ):
            words, launch = warm.launch_for(argv, child_env)
            shell_seen = words is not argv and os.path.basename(argv[0]) in ("sh", "dash")
        if launch is None:
            return exec_child()
        where = os.fspath(cwd) if cwd is not None else os.getcwd()
        if not os.path.isdir(where):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), where)
        fds = [
            p2cread if p2cread != -1 else 0,
            c2pwrite if c2pwrite != -1 else 1,
            errwrite if errwrite != -1 else 2,
            *pass_fds,
        ]
        req = {
            "launch": asdict(launch),
            "env": child_env,
            "cwd": where,
            "uid": uid,
            "gid": gid,
            "gids": list(gids) if gids is not None else None,
            "umask": umask,
            "start_new_session": bool(start_new_session),
            "close_fds": bool(close_fds),
            "pass_fds": list(pass_fds),
            "sh": shell_seen,
        }
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._zpath)
        except OSError:
            sock.close()  # no zygote (it died, or never started): nothing is running yet, so exec
            return exec_child()
        try:
            send_request(sock, req, fds)
            reply = self._zline(sock, None)
        except (OSError, ValueError) as e:
            sock.close()
            raise subprocess.SubprocessError(f"warm zygote at {self._zpath}: {e}") from None
        if reply is None or "pid" not in reply:
            sock.close()
            raise subprocess.SubprocessError(f"warm zygote: {reply and reply.get('error')}")
        warm.stats["warm"] += 1
        self.pid = reply["pid"]
        self._child_created = True
        self._zsock = sock
        self._zbuf = b""
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _zline(self, sock: socket.socket, timeout: float | None) -> dict | None:
        buf = getattr(self, "_zbuf", b"")
        sock.settimeout(timeout)
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            buf += chunk
        line, self._zbuf = buf.split(b"\n", 1)
        return json.loads(line)

    def _zstatus(self, timeout: float | None) -> None:
        assert self._zsock is not None
        try:
            msg = self._zline(self._zsock, timeout)
        except (TimeoutError, BlockingIOError):
            raise
        status = msg.get("status") if msg else None
        self._zsock.close()
        self._zsock = None
        # The zygote gone before it could say: report the child as killed, never as a success.
        self._handle_exitstatus(status if isinstance(status, int) else 9)

    def _internal_poll(self, _deadstate=None, _waitpid=os.waitpid, _WNOHANG=os.WNOHANG, _ECHILD=errno.ECHILD):
        if self._zsock is None:
            if getattr(self, "_zbuf", None) is not None:
                return self.returncode  # a zygote child whose status is in
            return super()._internal_poll(_deadstate, _waitpid, _WNOHANG, _ECHILD)
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                self._zstatus(0)
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                self._waitpid_lock.release()
        return self.returncode

    def _wait(self, timeout):  # type: ignore[no-untyped-def]
        if self._zsock is None and getattr(self, "_zbuf", None) is None:
            return super()._wait(timeout)
        if self.returncode is not None:
            return self.returncode
        with self._waitpid_lock:
            if self._zsock is not None:
                try:
                    self._zstatus(timeout)
                except (TimeoutError, BlockingIOError):
                    raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode


_EXECUTE_CHILD = [
    "self",
    "args",
    "executable",
    "preexec_fn",
    "close_fds",
    "pass_fds",
    "cwd",
    "env",
    "startupinfo",
    "creationflags",
    "shell",
    "p2cread",
    "p2cwrite",
    "c2pread",
    "c2pwrite",
    "errread",
    "errwrite",
    "restore_signals",
    "gid",
    "gids",
    "uid",
    "umask",
    "start_new_session",
    "process_group",
]


def compatible() -> bool:
    """The Popen internals ZygotePopen relies on are the ones it was written against (CPython 3.11+)."""
    import inspect

    try:
        params = list(inspect.signature(subprocess.Popen._execute_child).parameters)
    except (TypeError, ValueError, AttributeError):
        return False
    need = ("_close_pipe_fds", "_handle_exitstatus", "_internal_poll", "_wait", "_waitpid_lock")
    return params == _EXECUTE_CHILD and all(
        hasattr(subprocess.Popen, n) or n == "_waitpid_lock" for n in need
    )


def install_popen_hook(path: str = SOCKET) -> contextlib.AbstractContextManager:
    """Make ``subprocess.Popen`` (hence run, call, check_output) a ZygotePopen until closed.

    On a Python whose Popen internals differ, nothing is installed (every command is exec'd).
    """
    if not compatible():
        return contextlib.ExitStack()
    orig = subprocess.Popen
    ZygotePopen._zpath = path
    subprocess.Popen = ZygotePopen  # type: ignore[misc]
    stack = contextlib.ExitStack()
    stack.callback(setattr, subprocess, "Popen", orig)
    return stack


def main(argv: list[str]) -> int:
    """``python -m mhd.guest.zygote PATH [MODULE...]``: preload, then serve at PATH (tests use this)."""
    warm.set_base_path(list(sys.path[1:]))
    warm.preload(argv[1:] or None)
    Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
    pid = start(argv[0])
    print(pid, flush=True)
    os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
