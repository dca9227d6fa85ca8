"""The end of every run: summary lines, the per-phase timing table, the counts and the verdict.

``verdict.json`` in the results directory says the same for scripts (qemu/kernel-test.sh tells a
skip its kernel does not justify from a failure with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mhd.host.agentclient import Result
from mhd.host.timing import Timing
from mhd.host.verdict import Judged, run_verdict


@dataclass
class Outcome:
    """What the suite phases found: one judged part per suite part, or the --cmd results."""

    summary: list[str] = field(default_factory=list)
    parts: list[Judged] = field(default_factory=list)
    commands: list[tuple[str, Result]] = field(default_factory=list)


def report(outcome: Outcome, timing: Timing, results: Path, commands_only: bool) -> int:
    """Print everything and return the exit code (0 pass, 1 fail)."""
    for line in outcome.summary:
        print(line)
    if commands_only:
        failed = sum(not r.ok for _, r in outcome.commands)
        print(timing.table())
        print(f"{len(outcome.commands) - failed} passed, {failed} failed")
        return 1 if failed else 0
    ok, why = run_verdict(outcome.parts)
    print(timing.table())
    (results / "timing.json").write_text(timing.to_json())
    parts = outcome.parts
    counts = {
        "passed": sum(p.passed for p in parts),
        "failed": sum(len(p.failed) for p in parts),
        "skipped": sum(p.skipped for p in parts),
        "unexpected_skips": sum(len(p.unexpected) for p in parts),
        "problems": sum(len(p.problems) for p in parts),
    }
    (results / "verdict.json").write_text(
        json.dumps({"verdict": "PASS" if ok else "FAIL", **counts, "why": why}, indent=1)
    )
    line = f"{counts['passed']} passed, {counts['failed']} failed"
    if counts["skipped"]:
        skipped, unexpected = counts["skipped"], counts["unexpected_skips"]
        line += f", {skipped} skipped ({skipped - unexpected} expected, {unexpected} unexpected)"
    print(line)
    if not ok:
        print("verdict: FAIL")
        for w in why:
            print(f"  {w}")
        return 1
    print("verdict: PASS")
    return 0
