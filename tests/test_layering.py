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


# ---- the QEMU harness (mhd/, docs/harness.md) ---------------------------------------------------
# Kept apart from daxmode's layering above.  Layers bottom first; a module imports only modules of
# lower layers (type-only imports included).  The guest half sits below the host half: nothing in
# a guest imports host code (a guest pays ~50x per import); the host may use the guest's pure parts.

HARNESS = ROOT / "mhd"
HARNESS_LAYERS: list[tuple[str, ...]] = [
    ("mhd", "mhd.host", "mhd.guest"),  # package docstrings only
    ("mhd.constants",),  # what host and guest agree on
    ("mhd.guest.shwords", "mhd.guest.facts", "mhd.guest.guestnet"),
    ("mhd.guest.warm",),
    ("mhd.guest.pipeline", "mhd.guest.bringup"),
    ("mhd.guest.zygote",),
    ("mhd.guest.agent",),
    ("mhd.host.errors",),
    (  # pure host parts
        "mhd.host.qemucmd",
        "mhd.host.kernel",
        "mhd.host.suites",
        "mhd.host.verdict",
        "mhd.host.timing",
        "mhd.host.identity",
    ),
    ("mhd.host.config", "mhd.host.preflight", "mhd.host.initramfs", "mhd.host.agentclient"),
    ("mhd.host.prepare", "mhd.host.report", "mhd.host.vm"),  # before the boot; the end; one QEMU
    ("mhd.host.run",),  # Run: the booted guests
    ("mhd.host.suiterun",),  # guest suites, host-side scenarios, --cmd
    ("mhd.host.cli",),  # main: the phases in order
    ("mhd.__main__",),
]


def test_harness_has_no_import_cycle() -> None:
    assert imports.cycles(imports.graph(HARNESS, type_only=True)) == []


def test_harness_imports_point_down_the_declared_layers() -> None:
    edges = imports.graph(HARNESS, type_only=True)
    layer = {m: i for i, mods in enumerate(HARNESS_LAYERS) for m in mods}
    assert sorted(set(edges) - set(layer)) == [], "place every harness module in HARNESS_LAYERS"
    upward = [f"{m} -> {t}" for m, ts in edges.items() for t in sorted(ts) if layer[t] >= layer[m]]
    assert upward == []


def _self_attrs_set(fn: ast.FunctionDef) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(fn):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                out.append((t.attr, node.lineno))
    return out


def test_harness_objects_are_built_whole_in_their_constructors() -> None:
    """An attribute first set by a phase method makes an object whose shape depends on how far the
    run got; every ``self.x = ...`` outside the constructor must re-set one the constructor (or the
    class body) made.  Subclasses of library classes (ZygotePopen) follow their base's protocol."""
    offenders = []
    for name, p in imports.modules(HARNESS).items():
        for cls in (n for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ClassDef)):
            if any(isinstance(b, ast.Attribute) for b in cls.bases):
                continue
            made = {
                t.id
                for s in cls.body
                if isinstance(s, ast.Assign | ast.AnnAssign)
                for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
                if isinstance(t, ast.Name)
            }
            methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
            for fn in methods:
                if fn.name in ("__init__", "__post_init__"):
                    made |= {a for a, _ in _self_attrs_set(fn)}
            for fn in methods:
                if fn.name not in ("__init__", "__post_init__"):
                    offenders += [
                        f"{name}:{ln}: {cls.name}.{a}" for a, ln in _self_attrs_set(fn) if a not in made
                    ]
    assert offenders == []
