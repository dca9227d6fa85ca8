"""One guest's QEMU process on the host: start, wait for the agent, run commands, stop, clean up.

Each QEMU runs in its own session (process group) and gets PR_SET_PDEATHSIG, so it dies with the
harness even when the harness is killed hard; ``stop()`` ends the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from mhd.host.agentclient import AgentClient, AgentError, Result
from mhd.host.errors import GuestFailure
from mhd.host.qemucmd import GuestSpec, build_command

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Guest:
    def __init__(self, spec: GuestSpec, stderr_log: Path) -> None:
        self.spec = spec
        self.name = f"host{spec.host}"
        self.stderr_log = stderr_log
        self.proc: subprocess.Popen | None = None
        self.client = AgentClient(spec.run_dir / f"host{spec.host}.agent", self.name)
        self.started_at = 0.0
        self.ready_after: float | None = None
        self.release = ""

    @property
    def agent_socket(self) -> Path:
        return self.spec.run_dir / f"host{self.spec.host}.agent"

    def start(self) -> None:
        argv = build_command(self.spec)
        (self.spec.run_dir / f"host{self.spec.host}.cmdline").write_text(" ".join(argv) + "\n")
        self.started_at = time.monotonic()
        with open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> float:
        """Wait until the agent answers a ping; returns seconds from QEMU start."""
        deadline = self.started_at + timeout
        # The socket appears once QEMU has parsed its options.
        while not self.agent_socket.exists():
            if not self.alive():
                raise GuestFailure(f"{self.name}: QEMU exited at start: {self.qemu_error()}")
            if time.monotonic() > deadline:
                raise GuestFailure(f"{self.name}: QEMU did not create its agent socket")
            time.sleep(0.05)
        try:
            self.client.connect(timeout=10)
            reply = self.client.ping(max(1.0, deadline - time.monotonic()), self.alive)
        except (TimeoutError, AgentError) as e:
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=2)
            if not self.alive():
                raise GuestFailure(
                    f"{self.name}: QEMU exited: {self.qemu_error()}; {self.console_tail()}"
                ) from None
            raise GuestFailure(f"{self.name}: guest did not come up ({e}); {self.console_tail()}") from None
        self.ready_after = time.monotonic() - self.started_at
        self.release = reply.get("release", "")
        return self.ready_after

    def run(self, cmd: list[str] | str, timeout: float = 120.0, **kw) -> Result:
        try:
            return self.client.run(cmd, timeout=timeout, alive=self.alive, **kw)
        except (TimeoutError, AgentError) as e:
            raise GuestFailure(f"{e}; {self.console_tail()}") from None

    def qemu_error(self) -> str:
        try:
            lines = self.stderr_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exit status {self.proc.returncode if self.proc else '?'}"

    def console_tail(self, n: int = 3) -> str:
        try:
            lines = [
                ln for ln in self.spec.console_log.read_text(errors="replace").splitlines() if ln.strip()
            ]
        except OSError:
            return "no console output"
        return "console: " + " | ".join(lines[-n:]) if lines else "no console output"

    def stop(self, grace: float = 15.0) -> None:
        """Power off through the agent, then make sure the QEMU process group is gone."""
        if self.proc is None:
            return
        if self.alive():
            with contextlib.suppress(TimeoutError, AgentError, OSError):
                self.client.call({"op": "poweroff"}, timeout=5, alive=self.alive)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        self.client.close()
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
