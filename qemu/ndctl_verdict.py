"""Judge one `make ndctl-test` run: ndctl's per-test results against the kernel's declared skips.

ndctl's tests exit 77 to skip (test/common do_skip) and print why; meson records each test's result
and output in a JSON-lines log (``meson test --logbase ndctl-test`` -> ndctl-test.json), which
qemu/ndctl-guest.sh copies to the results share. A skip is a claim about the kernel or the
emulated hardware, so each must be declared for this kernel in a skips file (qemu/ndctl-skips/):

    <test name> <Python regular expression searched in ndctl's own skip reason>
    <test name> !not-run <why the kernel cannot run it at all>

with a comment above saying why. A `!not-run` test is not started (qemu/ndctl-test.sh leaves it
out: e.g. it needs cxl_test and no cxl_test can be built for that kernel) and shows as "not run".
Every other skip, every failure or timeout, a requested test missing from the log, and a declared
skip that did not happen (a stale claim) fail the run. So does a kernel "Call Trace" logged while a
test ran (dmesg-<test>.txt): ndctl's own check_dmesg looks for it with `journalctl -k`, which finds
no journal in the harness's guest, so the check is made here.

    ndctl_verdict.py --skips FILE --kernel LABEL --expect NAME... --known NAME... -- RESULTS_DIR

Prints a table (test, result, seconds, reason) and writes it to RESULTS_DIR/ndctl-summary.md.
Exit: 0 only passes and declared skips; 1 anything else; 2 usage or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "ndctl-test.json"
MAX_LOG = 64 << 20  # meson's log of ~20 xtrace'd scripts is a few MB; refuse anything absurd
RESULTS = {"OK": "pass", "SKIP": "skip", "FAIL": "fail", "TIMEOUT": "fail", "ERROR": "fail"}
NOT_RUN = "!not-run"
NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,80}")


class BadInput(Exception):
    pass


@dataclass(frozen=True)
class Outcome:
    test: str
    result: str  # pass | skip | fail
    seconds: float
    reason: str  # ndctl's own last words for a skip or failure


@dataclass(frozen=True)
class Declared:
    test: str
    pattern: re.Pattern[str] | None  # None: not run at all, for the reason in `why`
    line: int
    why: str = ""


def reason_of(output: str) -> str:
    """The script's last message: its last non-empty line that is not `bash -x` trace (PS4 '+')."""
    for line in reversed(output.splitlines()):
        text = line.strip()
        if text and not text.startswith("+"):
            return text[:300]
    return ""


def parse_log(text: str) -> dict[str, Outcome]:
    """meson's JSON-lines test log -> outcome per bare test name ('ndctl:cxl / x.sh' -> 'x.sh')."""
    out: dict[str, Outcome] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{LOG_NAME} line {n}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise BadInput(f"{LOG_NAME} line {n}: no test name")
        name = rec["name"].rsplit(" / ", 1)[-1]
        result = rec.get("result")
        if not NAME_RE.fullmatch(name) or result not in RESULTS:
            raise BadInput(f"{LOG_NAME} line {n}: unexpected name {name!r} or result {result!r}")
        duration = rec.get("duration")
        seconds = float(duration) if isinstance(duration, (int, float)) else 0.0
        output = "".join(str(rec.get(k) or "") for k in ("stdout", "stderr"))
        verdict = RESULTS[result]
        reason = "" if verdict == "pass" else reason_of(output)
        if result == "TIMEOUT":
            reason = f"timed out after {seconds:.0f} s; last output: {reason}"
        out[name] = Outcome(name, verdict, seconds, reason)
    return out


def parse_skips(text: str) -> list[Declared]:
    decls = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test, _, regex = line.partition(" ")
        if not NAME_RE.fullmatch(test) or not regex.strip():
            raise BadInput(f"skips line {n}: expected '<test name> <regular expression>'")
        if regex.strip().startswith(NOT_RUN):
            why = regex.strip().removeprefix(NOT_RUN).strip()
            if not why:
                raise BadInput(f"skips line {n}: {NOT_RUN} needs a reason")
            decls.append(Declared(test, None, n, why))
            continue
        try:
            decls.append(Declared(test, re.compile(regex.strip()), n))
        except re.error as e:
            raise BadInput(f"skips line {n}: bad regular expression: {e}") from None
    return decls


Row = tuple[Outcome, str]


def kernel_trace(log: str) -> str:
    """The first line of a WARN/BUG report in a test's kernel log, or '' (ndctl: test/common check_dmesg)."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Call Trace" in line:
            head = next((x for x in lines[max(0, i - 40) : i] if re.search(r"WARNING:|BUG:|Oops", x)), line)
            return head.strip()[:200]
    return ""


def add_kernel_traces(outcomes: dict[str, Outcome], share: Path) -> dict[str, Outcome]:
    """A test that passed or skipped while the kernel logged a Call Trace fails, with that line."""
    out = dict(outcomes)
    for name, o in outcomes.items():
        f = share / f"dmesg-{name}.txt"
        if o.result == "fail" or not f.is_file() or f.stat().st_size > MAX_LOG:
            continue
        trace = kernel_trace(f.read_text(errors="replace"))
        if trace:
            out[name] = Outcome(name, "fail", o.seconds, f"kernel Call Trace during the test: {trace}")
    return out


def judge(outcomes: dict[str, Outcome], expect: list[str], decls: list[Declared]) -> list[Row]:
    """(outcome, verdict note) per expected test; a note starting with 'FAIL' fails the run."""
    rows = []
    for test in expect:
        o = outcomes.get(test)
        mine = [d for d in decls if d.test == test]
        not_run = next((d for d in mine if d.pattern is None), None)
        if not_run is not None:
            if o is None:
                rows.append(
                    (Outcome(test, "not run", 0.0, not_run.why), f"declared (skips line {not_run.line})")
                )
            else:
                rows.append((o, f"FAIL: declared not to run (skips line {not_run.line}) but ran"))
            continue
        if o is None:
            rows.append((Outcome(test, "missing", 0.0, "not in meson's log"), "FAIL: did not run"))
            continue
        if o.result == "fail":
            rows.append((o, "FAIL"))
        elif o.result == "skip":
            hit = next((d for d in mine if d.pattern and d.pattern.search(o.reason)), None)
            rows.append((o, f"declared (skips line {hit.line})" if hit else "FAIL: undeclared skip"))
        elif mine:
            rows.append((o, f"FAIL: declared to skip (skips line {mine[0].line}) but ran"))
        else:
            rows.append((o, ""))
    return rows


def table(rows: list[Row], label: str) -> str:
    lines = [
        f"ndctl 85 tests on {label}",
        "",
        "| test | result | s | ndctl's reason | verdict |",
        "|---|---|---:|---|---|",
    ]
    for o, note in rows:
        reason = o.reason.replace("|", "\\|")
        lines.append(f"| {o.test} | {o.result} | {o.seconds:.0f} | {reason} | {note or 'ok'} |")
    counts = {k: sum(o.result == k for o, _ in rows) for k in ("pass", "skip", "not run", "fail", "missing")}
    bad = sum(note.startswith("FAIL") for _, note in rows)
    lines += ["", ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; {bad} not accepted"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ndctl_verdict.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--skips", type=Path, required=True)
    ap.add_argument("--kernel", required=True, help="label for the table (kernel and its origin)")
    ap.add_argument("--expect", nargs="+", required=True, help="the tests that were asked for")
    ap.add_argument("--known", nargs="+", required=True, help="every test ndctl's build defines")
    ap.add_argument("results", type=Path)
    a = ap.parse_args(argv)
    try:
        logs = sorted(a.results.glob(f"host*/share/{LOG_NAME}"))
        if len(logs) > 1:
            raise BadInput(f"expected one host*/share/{LOG_NAME} under {a.results}, found {len(logs)}")
        if logs and logs[0].stat().st_size > MAX_LOG:
            raise BadInput(f"{logs[0]} is larger than {MAX_LOG >> 20} MiB")
        # No log at all (the guest never got to run meson): every test shows as missing.
        outcomes = parse_log(logs[0].read_text(errors="replace")) if logs else {}
        if logs:
            outcomes = add_kernel_traces(outcomes, logs[0].parent)
        decls = parse_skips(a.skips.read_text())
        unknown = sorted({d.test for d in decls} - set(a.known))
        if unknown:
            raise BadInput(f"{a.skips} declares tests ndctl does not have: {', '.join(unknown)}")
    except (OSError, BadInput) as e:
        print(f"daxmode: ndctl_verdict: {e}", file=sys.stderr)
        return 2
    rows = judge(outcomes, a.expect, decls)
    text = table(rows, a.kernel)
    (a.results / "ndctl-summary.md").write_text(text)
    sys.stdout.write(text)
    return 1 if any(note.startswith("FAIL") for _, note in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
