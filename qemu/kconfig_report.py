"""Compare the config options a fragment asks for with what `olddefconfig` produced.

Kconfig silently drops requests it cannot honour: a symbol the tree does not define, a hidden
symbol that follows its default, or an option whose dependencies are off. build-kernel.sh runs
this after `make olddefconfig` so the user sees at once that, say, their tree lacks
FUSE_FAMFS_DAX, instead of finding out from a skipped test an hour later.

Pure functions over text plus one directory walk (`known_symbols`); the CLI at the bottom is
what the shell script calls.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# "n" stands for "is not set", so a request to turn something off compares like any other value.
UNSET = "n"

_SET_RE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_KCONFIG_DEF_RE = re.compile(r"^\s*(?:menuconfig|config)\s+([A-Za-z0-9_]+)\s*$")


def parse_config(text: str) -> dict[str, str]:
    """Options of a .config or fragment as {symbol: value}; `# CONFIG_X is not set` gives "n".

    Other comments and blank lines are ignored; a later line for the same symbol wins, as in
    merge_config.sh.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _SET_RE.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET_RE.match(line):
            values[m.group(1)] = UNSET
    return values


def merge_fragments(fragments: Iterable[str]) -> dict[str, str]:
    """What the fragments ask for together: later fragments override earlier ones."""
    merged: dict[str, str] = {}
    for text in fragments:
        merged.update(parse_config(text))
    return merged


def parse_kconfig_symbols(text: str) -> set[str]:
    """Symbols defined (`config X` / `menuconfig X`) in one Kconfig file."""
    return {m.group(1) for line in text.splitlines() if (m := _KCONFIG_DEF_RE.match(line))}


def known_symbols(tree: Path) -> set[str]:
    """Every symbol some Kconfig* file of a kernel tree defines (any architecture)."""
    symbols: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("Kconfig"):
                text = Path(dirpath, name).read_text(encoding="utf-8", errors="replace")
                symbols |= parse_kconfig_symbols(text)
    return symbols


@dataclass(frozen=True)
class Finding:
    """One requested option that did not end up as requested."""

    symbol: str
    requested: str
    actual: str  # UNSET when the final .config does not set it
    known: bool  # False: no Kconfig file of the tree defines the symbol

    def describe(self) -> str:
        want = "not set" if self.requested == UNSET else f"={self.requested}"
        if not self.known:
            return f"this tree lacks {self.symbol} (requested {want}; no Kconfig defines it)"
        got = "not set" if self.actual == UNSET else f"={self.actual}"
        why = (
            "unmet dependency or hidden symbol"
            if self.actual == UNSET
            else "forced by a dependency, select or hidden default"
        )
        return f"{self.symbol}: requested {want}, got {got} ({why})"


def compare(requested: Mapping[str, str], final: Mapping[str, str], known: set[str]) -> list[Finding]:
    """Requested options whose final value differs, unknown symbols first, each group sorted."""
    findings = []
    for symbol, want in requested.items():
        got = final.get(symbol, UNSET)
        if symbol not in known:
            # Asking for something off that the tree does not have is already satisfied.
            if want != UNSET:
                findings.append(Finding(symbol, want, got, known=False))
        elif got != want:
            findings.append(Finding(symbol, want, got, known=True))
    return sorted(findings, key=lambda f: (f.known, f.symbol))


def report(findings: list[Finding]) -> str:
    """Human-readable lines, empty when everything was honoured."""
    return "".join(f.describe() + "\n" for f in findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="kernel source tree (for Kconfig symbols)")
    parser.add_argument("--config", type=Path, required=True, help="final .config after olddefconfig")
    parser.add_argument("fragments", type=Path, nargs="+", help="fragments in merge order")
    args = parser.parse_args(argv)
    requested = merge_fragments(p.read_text() for p in args.fragments)
    findings = compare(requested, parse_config(args.config.read_text()), known_symbols(args.tree))
    sys.stdout.write(report(findings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
