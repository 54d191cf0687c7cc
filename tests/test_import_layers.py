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


def module_names(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by its dotted name below the package (``cluster.agent``); a
    subpackage is its ``__init__`` (``cluster``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of the package that ``path`` (module ``name``) imports, anywhere in it."""
    found: set[str] = set()
    here = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                module = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from hosting.cluster import keys`` imports the module cluster.keys when it is one
            names = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for full in names:
            parts = full.split(".")
            if parts[0] != PACKAGE:
                continue
            for k in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
                candidate = ".".join(parts[1:k + 1])
                if candidate in modules:
                    found.add(candidate)
                    break
    # a package's __init__ and its parents are not dependencies of their own modules
    return {m for m in found if m != name and not name.startswith(m + ".")}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


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


def test_the_check_sees_modules_of_subpackages(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text('"""a room"""\n')
    (tmp_path / "sub" / "x.py").write_text("from hosting.sub import y\n")
    (tmp_path / "sub" / "y.py").write_text("from . import z\n")
    (tmp_path / "sub" / "z.py").write_text("from hosting import top\n")
    (tmp_path / "top.py").write_text("from hosting.sub.x import f\n")
    graph = import_graph(tmp_path)
    assert graph == {"sub": set(), "sub.x": {"sub.y"}, "sub.y": {"sub.z"}, "sub.z": {"top"}, "top": {"sub.x"}}
    assert find_cycle(graph) == ["sub.x", "sub.y", "sub.z", "top", "sub.x"]


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
