"""qemu/ndctl_verdict.py on text only: meson's test log and the declared skips of `make ndctl-test`.

The real use -- ndctl 85's suites booted on a kernel with its own nfit_test/cxl_test -- is
`make ndctl-test`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qemu"))

import ndctl_verdict as nv  # noqa: E402


def rec(name: str, result: str, out: str = "", duration: float = 1.5) -> str:
    return json.dumps({"name": f"ndctl:cxl / {name}", "result": result, "duration": duration, "stdout": out})


SKIP_OUT = "+ modinfo cxl_translate\n+ do_skip 'x'\nkernel 7.3.4: test requires cxl_translate kernel module\n"
FAIL_OUT = "+ false\n++ err 42\ntest/cxl-elc.sh: failed at line 42\n+ exit 1\n"


def run(tmp_path: Path, lines: list[str], skips: str, expect: list[str]) -> tuple[int, str]:
    share = tmp_path / "res" / "host0" / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / nv.LOG_NAME).write_text("\n".join(lines) + "\n")
    (tmp_path / "k.skips").write_text(skips)
    known = ["a.sh", "b.sh", "c.sh", "cxl-elc.sh", "cxl-translate.sh"]
    argv = ["--skips", str(tmp_path / "k.skips"), "--kernel", "K", "--expect", *expect, "--known", *known]
    rc = nv.main([*argv, "--", str(tmp_path / "res")])
    return rc, (tmp_path / "res" / "ndctl-summary.md").read_text() if rc != 2 else ""


def test_reason_is_the_last_line_that_is_not_xtrace() -> None:
    assert nv.reason_of(SKIP_OUT) == "kernel 7.3.4: test requires cxl_translate kernel module"
    assert nv.reason_of(FAIL_OUT) == "test/cxl-elc.sh: failed at line 42"
    assert nv.reason_of("+ only trace\n\n") == ""


def test_passes_and_a_declared_skip_pass_the_run(tmp_path: Path) -> None:
    lines = [rec("a.sh", "OK"), rec("cxl-translate.sh", "SKIP", SKIP_OUT)]
    skips = "# cxl_translate is not built here\ncxl-translate.sh requires cxl_translate\n"
    rc, table = run(tmp_path, lines, skips, ["a.sh", "cxl-translate.sh"])
    assert rc == 0
    assert (
        "| cxl-translate.sh | skip | 2 | kernel 7.3.4: test requires cxl_translate kernel module |" in table
    )
    assert "declared (skips line 2)" in table and "1 pass, 1 skip; 0 not accepted" in table


@pytest.mark.parametrize(
    ("lines", "skips", "expect", "why"),
    [
        ([rec("a.sh", "SKIP", SKIP_OUT)], "", ["a.sh"], "FAIL: undeclared skip"),
        # The declaration is for another reason than the one ndctl gave.
        ([rec("a.sh", "SKIP", SKIP_OUT)], "a.sh no nfit_test\n", ["a.sh"], "FAIL: undeclared skip"),
        ([rec("cxl-elc.sh", "FAIL", FAIL_OUT)], "", ["cxl-elc.sh"], "FAIL"),
        ([rec("a.sh", "TIMEOUT", "+ x\nstill waiting\n", 1800)], "", ["a.sh"], "timed out after 1800 s"),
        ([rec("a.sh", "OK")], "a.sh anything\n", ["a.sh"], "FAIL: declared to skip (skips line 1) but ran"),
        ([rec("a.sh", "OK")], "", ["a.sh", "b.sh"], "FAIL: did not run"),
        ([rec("c.sh", "OK")], "c.sh !not-run no cxl_test here\n", ["c.sh"], "declared not to run"),
    ],
)
def test_anything_else_fails_the_run(
    tmp_path: Path, lines: list[str], skips: str, expect: list[str], why: str
) -> None:
    rc, table = run(tmp_path, lines, skips, expect)
    assert rc == 1 and why in table


def test_a_not_run_declaration_shows_its_reason(tmp_path: Path) -> None:
    rc, table = run(tmp_path, [rec("a.sh", "OK")], "c.sh !not-run no cxl_test here\n", ["a.sh", "c.sh"])
    assert rc == 0 and "| c.sh | not run | 0 | no cxl_test here | declared (skips line 1) |" in table


@pytest.mark.parametrize(
    ("log", "skips", "match"),
    [
        ("not json\n", "", "not JSON"),
        (json.dumps({"name": "ndctl:cxl / a.sh", "result": "MAYBE"}) + "\n", "", "unexpected name"),
        (json.dumps({"name": "ndctl:cxl / a b;rm", "result": "OK"}) + "\n", "", "unexpected name"),
        (rec("a.sh", "OK") + "\n", "a.sh\n", "expected '<test name> <regular expression>'"),
        (rec("a.sh", "OK") + "\n", "a.sh (\n", "bad regular expression"),
        (rec("a.sh", "OK") + "\n", "a.sh !not-run\n", "needs a reason"),
        (rec("a.sh", "OK") + "\n", "zz.sh x\n", "ndctl does not have: zz.sh"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log: str, skips: str, match: str
) -> None:
    share = tmp_path / "res" / "host0" / "share"
    share.mkdir(parents=True)
    (share / nv.LOG_NAME).write_text(log)
    (tmp_path / "k.skips").write_text(skips)
    argv = ["--skips", str(tmp_path / "k.skips"), "--kernel", "K", "--expect", "a.sh", "--known", "a.sh"]
    assert nv.main([*argv, "--", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("daxmode: ndctl_verdict:") and match in err and err.count("\n") == 1


def test_a_kernel_call_trace_during_a_test_fails_it(tmp_path: Path) -> None:
    """ndctl's check_dmesg reads journalctl, which has no journal in the guest; the verdict checks."""
    share = tmp_path / "res" / "host0" / "share"
    share.mkdir(parents=True)
    (share / "dmesg-b.sh.txt").write_text(
        "[  10.1] cxl_region region0: bind\n[  10.2] WARNING: CPU: 1 PID: 7 at drivers/cxl/core/region.c:99\n"
        "[  10.3] Modules linked in: cxl_test\n[  10.4] Call Trace:\n[  10.5]  <TASK>\n"
    )
    (share / "dmesg-a.sh.txt").write_text("[   9.0] nd_pmem namespace0.0: unable to guarantee persistence\n")
    rc, table = run(tmp_path, [rec("a.sh", "OK"), rec("b.sh", "OK")], "", ["a.sh", "b.sh"])
    assert rc == 1
    assert "| a.sh | pass |" in table
    assert "| b.sh | fail | 2 | kernel Call Trace during the test: [  10.2] WARNING: CPU: 1" in table
