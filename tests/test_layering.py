"""The architecture as tests (docs/architecture.md): no import cycle, the simulator out of the
runtime, and no module outside the kernel layer naming a sysfs path."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "daxmode"
spec = importlib.util.spec_from_file_location("imports", ROOT / "scripts" / "imports.py")
assert spec and spec.loader
imports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(imports)

# A kernel path as code names it (relative to the Sysfs root) or shows it.
_PATH = re.compile(r"^/?(sys|proc)/|^/?dev/dax|^/?run/daxmode(/|$)")
_ALLOWED = ("daxmode.kernel", "daxmode.sim", "daxmode.cli.manpage")  # the man page documents paths


def test_no_import_cycle() -> None:
    assert imports.cycles(imports.graph(PKG)) == []


def test_simulator_only_behind_the_cli_switch() -> None:
    edges = imports.graph(PKG)
    users = {
        m for m, ts in edges.items() if any(t == "daxmode.sim" or t.startswith("daxmode.sim.") for t in ts)
    }
    # _common attaches it (--sim); cli.sim only builds a tree on disk (daxmode sim create)
    assert {u for u in users if not u.startswith("daxmode.sim")} == {"daxmode.cli._common", "daxmode.cli.sim"}


def _literals(p: pathlib.Path) -> list[tuple[int, str]]:
    """String constants that are code, not documentation (docstrings and messages excluded)."""
    tree = ast.parse(p.read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    msgs = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Raise) for c in ast.walk(n)}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs | msgs:
            out.append((n.lineno, n.value))
    return out


def test_only_the_kernel_layer_names_kernel_paths() -> None:
    offenders = []
    for name, p in imports.modules(PKG).items():
        if name.startswith(_ALLOWED):
            continue
        offenders += [f"{name}:{line}: {s!r}" for line, s in _literals(p) if _PATH.search(s)]
    assert offenders == []
