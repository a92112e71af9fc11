"""Static import contracts of the ``crmlab`` package: no cycles, layers respected, ``__all__`` everywhere.

Every ``import`` and ``from ... import`` statement of every module is read from the source (including those inside
functions and under ``TYPE_CHECKING``), with module names taken from pyproject's package-dir mapping, so the check
sees exactly what the installed package contains and needs no import of Keras.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Each module's layer; a module may import only from its own layer or lower ones. The package root ``crmlab``
#: (its version) is imported with every module, so it sits at the bottom and imports nothing of crmlab.
LAYERS = {"crmlab.registry": 0, "crmlab.blocks": 1, "crmlab.runners": 2, "crmlab.search": 3}
TOP = 4  # the command line: crmlab.cli, crmlab.interpret


def package_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    files: dict[str, Path] = {}
    for package in setuptools["packages"]:
        folder = REPO / setuptools["package-dir"][package]
        for path in sorted(folder.glob("*.py")):
            files[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The crmlab modules that ``name`` (source ``path``) imports, resolved to known modules or packages."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import crmlab.blocks.conv.X` names the module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    files = package_files()
    known = set(files)
    return {name: set(imported_modules(name, path, known)) for name, path in files.items()}


def layer(module: str) -> int:
    if module == "crmlab":
        return -1
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return TOP


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_every_layer() -> None:
    graph = import_graph()
    assert {layer(m) for m in graph} == {-1, 0, 1, 2, 3, TOP}
    assert graph["crmlab"] == set()
    assert "crmlab.registry.core" in graph["crmlab.blocks.assemble"]
    assert len(graph) > 40


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_layers() -> None:
    """registry <- blocks <- runners <- search <- the command line; nothing imports upwards."""
    upward = [
        f"{m} -> {t}" for m, targets in sorted(import_graph().items()) for t in sorted(targets) if layer(t) > layer(m)
    ]
    assert upward == []


def test_registry_never_imports_keras() -> None:
    files = package_files()
    for name, path in files.items():
        if layer(name) == 0:
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [n for n in names if n.split(".")[0] in ("keras", "tensorflow", "jax")], name


@pytest.mark.parametrize("name", sorted(package_files()))
def test_public_modules_declare_all(name: str) -> None:
    tree = ast.parse(package_files()[name].read_text())
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assigned |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert "__all__" in assigned, f"{name} has no __all__"
