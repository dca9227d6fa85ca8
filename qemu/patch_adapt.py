"""Re-seat hunks of someone else's patch on a newer tree by replacing their context only.

A posted series (the famfs fuse patches, V10) is written against the kernel it was posted on;
on a later tree some hunks no longer apply because the lines *around* the change moved or were
reworded. We may not commit those patches, and an adaptation must not change what they change.
So an adaptation file holds no line of the series at all: for each hunk it names (patch
subject, file, hunk header) it gives the new context lines and marks with `=` where each run
of the hunk's own -/+ lines goes. This tool splices the two at build time; by construction the
result differs from the series only in context, and `git apply` (strict, no fuzz) then either
applies it or fails.

Adaptation file format (`*.adapt`, UTF-8):

    # comment lines (what is adapted and why) -- anywhere outside a hunk body
    patch: <subject of the series patch, as `git mailinfo` prints it>
    file: <path in the tree>
    hunk: @@ -<start>,<len> +<start>,<len> @@      (the series hunk's header; text after it ignored)
     <context line, after one leading space, exactly as in the new tree>
    =                                             (the next run of the hunk's -/+ lines)
     ...

`patch:` and `file:` stay in force for the records that follow until repeated. Blank lines end
nothing and are ignored: an empty context line is written as a single space, as in a diff.

CLI (what build-kernel.sh calls, once per series patch):
    patch_adapt.py apply --subject S --used-log F DIFF ADAPT... > adapted.diff
    patch_adapt.py unused --used-log F ADAPT...     (fails if a record matched no patch)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


class AdaptError(Exception):
    """An adaptation that does not fit the patch it names."""


@dataclass(frozen=True)
class HunkId:
    """A hunk named the way a reader finds it in the series: patch subject, file, header numbers."""

    subject: str
    path: str
    old_start: int
    old_len: int
    new_start: int
    new_len: int

    def __str__(self) -> str:
        return (
            f"'{self.subject}' {self.path} "
            f"@@ -{self.old_start},{self.old_len} +{self.new_start},{self.new_len} @@"
        )


@dataclass
class Record:
    """One adapted hunk: new context lines (str) and run markers (None), in order."""

    hunk: HunkId
    body: list[str | None]
    where: str  # file:line of the record, for messages
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = f"{self.where} {self.hunk}"


def parse_header(line: str) -> tuple[int, int, int, int, str]:
    m = _HUNK_RE.match(line)
    if not m:
        raise AdaptError(f"not a hunk header: {line!r}")
    o, ol, n, nl, tail = m.groups()
    return int(o), int(ol if ol is not None else 1), int(n), int(nl if nl is not None else 1), tail


def parse_adapt(text: str, name: str) -> list[Record]:
    """The records of one adaptation file."""
    records: list[Record] = []
    subject = path = None
    current: Record | None = None
    for no, raw in enumerate(text.split("\n"), 1):
        where = f"{name}:{no}"
        if raw.startswith(" "):
            if current is None:
                raise AdaptError(f"{where}: context line outside a hunk record")
            current.body.append(raw[1:])
            continue
        if raw == "=":
            if current is None:
                raise AdaptError(f"{where}: '=' outside a hunk record")
            current.body.append(None)
            continue
        current = None
        if raw == "" or raw.startswith("#"):
            continue
        key, sep, value = raw.partition(": ")
        if not sep:
            raise AdaptError(
                f"{where}: expected 'patch:', 'file:', 'hunk:', a comment or a hunk line: {raw!r}"
            )
        if key == "patch":
            subject, path = value.strip(), None
        elif key == "file":
            path = value.strip()
        elif key == "hunk":
            if subject is None or path is None:
                raise AdaptError(f"{where}: 'hunk:' needs a 'patch:' and a 'file:' line before it")
            o, ol, n, nl, _ = parse_header(value.strip())
            current = Record(HunkId(subject, path, o, ol, n, nl), [], where)
            records.append(current)
        else:
            raise AdaptError(f"{where}: unknown key {key!r}")
    for r in records:
        if None not in r.body:
            raise AdaptError(
                f"{r.where}: hunk record without a '=' line (nothing of the series would be kept)"
            )
    return records


@dataclass
class Hunk:
    """A hunk of the series patch: its header and lines (with their ' ', '-', '+', '\\' prefix)."""

    path: str
    header: str
    lines: list[str]

    def ident(self, subject: str) -> HunkId:
        o, ol, n, nl, _ = parse_header(self.header)
        return HunkId(subject, self.path, o, ol, n, nl)

    def runs(self) -> list[list[str]]:
        """Maximal runs of changed lines ('-', '+', and a '\\ No newline' marker that follows one)."""
        runs: list[list[str]] = []
        prev_changed = False
        for line in self.lines:
            changed = line.startswith(("-", "+")) or (line.startswith("\\") and prev_changed)
            if changed:
                if not prev_changed:
                    runs.append([])
                runs[-1].append(line)
            prev_changed = changed
        return runs


def split_diff(text: str) -> list[str | Hunk]:
    """The diff as a list of verbatim header lines and hunks, in order."""
    out: list[str | Hunk] = []
    path = ""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0]
            path = target[2:] if target.startswith(("a/", "b/")) else target
            out.append(line)
            i += 1
            continue
        if line.startswith("@@ "):
            _, ol, _, nl, _ = parse_header(line)
            hunk = Hunk(path, line, [])
            old_left, new_left = ol, nl
            i += 1
            while i < len(lines) and (old_left > 0 or new_left > 0 or lines[i].startswith("\\")):
                body = lines[i]
                tag = body[:1]
                if tag == " " or body == "":
                    old_left -= 1
                    new_left -= 1
                elif tag == "-":
                    old_left -= 1
                elif tag == "+":
                    new_left -= 1
                elif tag != "\\":
                    raise AdaptError(f"malformed hunk in {path}: {body!r}")
                hunk.lines.append(body if body else " ")
                i += 1
            out.append(hunk)
            continue
        out.append(line)
        i += 1
    return out


def splice(hunk: Hunk, record: Record) -> Hunk:
    """The series hunk with the record's context around its own runs of changed lines."""
    runs = hunk.runs()
    markers = sum(1 for b in record.body if b is None)
    if markers != len(runs):
        raise AdaptError(
            f"{record.where}: {markers} '=' line(s) but hunk {record.hunk} has "
            f"{len(runs)} run(s) of changed lines"
        )
    lines: list[str] = []
    it = iter(runs)
    for b in record.body:
        lines.extend(next(it) if b is None else [" " + b])
    old_len = sum(1 for x in lines if x[:1] in " -")
    new_len = sum(1 for x in lines if x[:1] in " +")
    o, _, n, _, tail = parse_header(hunk.header)
    return Hunk(hunk.path, f"@@ -{o},{old_len} +{n},{new_len} @@{tail}", lines)


def adapt_diff(diff: str, subject: str, records: list[Record]) -> tuple[str, list[Record]]:
    """The diff with every hunk a record names re-seated; also the records that were used."""
    mine = {r.hunk: r for r in records if r.hunk.subject == subject}
    used: list[Record] = []
    out: list[str] = []
    for part in split_diff(diff):
        if isinstance(part, str):
            out.append(part)
            continue
        rec = mine.get(part.ident(subject))
        if rec is not None:
            part = splice(part, rec)
            used.append(rec)
        out.append(part.header)
        out.extend(part.lines)
    return "\n".join(out), used


def load(paths: list[Path]) -> list[Record]:
    records: list[Record] = []
    for p in paths:
        records.extend(parse_adapt(p.read_text(encoding="utf-8"), p.name))
    seen: dict[HunkId, Record] = {}
    for r in records:
        if r.hunk in seen:
            raise AdaptError(f"{r.where}: hunk {r.hunk} is already adapted at {seen[r.hunk].where}")
        seen[r.hunk] = r
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("apply", help="print DIFF with the adapted hunks re-seated")
    a.add_argument("--subject", required=True)
    a.add_argument("--used-log", type=Path, required=True, help="file the used records are appended to")
    a.add_argument("diff", type=Path)
    a.add_argument("adapt", type=Path, nargs="+")
    u = sub.add_parser("unused", help="fail if a record matched no hunk of any patch")
    u.add_argument("--used-log", type=Path, required=True)
    u.add_argument("adapt", type=Path, nargs="+")
    args = ap.parse_args(argv)
    try:
        records = load(args.adapt)
        if args.cmd == "apply":
            text, used = adapt_diff(args.diff.read_text(encoding="utf-8"), args.subject, records)
            with args.used_log.open("a", encoding="utf-8") as log:
                log.writelines(r.key + "\n" for r in used)
            sys.stdout.write(text)
            for r in used:
                print(f"adapted {r.hunk} ({r.where})", file=sys.stderr)
            return 0
        done = (
            set(args.used_log.read_text(encoding="utf-8").splitlines()) if args.used_log.exists() else set()
        )
        left = [r for r in records if r.key not in done]
        for r in left:
            print(f"{r.where}: hunk {r.hunk} matched no hunk of the series", file=sys.stderr)
        return 1 if left else 0
    except AdaptError as e:
        print(f"patch_adapt: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
