"""The modules of ``hosting`` form layers: no import cycle among them.

Every import counts — at module level, inside a function (a lazy import only hides a cycle
until the first call), or under ``TYPE_CHECKING`` (a type-only cycle is still two modules
that each need the other to be understood). Read from the source's AST: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "hosting"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from hosting import x`` imports module x; ``from hosting.x import y`` module x
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == PACKAGE \
                else [node.module]
        elif isinstance(node, ast.ImportFrom):  # relative: ``from . import x`` / ``from .x import y``
            names = [f"{PACKAGE}.{node.module or alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    return found - {path.stem}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = {p.stem for p in root.glob("*.py")}
    return {p.stem: imports_of(p, modules) for p in sorted(root.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``; None if it has none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for dep in sorted(graph.get(module, ())):
            if dep in on_path:
                return path[path.index(dep):] + [dep]
            if dep not in done:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_hosting_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in hosting/: " + " -> ".join(cycle)


def test_the_check_sees_lazy_and_type_only_imports(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from hosting.b import g\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hosting import c\n")
    (tmp_path / "c.py").write_text("import hosting.a\n")
    (tmp_path / "d.py").write_text("from hosting.a import f\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    del graph["c"]
    assert find_cycle(graph) is None
