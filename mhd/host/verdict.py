"""Honest verdicts: every test's outcome, judged against the skips its suite declares.

A skip is a claim.  Each suite directory may hold ``expected-skips.toml``::

    [[skip]]
    test = "test_modes.py::test_rollback_midway_through_onlining"   # glob, relative to the file
    when = { online_ok = false }     # facts of the run; all must hold (a list: any of its values)
    message = "needs DAXMODE_VM_ONLINE_OK"   # optional regex the skip message must contain
    because = "memory is onlined only on a single nvdimm host: ..."

The run fails on a failed or erroring test, a skip no declaration justifies, a suite part that
collected no tests, or a run in which nothing passed.  Outcomes come from pytest's JUnit XML
(``-o junit_family=xunit1``, which keeps each test's file).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

DECL_FILE = "expected-skips.toml"

FACTS = {
    "backend": str,
    "hosts": int,
    "accel": str,
    "online_ok": bool,
    "kernel": str,
    "fuse_famfs": bool,
    "famfsv1": bool,
    "udev": bool,
    "daxctl": bool,
    "famfs_tools": bool,
    "host_state_planted": bool,
}
"""Facts a declaration may name (mhd.facts gathers the guest's; the harness adds the run's)."""


class DeclarationError(ValueError):
    pass


@dataclass(frozen=True)
class Case:
    nodeid: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SkipDecl:
    where: str  # file:index, for messages
    base: str  # directory of the declaration file, relative to the project ("tests/vm/guest")
    test: str
    when: dict
    message: str | None = None
    because: str = ""

    def covers(self, case: Case, facts: dict) -> bool:
        rel = case.nodeid
        prefix = self.base.rstrip("/") + "/"
        if self.base and not rel.startswith(prefix):
            return False
        rel = rel[len(prefix) :] if self.base else rel
        if not (fnmatch.fnmatchcase(rel, self.test) or fnmatch.fnmatchcase(rel.split("[", 1)[0], self.test)):
            return False
        if not facts_hold(self.when, facts):
            return False
        return self.message is None or re.search(self.message, case.message) is not None


def facts_hold(when: dict, facts: dict) -> bool:
    for k, want in when.items():
        have = facts.get(k)
        options = want if isinstance(want, list) else [want]
        ok = False
        for w in options:
            if isinstance(w, str) and isinstance(have, str):
                ok = fnmatch.fnmatchcase(have, w)
            else:
                ok = have == w and type(have) is type(w)
            if ok:
                break
        if not ok:
            return False
    return True


def parse_declarations(text: str, base: str, where: str) -> list[SkipDecl]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DeclarationError(f"{where}: {e}") from None
    extra = set(data) - {"skip"}
    if extra:
        raise DeclarationError(f"{where}: unknown table(s) {', '.join(sorted(extra))}; expected [[skip]]")
    out = []
    for i, item in enumerate(data.get("skip", []), 1):
        at = f"{where}: skip #{i}"
        if not isinstance(item, dict):
            raise DeclarationError(f"{at}: not a table")
        unknown = set(item) - {"test", "when", "message", "because"}
        if unknown:
            raise DeclarationError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
        test, when = item.get("test"), item.get("when")
        if not isinstance(test, str) or not test:
            raise DeclarationError(f'{at}: needs test = "file.py::name"')
        if not isinstance(when, dict) or not when:
            raise DeclarationError(f"{at}: needs a non-empty when = {{ fact = value }}: facts justify a skip")
        for k, v in when.items():
            if k not in FACTS:
                raise DeclarationError(f"{at}: unknown fact {k!r} (known: {', '.join(FACTS)})")
            for x in v if isinstance(v, list) else [v]:
                if type(x) is not FACTS[k]:
                    raise DeclarationError(f"{at}: {k} takes a {FACTS[k].__name__}, got {x!r}")
        msg = item.get("message")
        if msg is not None:
            try:
                re.compile(msg)
            except (re.error, TypeError) as e:
                raise DeclarationError(f"{at}: bad message regex: {e}") from None
        if not str(item.get("because", "")).strip():
            raise DeclarationError(f'{at}: needs because = "why the facts justify the skip"')
        out.append(SkipDecl(at, base, test, dict(when), msg, item["because"]))
    return out


def load_declarations(project: Path, suite_dirs: list[Path]) -> list[SkipDecl]:
    """Every expected-skips.toml under the given directories (each test file's dir and its parents)."""
    seen: set[Path] = set()
    decls: list[SkipDecl] = []
    for d in suite_dirs:
        for f in sorted(d.rglob(DECL_FILE)) if d.is_dir() else []:
            if f in seen:
                continue
            seen.add(f)
            base = f.parent.relative_to(project).as_posix()
            decls += parse_declarations(f.read_text(), base, str(f.relative_to(project)))
    return decls


def _nodeid(file: str | None, classname: str, name: str) -> str:
    if not file:
        if not classname:
            return name
        return classname.replace(".", "/") + ".py::" + name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    classes = []
    if classname.startswith(module + "."):
        classes = classname[len(module) + 1 :].split(".")
    return "::".join([file, *classes, name])


def junit_cases(xml_text: str) -> list[Case]:
    """One Case per test in pytest's JUnit XML; a failure or error in any phase wins over a pass."""
    root = ET.fromstring(xml_text)
    cases = []
    for tc in root.iter("testcase"):
        nodeid = _nodeid(tc.get("file"), tc.get("classname", ""), tc.get("name", ""))
        outcome, message = "passed", ""
        for child in tc:
            tag = child.tag
            if tag in ("failure", "error"):
                outcome = "failed" if tag == "failure" else "error"
                message = child.get("message", "") or (child.text or "")[:200]
                break
            if tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        cases.append(Case(nodeid, outcome, message, float(tc.get("time") or 0)))
    return cases


def merge_junit(sources: list[Path], dest: Path) -> None:
    """One JUnit file with every testsuite of ``sources`` (the stages of one guest's run), for
    tools that read one file per guest (qemu/skip_policy.py reads host*/share/guest-junit.xml)."""
    out = ET.Element("testsuites")
    for src in sources:
        try:
            root = ET.parse(src).getroot()
        except (OSError, ET.ParseError):
            continue
        out.extend([root] if root.tag == "testsuite" else list(root.iter("testsuite")))
    ET.ElementTree(out).write(dest, encoding="utf-8", xml_declaration=True)


@dataclass
class Judged:
    """One suite part (a guest's suite, or the host-side scenarios) after judging its skips."""

    name: str
    cases: list[Case] = field(default_factory=list)
    expected: list[tuple[Case, SkipDecl]] = field(default_factory=list)
    unexpected: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # no tests collected, pytest crashed, ...

    @property
    def passed(self) -> int:
        return sum(c.outcome == "passed" for c in self.cases)

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if c.outcome in ("failed", "error")]

    @property
    def skipped(self) -> int:
        return sum(c.outcome == "skipped" for c in self.cases)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.unexpected or self.problems)

    def line(self) -> str:
        s = f"{self.passed} passed, {len(self.failed)} failed"
        if self.skipped:
            s += f", {self.skipped} skipped"
            if self.unexpected:
                s += f" ({len(self.unexpected)} UNEXPECTED)"
        return s


def judge(name: str, cases: list[Case], decls: list[SkipDecl], facts: dict) -> Judged:
    j = Judged(name, list(cases))
    if not cases:
        j.problems.append("no tests collected")
    for c in cases:
        if c.outcome != "skipped":
            continue
        d = next((d for d in decls if d.covers(c, facts)), None)
        if d is None:
            j.unexpected.append(c)
        else:
            j.expected.append((c, d))
    return j


def run_verdict(parts: list[Judged]) -> tuple[bool, list[str]]:
    """Whether the run passes, and one line per reason it does not."""
    why = []
    for p in parts:
        for prob in p.problems:
            why.append(f"{p.name}: {prob}")
        for c in p.failed:
            why.append(f"{p.name}: {c.outcome.upper()} {c.nodeid}" + (f": {c.message}" if c.message else ""))
        for c in p.unexpected:
            why.append(f"{p.name}: UNEXPECTED SKIP {c.nodeid}: {c.message}")
    if parts and not any(p.passed for p in parts):
        why.append("no test passed: every test was skipped or none ran")
    return not why, why
