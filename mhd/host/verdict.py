"""Honest verdicts: every outcome judged against the skips declared for the kernel under test.

A skip is a claim.  The one judge of the harness reads one declared-skips file per kernel
(``qemu/skips/<name>.toml``: ``debian`` for the stock kernel, ``famfs-v10`` for the famfs kernel)::

    include = ["setup.toml"]           # optional: declarations the run's setup justifies on any kernel

    [kernel]
    name = "Debian's 7.3.4"
    release = ["7.3.4+deb13-*"]        # globs; the booted kernel's release must match one

    [[skip]]
    test = "tests/vm/guest/test_modes.py::test_rollback_midway_through_onlining"  # glob, from the project
    when = { online_ok = false }     # facts of the run; all must hold (a list: any of its values)
    message = "needs DAXMODE_VM_ONLINE_OK"   # optional regex the skip message must contain
    because = "memory is onlined only on a single nvdimm host: ..."

The run fails on a failed or erroring test, a skip no declaration justifies, a suite part that
collected no tests, or a run in which nothing passed.  Outcomes come from pytest's JUnit XML
(``-o junit_family=xunit1``, which keeps each test's file); other runners (a shell suite) hand
their results over as ``Case`` objects with node ids of their own.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mhd.constants import PROJECT

SKIPS_DIR = Path(PROJECT) / "qemu" / "skips"
"""One declared-skips file per kernel, and the files they include."""

FACTS = {
    "backend": str,
    "hosts": int,
    "accel": str,
    "online_ok": bool,
    "kernel": str,
    "fuse_famfs": bool,
    "famfsv1": bool,
    "fsdev": bool,
    "udev": bool,
    "daxctl": bool,
    "famfs_tools": bool,
    "host_state_planted": bool,
}
"""Facts a declaration may name (mhd.guest.facts gathers the guest's; the harness adds the run's)."""


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
    test: str  # glob over node ids, relative to the project ("tests/vm/guest/test_ops.py::*")
    when: dict
    message: str | None = None
    because: str = ""

    def covers(self, case: Case, facts: dict) -> bool:
        rel = case.nodeid
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


def parse_declarations(data: dict, where: str) -> list[SkipDecl]:
    """The ``[[skip]]`` tables of one parsed file."""
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
        out.append(SkipDecl(at, test, dict(when), msg, item["because"]))
    return out


@dataclass(frozen=True)
class SkipFile:
    """The skips one kernel justifies: its own declarations and those of the files it includes."""

    name: str  # file stem: debian, famfs-v10, ...
    path: str  # as messages show it (relative to the project when inside it)
    kernel: str  # what the file says the kernel is
    release: tuple[str, ...]  # globs the booted kernel's release must match
    decls: tuple[SkipDecl, ...]

    def fits(self, release: str) -> bool:
        return any(fnmatch.fnmatchcase(release, g) for g in self.release)


def _read_toml(path: Path, where: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise DeclarationError(f"{where}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DeclarationError(f"{where}: {e}") from None


def _where(path: Path) -> str:
    try:
        return path.resolve().relative_to(PROJECT).as_posix()
    except ValueError:
        return str(path)


def load_skip_file(path: Path) -> SkipFile:
    """Parse a kernel's declared-skips file (and its includes, which hold ``[[skip]]`` only)."""
    where = _where(path)
    data = _read_toml(path, where)
    extra = set(data) - {"include", "kernel", "skip"}
    if extra:
        raise DeclarationError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    kernel = data.get("kernel")
    if not isinstance(kernel, dict) or set(kernel) != {"name", "release"}:
        raise DeclarationError(f'{where}: needs [kernel] with name = "..." and release = ["glob", ...]')
    release = kernel["release"]
    if not (isinstance(release, list) and release and all(isinstance(g, str) and g for g in release)):
        raise DeclarationError(f"{where}: kernel.release must be a non-empty list of globs")
    decls = parse_declarations(data, where)
    includes = data.get("include", [])
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise DeclarationError(f"{where}: include must be a list of file names")
    for inc in includes:
        ipath = path.parent / inc
        iwhere = _where(ipath)
        idata = _read_toml(ipath, iwhere)
        if set(idata) - {"skip"}:
            raise DeclarationError(f"{iwhere}: an included file holds [[skip]] tables only")
        decls += parse_declarations(idata, iwhere)
    return SkipFile(path.stem, where, str(kernel["name"]), tuple(release), tuple(decls))


def skip_files(directory: Path = SKIPS_DIR) -> dict[str, Path]:
    """The kernels' files by name (files without a [kernel] table are includes, not kernels)."""
    out = {}
    for p in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            out[p.stem] = p  # load_skip_file reports what is wrong with it
            continue
        if "kernel" in data:
            out[p.stem] = p
    return out


def choose_skip_file(choice: str | None, release: str, directory: Path = SKIPS_DIR) -> SkipFile:
    """``--skips NAME|FILE``, or the one kernel file whose release globs match ``release``."""
    known = skip_files(directory)
    if choice:
        path = Path(choice) if ("/" in choice or choice.endswith(".toml")) else known.get(choice)
        if path is None:
            raise DeclarationError(f"--skips {choice}: no such kernel file (known: {', '.join(known)})")
        chosen = load_skip_file(path)
        if not chosen.fits(release):
            raise DeclarationError(
                f"{_where(path)} is for kernel releases {', '.join(chosen.release)}, "
                f"not {release}: pass the file of this kernel"
            )
        return chosen
    files = [load_skip_file(p) for p in known.values()]
    fits = [f for f in files if f.fits(release)]
    if len(fits) != 1:
        which = ", ".join(f.name for f in fits) if fits else "none"
        raise DeclarationError(
            f"kernel {release}: {len(fits)} declared-skips files fit ({which}); choose one with "
            f"--skips NAME (known: {', '.join(known)})"
        )
    return fits[0]


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
    tools that read one file per guest (hostN/share/guest-junit.xml)."""
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


def judge(name: str, cases: list[Case], decls: Sequence[SkipDecl], facts: dict) -> Judged:
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
