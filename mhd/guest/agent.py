"""The guest agent: runs commands for the host, one JSON line in, one JSON line out.

It runs inside each guest (``python -m mhd.guest.agent``, started by stage2.sh with the host venv's
python; stdlib only, so it works before anything else is set up) on the virtio-serial port named
``mhd.agent`` (mhd.constants.AGENT_PORT).

It is also the guest's warm interpreter (mhd.guest.warm): before serving it imports daxmode, its
requirements, pytest and pytest's plugins, and every command that launches the venv's Python (the
guest suite's pytest, bring-up, ``daxmode ...``, ``python -c ...``, also as ``sh -c`` of one such
simple command) runs as a fork of it instead of a new interpreter.  Other commands are exec'd.

Requests: ``{"id": N, "op": "run", "argv": [...] | "sh": "...", "env": {...}, "cwd": "...",
"timeout": S, "stdin": "...", "user": U}`` -> ``{"id": N, "rc": R, "stdout": "...", "stderr":
"...", "timed_out": bool, "seconds": S, "warm": bool}``; ``{"op": "ping"}`` -> uname, uptime and
the warm-up report; ``{"op": "setenv", "env": {...}}`` adds to the environment of later commands;
``{"op": "stats"}`` -> commands forked warm / exec'd so far; ``{"op": "poweroff"}`` answers, then
exits so the guest powers off.

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

from mhd.constants import AGENT_PORT, BOOT_TIMES
from mhd.guest import pipeline, shwords, warm, zygote

# The interpreter's own sys.path without the directory ``-m`` put first: forked commands get a
# sys.path built on it, as a fresh interpreter would have.
BASE_PATH = list(sys.path[1:])
warm.set_base_path(BASE_PATH)

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


def find_port(name: str = AGENT_PORT, timeout: float = 30.0) -> str:
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
    cwd = req.get("cwd") or "/"
    start = time.monotonic()
    before = warm.stats["warm"]
    user = {"user": req["user"], "extra_groups": []} if req.get("user") is not None else {}
    # dash (Debian's sh) waits for its last command and reports a signal death as 128 + N; bash -c
    # would exec it, so for bash a fork's own status is already what bash gives.
    shell = len(argv) == 3 and argv[1] == "-c" and os.path.basename(argv[0]) in ("sh", "dash")
    if shell and warm.enabled() and shwords.simple_command(argv[2]) is None:
        stages = shwords.parse_pipeline(argv[2])
        if stages and pipeline.runnable(stages, full_env):
            stdin = (req.get("stdin") or "").encode()
            got = pipeline.run(stages, full_env, cwd, timeout, stdin, **user)
            if got is not None:
                return {**got, "warm": warm.stats["warm"] > before}
    try:
        proc = warm.popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
            **user,
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
    warmed = warm.stats["warm"] > before
    as_sh = shell and warmed  # sh -c of a command forked warm: report what sh would
    return {
        "rc": pipeline.shell_status(proc.returncode) if as_sh else proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace") + (pipeline.signal_note(proc.returncode) if as_sh else ""),
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 3),
        "warm": warmed,
    }


WARMUP: dict = {}


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
            "warmup": WARMUP,
        }, False
    if op == "stats":
        return {"ok": True, **warm.stats}, False
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


def mark(name: str) -> None:
    """Append ``name <uptime>`` to the share's boot.times (the harness's boot timing)."""
    with contextlib.suppress(OSError), open("/proc/uptime") as f, open(BOOT_TIMES, "a") as out:
        out.write(f"{name} {f.read().split()[0]}\n")


def main() -> None:
    mark("agent")
    port = find_port()
    if warm.enabled():
        # The harness computes the list on the host (mhd.guest.warm.preload_names), where it is cheap.
        names = os.environ.get("MHD_PRELOAD", "").split() or None
        WARMUP.update(warm.preload(names))
        failed = WARMUP["failed"]
        print(
            f"agent: warm: {WARMUP['modules']} modules in {WARMUP['seconds']:.1f}s"
            + (f"; {len(failed)} failed: {'; '.join(failed[:5])}" if failed else ""),
            file=sys.stderr,
            flush=True,
        )
        # A pristine copy, before this process runs anything: it forks the in-guest tests' commands.
        WARMUP["zygote"] = zygote.start()
    else:
        WARMUP["disabled"] = True
    mark("warm")
    serve(port)


if __name__ == "__main__":
    sys.exit(main())
