"""Facts about processes the kernel publishes in /proc: when a process started (to tell a live
server from a reused pid) and who holds a flock (to name a lock's holder in a busy message)."""

from __future__ import annotations

import os

from daxmode.kernel import paths


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or None if
    there is no such process."""
    try:
        with open(paths.proc_stat(pid)) as f:
            text = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields after the last ')' are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19])


def flock_holders(st: os.stat_result, locks: str = paths.PROC_LOCKS) -> list[int]:
    """PIDs holding a FLOCK on the file ``st`` describes, from /proc/locks."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = []
    try:
        with open(locks) as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks waiters)
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
                    out.append(int(parts[4]))
    except OSError:
        pass
    return sorted(set(out))
