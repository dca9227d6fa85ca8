"""The architecture as tests (docs/architecture.md): the layer order, no import cycle (type-only
imports included), the simulator out of the runtime, and no module outside the kernel and
run-state layers naming a kernel or run-state path."""

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
# the man page documents paths
_ALLOWED = ("daxmode.kernel", "daxmode.runstate", "daxmode.sim", "daxmode.cli.manpage")

# daxmode's layers, bottom first.  A module belongs to the longest entry naming it or a package
# above it; it may import from its own entry and from lower layers, never from a higher layer
# or from another entry of its own layer (entries side by side know nothing of each other).
LAYERS: list[tuple[str, ...]] = [
    ("daxmode", "daxmode.errors"),  # the package itself (the version) and the error vocabulary
    ("daxmode.sizes", "daxmode.sysfs", "daxmode.signals", "daxmode.cacheflush", "daxmode.fuse"),
    ("daxmode.runstate", "daxmode.sim"),  # daxmode's own state under /run; the kernel's test double
    ("daxmode.kernel",),  # the only code naming kernel paths
    ("daxmode._steps",),  # the mode manager, one flow: steps ...
    ("daxmode._plan",),  # ... the plan (with the context it built) ...
    ("daxmode._outcome",),  # ... what a run did ...
    ("daxmode._executor",),  # ... running a plan, rollback, recovery, the journal ...
    ("daxmode.modes",),  # ... and the entry points
    ("daxmode.fsdev",),  # device access for famfs (knows nothing of famfs)
    ("daxmode.famfs.media",),  # the famfs medium: layout, log, volume, lock
    ("daxmode.famfs.mount",),  # daxmode's famfs mount: server, namespace, records
    ("daxmode.famfs", "daxmode.ops"),  # which medium to open, status, bring-up; desired state, units
    ("daxmode.cli",),
    ("daxmode.__main__",),
]


def _entry(module: str) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for i, layer in enumerate(LAYERS):
        for e in layer:
            if (module == e or (e != "daxmode" and module.startswith(e + "."))) and (
                best is None or len(e) > len(best[1])
            ):
                best = (i, e)
    assert best is not None, f"{module} is in no layer of LAYERS: declare it"
    return best


def test_imports_point_down() -> None:
    """Every import, type-only and function-level ones included, points to a lower layer (or
    stays within its own entry)."""
    up = []
    for m, targets in sorted(imports.graph(PKG, type_only=True).items()):
        lm, em = _entry(m)
        for t in sorted(targets):
            lt, et = _entry(t)
            if lt > lm or (lt == lm and et != em):
                up.append(f"{m} ({em}) imports {t} ({et})")
    assert up == []


def test_no_import_cycle() -> None:
    assert imports.cycles(imports.graph(PKG, type_only=True)) == []


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
