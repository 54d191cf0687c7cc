"""jtrix's packages form layers, and the modules of ``hosting`` and of ``rpc`` have no import cycle.

Packages, bottom up (a package imports only those below it, or its peer):

    warrants            XML, warrants, descriptors, the base errors
    rpc                 calls: Pyro5 settings and the guarded daemon, TLS identities, the app
                        credential, call digests, the runtime errors of a call
    hosting, netlets    the node; what runs in a netlet and how to call one (peers: each may
                        import the other, e.g. a netlet reaches its node through hosting.client)
    launcher            the command line

Every import counts — at module level, inside a function (a lazy import only hides a cycle
until the first call), or under ``TYPE_CHECKING`` (a type-only cycle is still two modules
that each need the other to be understood). Read from the source's AST: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hosting"
REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / PACKAGE
#: what each package may import of the others (``ALLOWED_EXCEPTIONS``: none, each with its reason)
LAYERS = {
    "warrants": set(),
    "rpc": {"warrants"},
    "hosting": {"warrants", "rpc", "netlets"},
    "netlets": {"warrants", "rpc", "hosting"},
    "launcher": {"warrants", "rpc", "hosting", "netlets"},
}
#: (importing module, imported package) -> why this upward import may stay
ALLOWED_EXCEPTIONS: dict[tuple[str, str], str] = {}


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


def imported_names(path: Path, name: str, package: str = PACKAGE) -> set[str]:
    """Every dotted name ``path`` (module ``name`` of ``package``) imports, anywhere in it; a
    relative import resolved against the importing module's package."""
    found: set[str] = set()
    parts = name.split(".") if name else []  # "": the package's own __init__
    here = parts[:-1] if path.name != "__init__.py" else parts
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                module = ".".join([package, *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from hosting.cluster import keys`` imports the module cluster.keys when it is one
            names = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        found.update(names)
    return found


def imports_of(path: Path, name: str, modules: set[str], package: str = PACKAGE) -> set[str]:
    """The modules of ``package`` that ``path`` (module ``name``) imports, anywhere in it."""
    found: set[str] = set()
    for full in imported_names(path, name, package):
        parts = full.split(".")
        if parts[0] != package:
            continue
        for k in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
            candidate = ".".join(parts[1:k + 1])
            if candidate in modules:
                found.add(candidate)
                break
    # a package's __init__ and its parents are not dependencies of their own modules
    return {m for m in found if m != name and not name.startswith(m + ".")}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(path, name, set(modules), package) for name, path in modules.items()}


def layer_violations(repo: Path = REPO, layers: dict[str, set[str]] = LAYERS,
                     allowed: dict[tuple[str, str], str] = ALLOWED_EXCEPTIONS) -> list[str]:
    """Every import its layer does not allow, as ``module -> package`` (the package it imports)."""
    out = set()
    for package, may in layers.items():
        init = repo / package / "__init__.py"
        for name, path in {**({"": init} if init.exists() else {}), **module_names(repo / package)}.items():
            module = ".".join([package, *([name] if name else [])])
            for full in imported_names(path, name, package):
                top = full.split(".")[0]
                if top in layers and top != package and top not in may and (module, top) not in allowed:
                    out.add(f"{module} -> {top}")
    return sorted(out)


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


@pytest.mark.parametrize("package", ["hosting", "rpc"])
def test_package_has_no_import_cycle(package):
    cycle = find_cycle(import_graph(REPO / package, package))
    assert cycle is None, f"import cycle in {package}/: " + " -> ".join(cycle)


def test_packages_import_only_their_layers():
    assert layer_violations() == []


def test_every_allowed_exception_is_still_needed():
    needed = {tuple(v.split(" -> ")) for v in layer_violations(allowed={})}
    assert set(ALLOWED_EXCEPTIONS) <= needed


def test_the_layer_check_sees_upward_imports(tmp_path):
    for package in ("low", "mid", "top"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""a layer"""\n')
    (tmp_path / "low" / "a.py").write_text("def f():\n    from mid.b import g\n")
    (tmp_path / "mid" / "b.py").write_text("from low import a\nimport top\n")
    (tmp_path / "top" / "c.py").write_text("from mid.b import g\nfrom . import d\n")
    (tmp_path / "mid" / "__init__.py").write_text("from top.c import g\n")
    layers = {"low": set(), "mid": {"low"}, "top": {"low", "mid"}}
    assert layer_violations(tmp_path, layers, {}) == ["low.a -> mid", "mid -> top", "mid.b -> top"]
    allowed = {("low.a", "mid"): "why", ("mid", "top"): "why", ("mid.b", "top"): "why"}
    assert layer_violations(tmp_path, layers, allowed) == []


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
