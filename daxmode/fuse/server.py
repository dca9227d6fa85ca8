"""The request loop: read one request from /dev/fuse, dispatch it, write one reply.

Worker threads share the one file descriptor; each owns a preallocated request buffer (no
allocation per request) and blocks in read(2) with the GIL released, so the kernel's copies of
one request overlap Python work on another.  A handler returns the reply payload as ``bytes`` or
as a list of buffers for ``writev(2)`` (a READ's data is a view of the device mapping: the kernel
copies it straight into the reader's pages, no copy in Python); it raises :class:`FuseError` for an
errno reply.  FORGET, BATCH_FORGET and INTERRUPT get no reply (fs/fuse/dev.c).

The loop ends when read(2) fails with ENODEV: the file system was unmounted (or the connection
aborted).  Plain fuse mounts get no DESTROY (only fuseblk/virtiofs do).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from daxmode.fuse import proto as P

Payload = bytes | Sequence[bytes | memoryview] | None


class FuseError(Exception):
    """Answer the request with ``-errno``."""

    def __init__(self, err: int, why: str = "") -> None:
        super().__init__(why or os.strerror(err))
        self.errno = err


class FileSystem(Protocol):
    """What the loop needs from a file system: INIT, then one method per opcode it serves.

    ``handlers()`` maps opcodes to callables ``(header, body) -> payload``; an opcode missing there
    is answered ENOSYS (the kernel then stops sending most of them)."""

    def init(self, req: P.InitIn) -> P.InitOut: ...

    def handlers(self) -> dict[int, Callable[[P.InHeader, memoryview], Payload]]: ...


class Stats:
    """Requests seen per opcode and data bytes moved, summed over the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.read_bytes = 0
        self.write_bytes = 0
        self.started = time.time()

    def count(self, opcode: int, err: int = 0) -> None:
        name = P.OPCODE_NAMES.get(opcode, str(opcode))
        with self._lock:
            self.requests[name] += 1
            if err:
                self.errors[f"{name}:{errno.errorcode.get(err, err)}"] += 1

    def add_bytes(self, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.read_bytes += read
            self.write_bytes += written

    def to_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "requests": dict(sorted(self.requests.items())),
                "errors": dict(sorted(self.errors.items())),
                "read_bytes": self.read_bytes,
                "write_bytes": self.write_bytes,
                "uptime_s": round(time.time() - self.started, 3),
            }


def _log_stderr(msg: str) -> None:
    print(f"daxmode fuse: {msg}", file=sys.stderr, flush=True)


class Server:
    """Serve ``fs`` on the /dev/fuse descriptor ``fd`` until the mount goes away."""

    def __init__(
        self,
        fd: int,
        fs: FileSystem,
        *,
        workers: int = 4,
        max_write: int = 1 << 20,
        log: Callable[[str], None] = _log_stderr,
        stats: Stats | None = None,
    ) -> None:
        self.fd = fd
        self.fs = fs
        self.nworkers = max(1, workers)
        self.bufsize = max(P.MIN_READ_BUFFER, max_write + 2 * P.MIN_READ_BUFFER)
        self.log = log
        self.stats = stats or Stats()
        self.init_out: P.InitOut | None = None
        self.initialized = threading.Event()
        self.finished = threading.Event()
        self.failure: BaseException | None = None
        self._handlers: dict[int, Callable[[P.InHeader, memoryview], Payload]] = {}
        self._threads: list[threading.Thread] = []

    # --- INIT -------------------------------------------------------------------------------
    def handshake(self, timeout: float | None = 30.0) -> P.InitOut:
        """Answer INIT (the first request on a new connection); the mount is usable afterwards."""
        buf = bytearray(self.bufsize)
        if timeout is not None:
            import select

            r, _w, _x = select.select([self.fd], [], [], timeout)
            if not r:
                raise FuseError(errno.ETIMEDOUT, "the kernel sent no INIT")
        n = os.readv(self.fd, [buf])
        h = P.parse_in_header(buf, n)
        if h.opcode != P.INIT:
            raise FuseError(errno.EPROTO, f"first request is opcode {h.opcode}, not INIT")
        req = P.parse_init_in(memoryview(buf)[P.IN_HEADER.size : n])
        self.stats.count(P.INIT)
        if req.major != P.KERNEL_VERSION:
            os.write(self.fd, P.reply_error(h.unique, errno.EPROTO))
            raise FuseError(
                errno.EPROTO, f"kernel speaks FUSE {req.major}.{req.minor}; this server speaks 7.x"
            )
        try:
            out = self.fs.init(req)
        except FuseError as e:
            os.write(self.fd, P.reply_error(h.unique, e.errno))
            raise
        os.write(self.fd, P.pack_init_out(h.unique, out))
        self.init_out = out
        self._handlers = self.fs.handlers()
        self.initialized.set()
        return out

    # --- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads (after :meth:`handshake`)."""
        for i in range(self.nworkers):
            t = threading.Thread(target=self._worker, name=f"fuse-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def add_worker(self, limit: int = 64) -> None:
        """One more worker thread (up to ``limit``): called by a handler about to block for long
        (a flock wait), so the requests that would end the wait are still read."""
        if len(self._threads) >= limit:
            return
        t = threading.Thread(target=self._worker, name=f"fuse-worker-{len(self._threads)}", daemon=True)
        t.start()
        self._threads.append(t)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end (unmount); True once every worker has stopped.  Short joins,
        so the main thread keeps running signal handlers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            while t.is_alive():
                t.join(0.2)
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        self.finished.set()
        return True

    def _worker(self) -> None:
        buf = bytearray(self.bufsize)
        mv = memoryview(buf)
        fd = self.fd
        handlers = self._handlers
        stats = self.stats
        hsize = P.IN_HEADER.size
        try:
            while True:
                try:
                    n = os.readv(fd, [buf])
                except OSError as e:
                    if e.errno == errno.ENODEV:  # unmounted: the connection is gone
                        return
                    if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                        continue  # ENOENT: the request was interrupted before we read it
                    raise
                try:
                    h = P.parse_in_header(buf, n)
                except P.ProtocolError as e:
                    self.log(f"bad request from the kernel: {e}")
                    continue
                op = h.opcode
                fn = handlers.get(op)
                err = 0
                payload: Payload = None
                if fn is None:
                    err = errno.ENOSYS
                else:
                    try:
                        payload = fn(h, mv[hsize:n])
                    except FuseError as e:
                        err = e.errno
                    except P.ProtocolError as e:
                        self.log(f"{P.OPCODE_NAMES.get(op, op)}: {e}")
                        err = errno.EINVAL
                    except Exception:
                        self.log(f"{P.OPCODE_NAMES.get(op, op)} failed:\n{traceback.format_exc()}")
                        err = errno.EIO
                stats.count(op, err)
                if op in P.NO_REPLY:
                    continue
                try:
                    if err:
                        os.write(fd, P.reply_error(h.unique, err))
                    elif payload is None:
                        os.write(fd, P.reply(h.unique))
                    elif isinstance(payload, bytes):
                        os.write(fd, P.reply(h.unique, payload))
                    else:
                        total = sum(len(b) for b in payload)
                        os.writev(fd, [P.reply_header(h.unique, total), *payload])
                except OSError as e:
                    # ENOENT: the requester was interrupted and gave up; ENODEV: unmounted meanwhile.
                    if e.errno == errno.ENODEV:
                        return
                    if e.errno != errno.ENOENT:
                        self.log(f"reply to {P.OPCODE_NAMES.get(op, op)} failed: {e}")
        except BaseException as e:  # pragma: no cover - kept for the log, the mount then fails
            self.failure = e
            self.log(f"worker stopped: {e!r}")
