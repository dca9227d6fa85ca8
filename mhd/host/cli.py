"""The harness's entry point: ``qemu/cxl-mhd.sh`` runs ``python -m mhd``, which lands here.

The phases in order: prepare (mhd.host.prepare), boot, bring-up, facts and network (mhd.host.run),
the suites or the command (mhd.host.suiterun), teardown, then the report (mhd.host.report).  Exit
codes: 0 all passed, 1 a test failed, skipped without a declared reason, or nothing ran, 2 usage
error, 3 bad input (kernel, modules, QEMU, memory, disk, busy shared file, a malformed or missing
declared-skips file), 4 a guest failed to boot or bring its device up, 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mhd.host import suiterun
from mhd.host.agentclient import Result, load_session
from mhd.host.config import parse_args
from mhd.host.errors import BadInput, HarnessError, Interrupted
from mhd.host.report import report
from mhd.host.run import booted
from mhd.host.timing import Timing


def _raise_interrupt(signum, frame):
    raise Interrupted(f"interrupted by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "exec":
        return exec_main(argv[1:])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell: Ctrl-C was never ours, but a SIGINT still means stop.
        signal.signal(signal.SIGINT, _raise_interrupt)
    timing = Timing()
    try:
        cfg = parse_args(argv)
        with booted(cfg, timing) as run:
            run.gather_facts()
            if cfg.cmd is not None:
                suiterun.run_cmd(run, cfg.cmd)
            if run.suite.guest_paths:
                suiterun.run_guest_suites(run)
            if run.suite.host_paths:
                suiterun.run_host_suite(run)
            if cfg.suite is not None:
                suiterun.warm_stats(run)
            if cfg.keep:
                run.keep_running()
    except KeyboardInterrupt:
        print("mhd: interrupted; guests stopped", file=sys.stderr)
        return Interrupted.exit_code
    except HarnessError as e:
        print(f"mhd: error: {e}", file=sys.stderr)
        if timing.phases:
            print(timing.table(), file=sys.stderr)
        return e.exit_code
    if cfg.cmd is None and cfg.suite is None:
        return 0
    return report(run.outcome, timing, run.stack.results, commands_only=cfg.cmd is not None)


def exec_main(argv: list[str]) -> int:
    """``cxl-mhd.sh exec --session FILE --host N -- CMD...``: run one command in a kept guest."""
    ap = argparse.ArgumentParser(prog="cxl-mhd.sh exec")
    ap.add_argument("--session", type=Path, required=True)
    ap.add_argument("--host", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    hosts = load_session(a.session)
    if not 0 <= a.host < len(hosts):
        print(f"mhd: error: --host {a.host}: session has {len(hosts)} hosts", file=sys.stderr)
        return BadInput.exit_code
    r: Result = hosts[a.host].run(cmd if len(cmd) > 1 else cmd[0], timeout=a.timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.rc
