"""Running suites in booted guests: the guest suite in its two stages, the host-side scenarios, --cmd.

Stage 1 runs the guest suite on every guest at once, without the ``shared_media`` tests; the
shared backing file is checksummed before and after, and a change fails the run (a test that
writes the device's contents is racing the other guests and must carry the marker).  Stage 2
runs the ``shared_media`` tests one guest after the other.  Every outcome is judged against the
kernel's declared-skips file (mhd.host.verdict).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mhd.constants import GUEST_SHARE, PROJECT, SHARED_MEDIA
from mhd.host.errors import GuestFailure
from mhd.host.prepare import log
from mhd.host.suites import media_digest, pytest_argv
from mhd.host.verdict import Case, Judged, SkipDecl, judge, junit_cases, merge_junit

if TYPE_CHECKING:
    from mhd.host.run import Run
    from mhd.host.vm import Guest


@dataclass
class StageResult:
    cases: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed_lines: list[str] = field(default_factory=list)
    deselected: int = 0


def guest_stage(run: Run, g: Guest, stage: str, markexpr: str | None) -> StageResult:
    """One pytest run of the guest suite inside ``g`` (forked warm by the agent)."""
    share = run.stack.results / g.name / "share"
    junit_host = share / f"junit-{stage}.xml"
    with contextlib.suppress(FileNotFoundError):
        junit_host.unlink()
    paths = list(run.suite.guest_paths)
    argv = pytest_argv(str(run.stack.python), PROJECT, paths, f"{GUEST_SHARE}/junit-{stage}.xml", markexpr)
    t0 = time.monotonic()
    r = g.run(argv, timeout=run.cfg.timeout, cwd=PROJECT)
    res = StageResult(seconds=time.monotonic() - t0)
    with open(run.stack.results / g.name / "guest-pytest.log", "a") as f:
        f.write(f"===== stage {stage}: {' '.join(argv)}\n===== rc {r.rc} in {res.seconds:.1f}s\n")
        f.write(r.stdout + r.stderr)
    if r.timed_out:
        res.problems.append(f"guest suite ({stage}) timed out after {res.seconds:.0f}s")
        return res
    try:
        res.cases = junit_cases(junit_host.read_text())
    except (OSError, ET.ParseError) as e:
        if r.rc != 5:  # 5: nothing collected (judged later, over both stages)
            tail = " | ".join((r.stderr.strip() or r.stdout.strip()).splitlines()[-3:])
            res.problems.append(f"pytest ({stage}) rc {r.rc} and no report ({e}): {tail}")
        return res
    if r.rc not in (0, 1, 5) and not any(c.outcome in ("failed", "error") for c in res.cases):
        res.problems.append(f"pytest ({stage}) exited {r.rc} (interrupted or internal error)")
    res.failed_lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    res.deselected = deselected(r.stdout)
    return res


def deselected(output: str) -> int:
    """``N deselected`` from pytest's final summary line (0 when none)."""
    for line in reversed(output.strip().splitlines()):
        m = re.search(r"(\d+) deselected", line)
        if m:
            return int(m.group(1))
        if " in " in line and ("passed" in line or "failed" in line or "skipped" in line):
            return 0
    return 0


def warm_stats(run: Run) -> None:
    """One summary line per guest: Python commands forked warm vs exec'd, by the agent and by tests."""
    for g in run.guests:
        agent = {"warm": 0, "exec": 0}
        with contextlib.suppress(Exception):
            r = g.client.call({"op": "stats"}, 30, g.alive)
            agent = {k: int(r.get(k, 0)) for k in agent}
        tests = {"warm": 0, "exec": 0}
        with contextlib.suppress(OSError, ValueError):
            for line in (run.stack.results / g.name / "share" / "warm-stats.jsonl").read_text().splitlines():
                d = json.loads(line)
                tests = {k: tests[k] + int(d.get(k, 0)) for k in tests}
        run.outcome.summary.append(
            f"{g.name} commands: agent {agent['warm']} warm forks + {agent['exec']} execs; "
            f"in-guest tests {tests['warm']} warm forks + {tests['exec']} execs"
        )


def run_guest_suites(run: Run) -> None:
    cfg = run.cfg
    guests = run.guests
    parallel = len(guests) > 1
    results: dict[int, list[StageResult]] = {g.spec.host: [] for g in guests}
    with run.timing.phase("guest suites") as ph:
        if parallel:
            before = [media_digest(f) for f, _ in run.ws.shared_files()]
            with ThreadPoolExecutor(max_workers=len(guests)) as pool:
                futs = {
                    g.spec.host: pool.submit(guest_stage, run, g, "parallel", f"not {SHARED_MEDIA}")
                    for g in guests
                }
                for h, fut in futs.items():
                    results[h].append(fut.result())
            after = [media_digest(f) for f, _ in run.ws.shared_files()]
            if after != before:
                run.outcome.parts.append(
                    Judged(
                        "shared media",
                        problems=[
                            "the shared device's contents changed while the guest suites ran in parallel: "
                            f"a guest test that writes the device must be marked @pytest.mark.{SHARED_MEDIA}"
                        ],
                    )
                )
        else:
            for g in guests:
                results[g.spec.host].append(guest_stage(run, g, "all", None))
        ph.detail = ", ".join(f"{g.name} {results[g.spec.host][0].seconds:.1f}" for g in guests) + (
            " (in parallel)" if parallel else ""
        )
    # The guest's own collection decides (markers may depend on the backend): stage 2 runs when
    # stage 1 deselected anything.
    if parallel and any(r[0].deselected for r in results.values()):
        with run.timing.phase(f"{SHARED_MEDIA} tests") as ph:
            for g in guests:
                results[g.spec.host].append(guest_stage(run, g, SHARED_MEDIA, SHARED_MEDIA))
            ph.detail = ", ".join(f"{g.name} {results[g.spec.host][1].seconds:.1f}" for g in guests) + (
                " (one host at a time)"
            )
    elif parallel:
        run.timing.add(f"{SHARED_MEDIA} tests", 0.0, "none in the suite")
    for g in guests:
        h = g.spec.host
        stages = results[h]
        share = run.stack.results / g.name / "share"
        merge_junit(sorted(share.glob("junit-*.xml")), share / "guest-junit.xml")
        cases = [c for s in stages for c in s.cases]
        j = judge(f"{g.name} guest suite", cases, _decls(run), run.facts.get(h, {}))
        for s in stages:
            j.problems.extend(s.problems)
        run.outcome.parts.append(j)
        dev = run.devices.get(h, {}).get("device", "?")
        secs = sum(s.seconds for s in stages)
        run.outcome.summary.append(f"{g.name} ({cfg.backend}, {dev}): {j.line()} in {secs:.1f}s")
        _skip_lines(run, g.name, j)
        for s in stages:
            for ln in s.failed_lines[:20]:
                run.outcome.summary.append(f"  {g.name} {ln}")


def _decls(run: Run) -> tuple[SkipDecl, ...]:
    return run.suite.skips.decls if run.suite.skips is not None else ()


def _skip_lines(run: Run, name: str, j: Judged) -> None:
    for c, d in j.expected:
        cond = ", ".join(f"{k}={v}" for k, v in d.when.items())
        run.outcome.summary.append(f"  {name} skip ok ({cond}): {c.nodeid}")
    for c in j.unexpected:
        run.outcome.summary.append(f"  {name} UNEXPECTED SKIP: {c.nodeid}: {c.message}")


def run_host_suite(run: Run) -> None:
    session = run.write_session()
    for g in run.guests:
        g.client.close()  # the agent socket takes one client: let pytest's fixture connect
    xml = run.stack.results / "host-junit.xml"
    with contextlib.suppress(FileNotFoundError):
        xml.unlink()
    env = dict(os.environ, DAXMODE_VM_SESSION=str(session), PYTHONDONTWRITEBYTECODE="1")
    argv = [
        str(run.stack.python), "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
        "-o", "junit_family=xunit1", "--durations=10", f"--junitxml={xml}", *run.suite.host_paths,
    ]  # fmt: skip
    log(f"host-side scenarios: {' '.join(run.suite.host_paths)}")
    problems = []
    with run.timing.phase("host-side scenarios") as ph:
        with open(run.stack.results / "host-pytest.log", "w") as out:
            try:
                p = subprocess.run(
                    argv, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=run.cfg.timeout
                )
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = None
                problems.append(f"host-side scenarios timed out after {run.cfg.timeout:.0f}s")
        text = (run.stack.results / "host-pytest.log").read_text(errors="replace")
        try:
            cases = junit_cases(xml.read_text())
        except (OSError, ET.ParseError):
            cases = []
            if rc not in (5, None):
                problems.append(f"host-side pytest rc {rc} and no report")
        if rc not in (0, 1, 5, None) and not any(c.outcome in ("failed", "error") for c in cases):
            problems.append(f"host-side pytest exited {rc} (interrupted or internal error)")
        j = judge("host-side scenarios", cases, _decls(run), run.facts.get(0, {}))
        j.problems.extend(problems)
        ph.detail = j.line()
    run.outcome.parts.append(j)
    run.outcome.summary.append(
        f"host-side scenarios ({run.cfg.hosts} hosts): {j.line()} in {ph.seconds:.1f}s"
    )
    _skip_lines(run, "host-side", j)
    for ln in text.splitlines():
        if ln.startswith(("FAILED", "ERROR")):
            run.outcome.summary.append(f"  host-side {ln}")


def run_cmd(run: Run, cmd: str) -> None:
    with run.timing.phase("command") as ph:
        for g in run.guests:
            try:
                r = g.run(cmd, timeout=run.cfg.timeout)
            except GuestFailure as e:
                print(f"mhd: {g.name}: {e}", file=sys.stderr)
                raise
            sys.stdout.write(f"--- {g.name}: rc={r.rc}{' (timed out)' if r.timed_out else ''}\n")
            sys.stdout.write(r.stdout)
            if r.stderr:
                sys.stdout.write(r.stderr)
            run.outcome.commands.append((g.name, r))
            run.outcome.summary.append(
                f"{g.name}: command {'ok' if r.ok else 'FAILED'} (rc {r.rc}, {r.seconds:.1f}s)"
            )
        ph.detail = f"{len(run.guests)} host(s)"
