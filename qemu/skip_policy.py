"""Judge the skips of a VM-suite run against the skips a kernel justifies.

A skip is a claim ("this kernel cannot do X", "this backend has no Y"). On a famfs kernel the claim
"the kernel lacks famfs" is false, so a famfs mount or DAX-path test that skips for that reason must
fail the run instead of passing quietly. The policy file lists, one Python regular expression a
line, the skip messages that are justified, each with a comment saying why; every other skip is a
failure. kernel-test.sh FAMFS=1 runs this on the results of `qemu/cxl-mhd.sh --suite tests/vm`.

    skip_policy.py --policy qemu/famfs-kernel.skips [--kernel RELEASE] RESULTS_DIR

RESULTS_DIR is the harness's --results directory: host-junit.xml (host-side scenarios) and
host*/share/guest-junit.xml (each guest's suite). Prints every skip with its verdict.
Exit: 0 all skips justified; 1 some are not (or no results were found); 2 usage.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Skip:
    where: str  # which run: host-side, host0, host1, ...
    test: str  # classname::name
    message: str


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    why: str
    line: int


def parse_policy(text: str) -> list[Rule]:
    """Rules of a policy file: the comment lines above a pattern are its reason; consecutive
    patterns share it, a blank line ends it."""
    rules: list[Rule] = []
    why: list[str] = []
    after_pattern = False
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            why, after_pattern = [], False
        elif line.startswith("#"):
            why = [] if after_pattern else why
            why.append(line.lstrip("# ").rstrip())
            after_pattern = False
        else:
            if not why:
                raise ValueError(f"line {no}: pattern without a comment saying why the skip is justified")
            try:
                rules.append(Rule(re.compile(line), " ".join(why), no))
            except re.error as e:
                raise ValueError(f"line {no}: bad pattern {line!r}: {e}") from e
            after_pattern = True
    return rules


def skips_in(xml_text: str, where: str) -> list[Skip]:
    """Skipped test cases of one pytest junit XML file."""
    root = ET.fromstring(xml_text)
    out = []
    for case in root.iter("testcase"):
        sk = case.find("skipped")
        if sk is not None:
            test = f"{case.get('classname', '')}::{case.get('name', '')}"
            out.append(Skip(where, test, sk.get("message") or (sk.text or "").strip()))
    return out


def collect(results: Path) -> tuple[list[Skip], list[str]]:
    """All skips under a harness results directory, and the junit files read."""
    files = []
    if (results / "host-junit.xml").is_file():
        files.append(("host-side", results / "host-junit.xml"))
    for p in sorted(results.glob("host*/share/guest-junit.xml")):
        files.append((p.parent.parent.name, p))
    skips: list[Skip] = []
    for where, p in files:
        skips.extend(skips_in(p.read_text(errors="replace"), where))
    return skips, [str(p) for _, p in files]


def judge(skips: list[Skip], rules: list[Rule]) -> list[tuple[Skip, Rule | None]]:
    return [(s, next((r for r in rules if r.pattern.search(s.message)), None)) for s in skips]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", type=Path, required=True)
    ap.add_argument("--kernel", default="this kernel", help="release named in the messages")
    ap.add_argument("results", type=Path)
    a = ap.parse_args(argv)
    try:
        rules = parse_policy(a.policy.read_text())
    except (OSError, ValueError) as e:
        print(f"skip_policy: {a.policy}: {e}", file=sys.stderr)
        return 2
    try:
        skips, files = collect(a.results)
    except (OSError, ET.ParseError) as e:
        print(f"skip_policy: cannot read the results in {a.results}: {e}", file=sys.stderr)
        return 1
    if not files:
        print(f"skip_policy: no junit results under {a.results}", file=sys.stderr)
        return 1
    bad = 0
    for s, rule in judge(skips, rules):
        if rule is None:
            bad += 1
            print(f"skip NOT justified on {a.kernel}: {s.where} {s.test}: {s.message}")
        else:
            print(f"skip ok ({rule.why}): {s.where} {s.test}: {s.message}")
    print(f"{len(skips)} skip(s) in {len(files)} result file(s), {bad} not justified on {a.kernel}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
