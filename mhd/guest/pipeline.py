"""The agent's own ``sh -c`` for pipelines whose stages include a venv Python command.

``daxmode famfs cat dax0.0 f | sha256sum`` through sh pays a full interpreter start for the
daxmode half (~5 s under TCG).  For commands mhd.guest.shwords.parse_pipeline understands -- words, ``|``,
``<``, ``>``, ``>>`` -- the agent starts the stages itself, each forked warm when mhd.guest.warm can, and
wires them as sh would: stage i's stdout is stage i+1's stdin, every stage's stderr is the
command's, files are opened as sh opens them (``>`` creates 0666 & ~umask and truncates), and the
status is the last stage's (128 + N when it died of signal N, as dash reports it, with dash's
"Killed"-style line for every stage that died of a signal).  When a stage's
program cannot be found or a file cannot be opened, nothing has started and the caller hands the
command to sh, which reports it in its own words.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

from mhd.guest import warm
from mhd.guest.shwords import Stage


def shell_status(rc: int) -> int:
    """What ``sh -c`` reports for a child's Popen returncode (death by signal N: 128 + N)."""
    return 128 - rc if rc < 0 else rc


def signal_note(rc: int) -> str:
    """The line dash prints when a process of the job died of a signal (not SIGINT or SIGPIPE)."""
    if rc >= 0 or -rc in (signal.SIGINT, signal.SIGPIPE):
        return ""
    return (signal.strsignal(-rc) or f"Signal {-rc}") + "\n"


def runnable(stages: list[Stage], env: dict[str, str]) -> bool:
    """Worth doing ourselves: every program exists, and at least one stage forks warm."""
    if not all(warm.which(st.words[0], env.get("PATH")) for st in stages):
        return False
    return any(warm.parse_launch(st.words, env) is not None for st in stages)


def _open(st: Stage, cwd: str) -> tuple[object, object]:
    fin = open(os.path.join(cwd, st.stdin), "rb") if st.stdin else None  # noqa: SIM115
    try:
        fout = open(os.path.join(cwd, st.stdout), "ab" if st.append else "wb") if st.stdout else None  # noqa: SIM115
    except OSError:
        if fin is not None:
            fin.close()
        raise
    return fin, fout


def run(
    stages: list[Stage], env: dict[str, str], cwd: str, timeout: float | None, stdin: bytes, **popen_kw
) -> dict | None:
    """Run the pipeline; the agent's reply fields, or None if sh should run it instead."""
    files = []
    try:
        for st in stages:
            files.append(_open(st, cwd))
    except OSError:
        for pair in files:
            for f in pair:
                if f is not None:
                    f.close()
        return None
    start = time.monotonic()
    err_r, err_w = os.pipe()
    procs: list[subprocess.Popen] = []
    prev = None
    try:
        for i, (st, (fin, fout)) in enumerate(zip(stages, files, strict=True)):
            p = warm.popen(
                st.words,
                stdin=fin if fin is not None else (prev if i else subprocess.PIPE),
                stdout=fout if fout is not None else subprocess.PIPE,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,  # the agent kills each stage's session on a timeout
                **popen_kw,
            )
            if prev is not None:
                prev.close()  # the next stage holds it now: EOF and EPIPE behave as in sh
            prev = p.stdout if i < len(stages) - 1 else None
            procs.append(p)
    finally:
        os.close(err_w)
        for fin, fout in files:
            for f in (fin, fout):
                if f is not None:
                    f.close()
    out: list[bytes] = []
    err: list[bytes] = []

    def drain(f, into: list[bytes]) -> None:  # type: ignore[no-untyped-def]
        while chunk := f.read(65536):
            into.append(chunk)

    threads = []
    last = procs[-1]
    if last.stdout is not None:
        threads.append(threading.Thread(target=drain, args=(last.stdout, out), daemon=True))
    errf = os.fdopen(err_r, "rb")
    threads.append(threading.Thread(target=drain, args=(errf, err), daemon=True))
    for t in threads:
        t.start()
    first = procs[0]
    if first.stdin is not None:
        with contextlib.suppress(BrokenPipeError, OSError):
            first.stdin.write(stdin)
        with contextlib.suppress(BrokenPipeError, OSError):
            first.stdin.close()
    timed_out = False
    deadline = None if timeout is None else start + timeout
    for p in procs:
        try:
            p.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
    for t in threads:
        t.join()
    errf.close()
    if last.stdout is not None:
        last.stdout.close()
    return {
        "rc": shell_status(last.returncode),
        "stdout": b"".join(out).decode(errors="replace"),
        "stderr": b"".join(err).decode(errors="replace") + "".join(signal_note(p.returncode) for p in procs),
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 3),
    }
