"""Declared skips and verdicts (mhd.host.verdict, mhd.host.report): JUnit outcomes, the per-kernel
declared-skips files under qemu/skips, and what fails a run."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from mhd.host import config, report, timing, verdict

PROJECT = Path(__file__).resolve().parents[2]

# ---- verdicts: declared skips -------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="6">
<testcase classname="tests.vm.guest.test_modes" name="test_ok" file="tests/vm/guest/test_modes.py"
  time="1.5"/>
<testcase classname="tests.vm.guest.test_modes.TestGroup" name="test_in_class[cxl]"
  file="tests/vm/guest/test_modes.py" time="0.1">
  <skipped type="pytest.skip" message="needs DAXMODE_VM_ONLINE_OK=1 here">skip</skipped></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_bad" file="tests/vm/guest/test_ops.py" time="2">
  <failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_teardown" file="tests/vm/guest/test_ops.py" time="2">
  <error message="failed on teardown">trace</error></testcase>
<testcase classname="" name="tests.vm.guest.test_broken" time="0">
  <error message="collection failure">x</error></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_skip" file="tests/vm/guest/test_ops.py" time="0">
  <skipped message="no udevd in this guest"/></testcase>
</testsuite></testsuites>"""


def test_junit_cases_rebuild_node_ids_and_outcomes() -> None:
    got = [(c.nodeid, c.outcome) for c in verdict.junit_cases(JUNIT)]
    assert got == [
        ("tests/vm/guest/test_modes.py::test_ok", "passed"),
        ("tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]", "skipped"),
        ("tests/vm/guest/test_ops.py::test_bad", "failed"),
        ("tests/vm/guest/test_ops.py::test_teardown", "error"),
        ("tests.vm.guest.test_broken", "error"),
        ("tests/vm/guest/test_ops.py::test_skip", "skipped"),
    ]
    assert verdict.junit_cases(JUNIT)[1].message == "needs DAXMODE_VM_ONLINE_OK=1 here"


DECLS = """
[[skip]]
test = "tests/vm/guest/test_modes.py::TestGroup::test_in_class"
when = { online_ok = false }
message = "DAXMODE_VM_ONLINE_OK"
because = "memory is never onlined there"

[[skip]]
test = "tests/vm/guest/test_ops.py::*"
when = { udev = false, backend = ["cxl", "nvdimm"] }
because = "no udevd"
"""


def parse(text: str) -> list[verdict.SkipDecl]:
    return verdict.parse_declarations(tomllib.loads(text), "x.toml")


def facts_for(**kw) -> dict:  # type: ignore[no-untyped-def]
    return {
        "backend": "cxl",
        "hosts": 2,
        "online_ok": False,
        "udev": True,
        "kernel": "7.3.4+deb13-amd64",
        **kw,
    }


def test_a_skip_is_expected_only_under_its_facts_and_message() -> None:
    decls = parse(DECLS)
    cases = verdict.junit_cases(JUNIT)
    j = verdict.judge("host0", cases, decls, facts_for())
    assert [c.nodeid for c, _ in j.expected] == [
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]"
    ]
    assert [c.nodeid for c in j.unexpected] == ["tests/vm/guest/test_ops.py::test_skip"]  # udev is there
    j2 = verdict.judge("host0", cases, decls, facts_for(udev=False, online_ok=True))
    assert [c.nodeid for c in j2.unexpected] == [
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]"
    ]
    other = verdict.Case(
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class", "skipped", "something else"
    )
    assert verdict.judge("h", [other], decls, facts_for()).unexpected == [other]  # message must match
    elsewhere = verdict.Case(
        "tests/other/test_modes.py::TestGroup::test_in_class", "skipped", "DAXMODE_VM_ONLINE_OK"
    )
    assert verdict.judge("h", [elsewhere], decls, facts_for()).unexpected == [elsewhere]  # another directory


def test_facts_match_types_lists_and_globs() -> None:
    assert verdict.facts_hold({"kernel": "7.3.*"}, facts_for())
    assert not verdict.facts_hold({"kernel": "6.*"}, facts_for())
    assert verdict.facts_hold({"backend": ["nvdimm", "cxl"]}, facts_for())
    assert not verdict.facts_hold({"hosts": True}, facts_for(hosts=1))  # True is not 1
    assert not verdict.facts_hold({"udev": False}, {})  # an unknown fact holds nothing


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[skip]]\ntest = "a.py::t"\nbecause = "x"\n', "non-empty when"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = {}\nbecause = "x"\n', "non-empty when"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { kernal = "7" }\nbecause = "x"\n', "unknown fact 'kernal'"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { hosts = "2" }\nbecause = "x"\n', "hosts takes a int"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\n', "needs because"),
        (
            '[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\nbecause = "x"\nmessage = "("\n',
            "bad message regex",
        ),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\nbecause = "x"\nreason = "y"\n', "unknown key"),
        ('[[skip]]\nwhen = { udev = false }\nbecause = "x"\n', "needs test"),
    ],
)
def test_malformed_declarations_are_refused(text: str, match: str) -> None:
    with pytest.raises(verdict.DeclarationError, match=match):
        parse(text)


KERNEL = '[kernel]\nname = "k"\nrelease = ["7.3.4-*"]\n'
SKIP = '[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\nbecause = "x"\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[skips]\n" + KERNEL, "unknown key"),
        ("[[skip]\n", "k.toml"),
        (SKIP, "needs \\[kernel\\]"),
        ('[kernel]\nname = "k"\n', "needs \\[kernel\\]"),
        ('[kernel]\nname = "k"\nrelease = "7.*"\n', "non-empty list of globs"),
        ('[kernel]\nname = "k"\nrelease = []\n', "non-empty list of globs"),
        ('include = "inc.toml"\n' + KERNEL, "include must be a list"),
        ('include = ["absent.toml"]\n' + KERNEL, "absent.toml"),
        ('include = ["kernel.toml"]\n' + KERNEL, "holds \\[\\[skip\\]\\] tables only"),
    ],
)
def test_malformed_skip_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "kernel.toml").write_text(KERNEL)
    (tmp_path / "k.toml").write_text(text)
    with pytest.raises(verdict.DeclarationError, match=match):
        verdict.load_skip_file(tmp_path / "k.toml")


def test_a_kernel_file_holds_its_own_and_its_includes_declarations(tmp_path: Path) -> None:
    (tmp_path / "setup.toml").write_text(SKIP)
    (tmp_path / "k.toml").write_text('include = ["setup.toml"]\n' + KERNEL + SKIP.replace("a.py", "b.py"))
    f = verdict.load_skip_file(tmp_path / "k.toml")
    assert [d.test for d in f.decls] == ["b.py::t", "a.py::t"]
    assert f.name == "k" and f.fits("7.3.4-daxmode") and not f.fits("6.1.0")
    assert f.decls[1].where.endswith("setup.toml: skip #1")


def test_the_skip_file_is_chosen_by_name_path_or_the_kernel_release(tmp_path: Path) -> None:
    (tmp_path / "setup.toml").write_text(SKIP)
    (tmp_path / "stock.toml").write_text(KERNEL.replace("7.3.4-*", "7.3.4+deb13-*"))
    (tmp_path / "famfs.toml").write_text(KERNEL.replace("7.3.4-*", "*-daxmode"))
    (tmp_path / "other.toml").write_text(KERNEL.replace("7.3.4-*", "*-daxmode"))
    assert sorted(verdict.skip_files(tmp_path)) == ["famfs", "other", "stock"]  # setup.toml is no kernel
    assert verdict.choose_skip_file(None, "7.3.4+deb13-amd64", tmp_path).name == "stock"
    assert verdict.choose_skip_file("famfs", "7.3.4-daxmode", tmp_path).name == "famfs"
    assert verdict.choose_skip_file(str(tmp_path / "other.toml"), "7.3.4-daxmode", tmp_path).name == "other"
    with pytest.raises(verdict.DeclarationError, match="2 declared-skips files fit \\(famfs, other\\)"):
        verdict.choose_skip_file(None, "7.3.4-daxmode", tmp_path)
    with pytest.raises(verdict.DeclarationError, match="0 declared-skips files fit"):
        verdict.choose_skip_file(None, "6.1.0", tmp_path)
    with pytest.raises(verdict.DeclarationError, match=r"releases \*-daxmode, not 7\.3\.4\+deb13"):
        verdict.choose_skip_file("famfs", "7.3.4+deb13-amd64", tmp_path)
    with pytest.raises(verdict.DeclarationError, match="no such kernel file"):
        verdict.choose_skip_file("famfs-v9", "7.3.4-daxmode", tmp_path)


def test_run_verdict_fails_on_failures_unexpected_skips_empty_parts_and_nothing_passed() -> None:
    ok = verdict.Case("a.py::t", "passed")
    skipped = verdict.Case("a.py::s", "skipped", "why")
    good = verdict.judge("p", [ok], [], {})
    assert verdict.run_verdict([good]) == (True, [])
    bad, why = verdict.run_verdict([verdict.judge("p", [ok, skipped], [], {})])
    assert not bad and why == ["p: UNEXPECTED SKIP a.py::s: why"]
    bad, why = verdict.run_verdict([good, verdict.judge("q", [], [], {})])
    assert not bad and why == ["q: no tests collected"]
    decl = parse('[[skip]]\ntest="a.py::s"\nwhen={udev=false}\nbecause="b"\n')
    only_skips = verdict.judge("p", [skipped], decl, {"udev": False})
    assert not only_skips.unexpected
    bad, why = verdict.run_verdict([only_skips])
    assert not bad and why == ["no test passed: every test was skipped or none ran"]
    bad, why = verdict.run_verdict(
        [verdict.judge("p", [ok, verdict.Case("a.py::f", "error", "boom")], [], {})]
    )
    assert not bad and why == ["p: ERROR a.py::f: boom"]


def test_every_kernel_file_parses_and_names_tests_that_exist() -> None:
    import ast
    import fnmatch

    files = verdict.skip_files()
    assert {"debian", "famfs-v10", "famfs-v1"} <= set(files)
    for p in files.values():
        for d in verdict.load_skip_file(p).decls:
            file, _, name = d.test.partition("::")
            path = PROJECT / file
            assert path.is_file(), f"{d.where}: {path} does not exist"
            tree = ast.parse(path.read_text())
            funcs = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
            assert any(fnmatch.fnmatchcase(f, name) for f in funcs if f.startswith("test")), (
                f"{d.where}: no {name}"
            )


FAMFS_SKIP = verdict.Case(
    "tests/vm/guest/test_famfs_mount.py::test_famfs_kernel_fails_io_on_a_size_change",
    "skipped",
    "fuse-famfs: the size rule is the famfs kernel's (a stock kernel has no fmaps)",
)


def test_a_famfs_skip_passes_on_the_stock_kernel_and_fails_on_the_famfs_kernel() -> None:
    debian = verdict.choose_skip_file(None, config.DEFAULT_KVER)
    assert debian.name == "debian"
    stock = facts_for(fuse_famfs=False, famfsv1=False)
    assert verdict.judge("h", [FAMFS_SKIP], debian.decls, stock).expected
    famfs = verdict.choose_skip_file("famfs-v10", "7.3.4-daxmode")
    assert verdict.judge("h", [FAMFS_SKIP], famfs.decls, stock).unexpected == [FAMFS_SKIP]
    # what the famfs kernel run (two CXL hosts) does skip stays declared there
    online = verdict.Case(
        "tests/vm/guest/test_modes.py::test_rollback_midway_through_onlining",
        "skipped",
        "needs DAXMODE_VM_ONLINE_OK=1 (onlines memory)",
    )
    assert verdict.judge("h", [online], famfs.decls, facts_for(fuse_famfs=True)).expected


def test_the_famfs_v1_kernel_may_skip_fsdev_but_not_the_famfs_v1_tests() -> None:
    """The 6.12 famfs-v1 kernel has no fsdev_dax: fsdev tests may skip there, never the famfs-v1 tests;
    on Debian's kernel it is the other way round."""
    fsdev = verdict.Case(
        "tests/vm/guest/test_modes.py::test_all_nine_pairs",
        "skipped",
        "kernel 6.12.117-daxmode has no fsdev_dax driver: fsdev mode does not exist on it",
    )
    v1 = verdict.Case(
        "tests/vm/guest/test_famfs_v1.py::test_mount_reads_back",
        "skipped",
        "famfs-v1: kernel 7.3.4+deb13-amd64 has no standalone famfs module",
    )
    v1_kernel = verdict.choose_skip_file(None, "6.12.117-daxmode")
    assert v1_kernel.name == "famfs-v1"
    on_v1 = facts_for(kernel="6.12.117-daxmode", fsdev=False, famfsv1=True, fuse_famfs=False)
    assert [c for c, _ in verdict.judge("h", [fsdev], v1_kernel.decls, on_v1).expected] == [fsdev]
    assert verdict.judge("h", [v1], v1_kernel.decls, on_v1).unexpected == [v1]
    debian = verdict.choose_skip_file(None, config.DEFAULT_KVER)
    stock = facts_for(fsdev=True, famfsv1=False, fuse_famfs=False)
    assert [c for c, _ in verdict.judge("h", [v1], debian.decls, stock).expected] == [v1]
    assert verdict.judge("h", [fsdev], debian.decls, stock).unexpected == [fsdev]


def test_the_report_writes_the_verdict_for_scripts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ok = verdict.Case("a.py::t", "passed")
    outcome = report.Outcome(summary=["host0: 1 passed"])
    outcome.parts.append(verdict.judge("host0", [ok, FAMFS_SKIP], [], {}))
    assert report.report(outcome, timing.Timing(), tmp_path, commands_only=False) == 1
    got = json.loads((tmp_path / "verdict.json").read_text())
    assert got["verdict"] == "FAIL" and got["unexpected_skips"] == 1 and got["failed"] == 0
    out = capsys.readouterr().out
    assert "1 passed, 0 failed, 1 skipped (0 expected, 1 unexpected)" in out and "verdict: FAIL" in out
    outcome.parts[0] = verdict.judge("host0", [ok], [], {})
    assert report.report(outcome, timing.Timing(), tmp_path, commands_only=False) == 0
    assert json.loads((tmp_path / "verdict.json").read_text())["verdict"] == "PASS"


def test_stage_reports_merge_into_one_guest_junit(tmp_path: Path) -> None:
    (tmp_path / "junit-parallel.xml").write_text(JUNIT)
    (tmp_path / "junit-shared_media.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="1"><testcase classname="tests.vm.guest.test_f" '
        'name="test_m" file="tests/vm/guest/test_f.py"/></testsuite></testsuites>'
    )
    (tmp_path / "junit-broken.xml").write_text("<testsuites")
    dest = tmp_path / "guest-junit.xml"
    verdict.merge_junit(sorted(tmp_path.glob("junit-*.xml")), dest)
    cases = verdict.junit_cases(dest.read_text())
    assert len(cases) == 7 and cases[-1].nodeid == "tests/vm/guest/test_f.py::test_m"
