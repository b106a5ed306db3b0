"""The package's import graph runs one way: no module imports one that imports it back.

Every import counts, also those inside functions (a local import taken to dodge a cycle is still a cycle);
only ``if TYPE_CHECKING:`` blocks are skipped, since they never run. ``from geoformer.x import y`` is an edge to
``geoformer.x.y`` when that is a module, else to ``geoformer.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = _modules(root)

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                o = owner(t)
                if o and o != m and o.split(".")[0] == root.name:
                    graph[m].add(o)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start), on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w), on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(SRC / "geoformer"))
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_config_imports_the_registries_it_validates_and_none_imports_it_back():
    g = import_graph(SRC / "geoformer")
    assert {"geoformer.attention", "geoformer.models", "geoformer.train.schedules"} <= g["geoformer.config"]
    for m in ("geoformer.attention.registry", "geoformer.models.levels", "geoformer.train.schedules", "geoformer.coerce"):
        assert "geoformer.config" not in g[m], m
    assert g["geoformer.coerce"] == {"geoformer.errors"}


def test_the_cycle_finder_finds_cycles(tmp_path):
    """The check can fail: a two-module cycle through a local import, and a three-module one, are reported;
    a TYPE_CHECKING-only back-import is not."""
    pkg = tmp_path / "geoformer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from geoformer import b\n")
    (pkg / "b.py").write_text("def f():\n    from geoformer.a import x\n")
    (pkg / "c.py").write_text("import geoformer.d\n")
    (pkg / "d.py").write_text("from . import e\n")
    (pkg / "e.py").write_text("from geoformer.c import y\n")
    (pkg / "f.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from geoformer import g\n")
    (pkg / "g.py").write_text("from geoformer import f\n")
    found = cycles(import_graph(pkg))
    assert sorted(found) == [["geoformer.a", "geoformer.b"], ["geoformer.c", "geoformer.d", "geoformer.e"]]
