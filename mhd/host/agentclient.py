"""Host side of the guest agent protocol (see mhd.guest.agent): connect to a guest's socket, run commands.

Used by the harness and by tests/vm/conftest.py (host-side scenarios), which reconnect to the same
guests through the session file the harness writes.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path


class AgentError(Exception):
    pass


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def describe(self) -> str:
        tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-5:]
        state = "timed out" if self.timed_out else f"rc={self.rc}"
        return f"{state}: " + " | ".join(tail)


class AgentClient:
    """One connection to one guest agent."""

    def __init__(self, path: Path, name: str = "guest") -> None:
        self.path = Path(path)
        self.name = name
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = int(time.time() * 1000) % 1_000_000_000

    def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.path))
                self._sock = s
                return
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    raise AgentError(f"{self.name}: cannot connect to {self.path}: {e}") from None
                time.sleep(0.1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def call(self, request: dict, timeout: float, alive=None) -> dict:
        """Send one request and wait for its answer; ``alive()`` False aborts early (QEMU died)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._next_id += 1
        rid = self._next_id
        msg = dict(request, id=rid)
        try:
            self._sock.sendall((json.dumps(msg) + "\n").encode())
        except OSError as e:
            raise AgentError(f"{self.name}: agent connection lost: {e}") from None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if reply.get("id") == rid:
                    if "error" in reply:
                        raise AgentError(f"{self.name}: agent: {reply['error']}")
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer from the guest agent within {timeout:.0f}s")
            if alive is not None and not alive():
                raise AgentError(f"{self.name}: QEMU exited")
            self._sock.settimeout(min(left, 1.0))
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as e:
                raise AgentError(f"{self.name}: agent connection lost: {e}") from None
            if not chunk:
                raise AgentError(f"{self.name}: agent connection closed")
            self._buf += chunk

    def run(
        self,
        cmd: list[str] | str,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        alive=None,
    ) -> Result:
        req: dict = {"op": "run", "timeout": timeout}
        if isinstance(cmd, str):
            req["sh"] = cmd
        else:
            req["argv"] = list(cmd)
        if env:
            req["env"] = env
        if cwd:
            req["cwd"] = cwd
        if stdin is not None:
            req["stdin"] = stdin
        # Allow the agent its own timeout plus transport slack before giving up on it.
        r = self.call(req, timeout + 30, alive)
        return Result(r["rc"], r["stdout"], r["stderr"], bool(r.get("timed_out")), float(r.get("seconds", 0)))

    def setenv(self, env: dict[str, str]) -> None:
        self.call({"op": "setenv", "env": env}, 30)

    def ping(self, timeout: float, alive=None) -> dict:
        return self.call({"op": "ping"}, timeout, alive)


@dataclass
class SessionHost:
    """A booted guest as host-side tests see it (``hosts[i].run(...)``)."""

    index: int
    agent: Path
    console: Path
    env: dict[str, str]
    _client: AgentClient | None = None

    @property
    def name(self) -> str:
        return f"host{self.index}"

    def client(self) -> AgentClient:
        if self._client is None:
            self._client = AgentClient(self.agent, self.name)
            self._client.connect()
        return self._client

    def run(self, cmd: list[str] | str, timeout: float = 120.0, **kw) -> Result:
        return self.client().run(cmd, timeout=timeout, **kw)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def load_session(path: Path) -> list[SessionHost]:
    data = json.loads(Path(path).read_text())
    return [
        SessionHost(h["index"], Path(h["agent"]), Path(h["console"]), dict(h.get("env", {})))
        for h in data["hosts"]
    ]
