"""daxmode's import graph: module- and function-level imports (TYPE_CHECKING blocks excluded
unless asked for: a type-only import is still a dependency of the design).

python scripts/imports.py daxmode        # cycles (exit 1 if there is one)
python scripts/imports.py daxmode -v     # and every edge
"""

from __future__ import annotations

import ast
import pathlib
import sys


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def graph(root: pathlib.Path, type_only: bool = False) -> dict[str, set[str]]:
    """module -> the daxmode modules it imports (``type_only``: those under TYPE_CHECKING too)."""
    mods = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        skip = (
            set()
            if type_only
            else {
                id(n)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)
            }
        )
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges[m] |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for a in node.names:
                    full = f"{base}.{a.name}"
                    edges[m].add(full if full in mods else base)
    return {m: {t for t in ts if t in mods and t != m} for m, ts in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    color: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def dfs(u: str) -> None:
        color[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if color.get(v) == 1:
                found.append([*stack[stack.index(v) :], v])
            elif not color.get(v):
                dfs(v)
        stack.pop()
        color[u] = 2

    for m in sorted(edges):
        if not color.get(m):
            dfs(m)
    return found


def main() -> int:
    edges = graph(pathlib.Path(sys.argv[1]), type_only=True)
    if "-v" in sys.argv:
        for m in sorted(edges):
            print(f"{m} -> {', '.join(sorted(edges[m])) or '-'}")
    found = cycles(edges)
    for c in found:
        print("cycle:", " -> ".join(c))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
