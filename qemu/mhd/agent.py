"""The guest agent: runs commands for the host, one JSON line in, one JSON line out.

It runs inside each guest (started by /init with the host venv's python; stdlib only, so it works
before anything else is set up) on the virtio-serial port named ``mhd.agent``.

Requests: ``{"id": N, "op": "run", "argv": [...] | "sh": "...", "env": {...}, "cwd": "...",
"timeout": S, "stdin": "..."}`` -> ``{"id": N, "rc": R, "stdout": "...", "stderr": "...",
"timed_out": bool, "seconds": S}``; ``{"op": "ping"}`` -> uname and uptime; ``{"op": "setenv",
"env": {...}}`` adds to the environment of later commands; ``{"op": "poweroff"}`` answers, then
exits so /init powers the guest off.

The host may connect, disconnect and reconnect (the harness, then host-side pytest, then the
harness again); every answer carries the request's id so a client skips answers meant for an
earlier connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

PORT_NAME = "mhd.agent"
BASE_ENV = {
    # stage2.sh passes PATH with the project's venv first; this is only the fallback.
    "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    # The project tree is read-only in the guest: keep tool caches in tmpfs.
    "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/.hypothesis",
    "XDG_CACHE_HOME": "/tmp/.cache",
}


def find_port(name: str = PORT_NAME, timeout: float = 30.0) -> str:
    """Device node of the virtio-serial port called ``name`` (no udev needed for this)."""
    deadline = time.monotonic() + timeout
    while True:
        base = "/sys/class/virtio-ports"
        for vport in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            try:
                with open(f"{base}/{vport}/name") as f:
                    if f.read().strip() == name:
                        return f"/dev/{vport}"
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise SystemExit(f"agent: no virtio port named {name}")
        time.sleep(0.1)


def run_command(req: dict, env: dict[str, str]) -> dict:
    argv = req.get("argv")
    if argv is None:
        argv = ["/bin/sh", "-c", req["sh"]]
    timeout = req.get("timeout")
    full_env = dict(env)
    full_env.update(req.get("env") or {})
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or "/",
            env=full_env,
            start_new_session=True,
        )
    except OSError as e:
        return {"rc": 127, "stdout": "", "stderr": f"agent: cannot run {argv[0]}: {e}\n", "timed_out": False}
    timed_out = False
    try:
        out, err = proc.communicate((req.get("stdin") or "").encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        # The command may have children: end its whole session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return {
        "rc": proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 3),
    }


def handle(req: dict, env: dict[str, str]) -> tuple[dict, bool]:
    """Answer one request; the flag says the agent should stop afterwards."""
    op = req.get("op", "run")
    if op == "ping":
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return {
            "ok": True,
            "release": os.uname().release,
            "uptime": uptime,
            "node": os.uname().nodename,
        }, False
    if op == "setenv":
        env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        return {"ok": True}, False
    if op == "poweroff":
        return {"ok": True}, True
    if op == "run":
        return run_command(req, env), False
    return {"error": f"unknown op {op!r}"}, False


def serve(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    env = dict(BASE_ENV)
    env.update({k: v for k, v in os.environ.items() if k.startswith(("DAXMODE_", "MHD_"))})
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            # The host side is not connected (the port reads as EOF until it is).
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except ValueError:
                continue
            try:
                reply, stop = handle(req, env)
            except Exception as e:  # report, never die: the host would only see a timeout
                reply, stop = {"error": f"{type(e).__name__}: {e}"}, False
            reply["id"] = req.get("id")
            data = (json.dumps(reply) + "\n").encode()
            while data:
                n = os.write(fd, data)
                data = data[n:]
            if stop:
                os.close(fd)
                return


def main() -> None:
    serve(find_port())


if __name__ == "__main__":
    sys.exit(main())
