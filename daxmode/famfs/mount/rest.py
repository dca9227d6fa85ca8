"""The REST socket famfs's tools and tests query at ``<shadow>/sock``.

famfs_fused answers HTTP/1.x on a Unix stream socket (famfs ``famfs_dispatch_http``,
``src/famfs_fused_rest.c:41-130`` at 5d0919f); ``famfs mount`` polls ``GET /icache_stats`` to decide
the server is alive, and famfs's smoke tests ``curl`` ``/icache_stats``, ``/icache_dump`` and
``POST /log_level``.  The requests and the shapes of the replies are famfs's; the bodies are ours:

* ``GET /icache_stats``: the same three YAML keys, counted over this server's lookups;
* ``GET /icache_dump``: writes a one-line-per-inode dump to the server's log;
* ``GET|POST|PUT /log_level``: the level famfs's clients set and read back (it gates the dump);
* ``GET /pid``: ``pid: N``;
* ``GET /inodes``: how many inodes are served and pending;
* anything else 404, a method not allowed 405, an unparsable request 400.

Every reply closes the connection.  The socket sits in the shadow directory (mode 0700, root's),
so only root reaches it, as with famfs_fused's ``/tmp/famfs_shadow_*``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_REQUEST = 16384
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


@dataclass
class RestState:
    """What the REST endpoints report; the server updates the counters."""

    search_count: int = 0
    nodes_scanned: int = 0
    search_fail_ct: int = 0
    log_level: int = 5
    inodes: Callable[[], tuple[int, int]] = field(default=lambda: (0, 0))
    """(served, pending)."""
    dump: Callable[[], list[str]] = field(default=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def looked_up(self, found: bool, scanned: int = 1) -> None:
        with self.lock:
            self.search_count += 1
            self.nodes_scanned += scanned
            if not found:
                self.search_fail_ct += 1


def parse_request(data: bytes) -> tuple[str, str, bytes] | None:
    """(method, path, body) of one complete HTTP request in ``data``; None if incomplete.
    ValueError if it cannot be a request."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        if len(data) > MAX_REQUEST:
            raise ValueError("request head too long")
        return None
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError("bad request line")
    length = 0
    for h in lines[1:]:
        k, colon, v = h.partition(b":")
        if not colon:
            raise ValueError("bad header line")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
            if not 0 <= length <= MAX_REQUEST:
                raise ValueError("bad content-length")
    if len(rest) < length:
        return None
    path = parts[1].decode("ascii", "replace").split("?", 1)[0]
    return parts[0].decode("ascii", "replace"), path, rest[:length]


def respond(
    state: RestState, method: str, path: str, body: bytes, log: Callable[[str], None]
) -> tuple[int, str, str]:
    """(status, content type, body) for one request."""
    yaml, text = "text/yaml", "text/plain"
    if path == "/log_level":
        if method == "GET":
            return 200, text, f"{state.log_level}\n"
        if method in ("POST", "PUT"):
            raw = body.decode("ascii", "replace").strip()
            raw = raw.split("=", 1)[1] if raw.startswith("level=") else raw
            old = state.log_level
            try:
                state.log_level = int(raw)
            except ValueError:
                return 200, text, f"Failed to set log level to {raw}\n"
            return 200, text, f"log level set to {state.log_level} (from {old})\n"
        return 405, text, "Method Not Allowed\n"
    if method != "GET":
        return (
            (405, text, "Method Not Allowed\n")
            if path in ("/icache_stats", "/icache_dump", "/pid", "/inodes")
            else (404, text, "Not Found\n")
        )
    if path == "/icache_stats":
        with state.lock:
            s = (state.search_count, state.nodes_scanned, state.search_fail_ct)
        return (
            200,
            yaml,
            f"icache_stats:\n  search_count:   {s[0]}\n  nodes_scanned:  {s[1]}\n  search_fail_ct: {s[2]}\n",
        )
    if path == "/icache_dump":
        for line in state.dump():
            log(f"icache: {line}")
        return 200, yaml, "icache: dumping icache to syslog\n"
    if path == "/pid":
        return 200, yaml, f"pid: {os.getpid()}\n"
    if path == "/inodes":
        served, pending = state.inodes()
        return 200, yaml, f"inodes:\n  total: {served}\n  pending: {pending}\n"
    return 404, text, "Not Found\n"


def _reply(status: int, ctype: str, body: str) -> bytes:
    b = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\nConnection: close\r\n"
        f"Content-Length: {len(b)}\r\n\r\n"
    )
    return head.encode() + b


class RestServer:
    """``<shadow>/sock``: one thread accepting, one short-lived thread per connection."""

    def __init__(self, path: str, state: RestState, log: Callable[[str], None]) -> None:
        self.path = path
        self.state = state
        self.log = log
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a crashed server of this same shadow directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._accept, name="famfs-rest", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), name="famfs-rest-conn", daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            c.settimeout(5.0)
            data = b""
            try:
                while True:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                    try:
                        req = parse_request(data)
                    except ValueError:
                        c.sendall(_reply(400, "text/plain", "Bad Request\n"))
                        return
                    if req is not None:
                        c.sendall(_reply(*respond(self.state, *req, self.log)))
                        return
            except OSError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
