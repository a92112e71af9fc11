"""Import contracts of the ``crmlab`` package, declared in pyproject's ``[tool.importlinter]`` and checked by
import-linter: the layers registry <- blocks <- runners <- search <- the command line, the sub-package order inside
``runners``, the two halves of ``search`` independent over a shared storage, and no Keras in ``registry``.

import-linter (through grimp) finds a package by its folder, and the installed ``crmlab`` is assembled from several
repository folders by pyproject's ``package-dir`` mapping, which an editable install resolves with an import hook
that grimp does not follow (it would see only ``cli/``). So each test lints a copy of the package laid out as it
installs (only ``.py`` files, from the same mapping the wheel is built with). The copy also lets a test plant a
violation without touching the source tree. Beside the contracts: no import cycles anywhere (grimp's graph), and
every module declares ``__all__``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = 4


def _mapping() -> dict[str, Path]:
    """Each installed package -> its source folder (a sub-package not in package-dir lives under its parent's)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders: dict[str, Path] = {}
    for package in setuptools["packages"]:
        if package in setuptools["package-dir"]:
            folders[package] = REPO / setuptools["package-dir"][package]
        else:
            parent, _, child = package.rpartition(".")
            folders[package] = folders[parent] / child
    return folders


def stage_package(target: Path) -> Path:
    """Copy every module of the installed package into ``target/crmlab/...`` as the wheel lays it out; returns
    ``target`` (a folder to put on ``PYTHONPATH``)."""
    for package, folder in _mapping().items():
        dest = target.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for path in folder.glob("*.py"):
            shutil.copy(path, dest / path.name)
    return target


def lint(staged: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the staged copy, with the contracts of the repository's pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(staged)}
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    return subprocess.run(
        [*command, str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=staged,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_package(tmp_path_factory.mktemp("staged"))


def test_the_staged_copy_holds_every_module(staged: Path) -> None:
    names = {p.relative_to(staged).with_suffix("").as_posix() for p in staged.rglob("*.py")}
    for module in ("crmlab/cli", "crmlab/registry/core", "crmlab/runners/training/_train", "crmlab/search/arch/_study"):
        assert module in names
    assert len(names) > 100


def test_the_declared_contracts_hold(staged: Path) -> None:
    result = lint(staged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout


def test_planted_violations_break_each_contract(tmp_path: Path) -> None:
    """One planted import per contract: every contract reports it, naming the offending module."""
    staged = stage_package(tmp_path)
    planted = {
        "registry/_planted.py": "import keras\n",  # registry without Keras
        "blocks/_planted.py": "from crmlab.search import ablation\n",  # blocks importing upwards
        "runners/data/_planted.py": "from crmlab.runners.training import train\n",  # data importing training
        "search/ablation/_planted.py": "from crmlab.search.arch import study\n",  # the two halves of search
    }
    for path, line in planted.items():
        (staged / "crmlab" / path).write_text(f'"""A planted violation."""\n\n{line}')
    result = lint(staged)
    assert result.returncode != 0
    assert f"Contracts: 0 kept, {CONTRACTS} broken." in result.stdout, result.stdout
    for module in ("crmlab.registry._planted", "crmlab.blocks._planted", "crmlab.runners.data._planted"):
        assert module in result.stdout
    assert "crmlab.search.ablation._planted -> crmlab.search.arch" in result.stdout


def _graph_cycles(staged: Path) -> str:
    """Imports that would break every cycle in the package (grimp), one per line; empty when there is none."""
    code = (
        "import grimp\n"
        "graph = grimp.build_graph('crmlab')\n"
        "modules = sorted(graph.modules)\n"
        "edges = {m: graph.find_modules_directly_imported_by(m) for m in modules}\n"
        "import sys; sys.setrecursionlimit(10000)\n"
        "index, low, stack, on, found = {}, {}, [], set(), []\n"
        "def visit(v):\n"
        "    index[v] = low[v] = len(index); stack.append(v); on.add(v)\n"
        "    for w in sorted(edges[v]):\n"
        "        if w not in index:\n"
        "            visit(w); low[v] = min(low[v], low[w])\n"
        "        elif w in on:\n"
        "            low[v] = min(low[v], index[w])\n"
        "    if low[v] == index[v]:\n"
        "        comp = []\n"
        "        while True:\n"
        "            w = stack.pop(); on.discard(w); comp.append(w)\n"
        "            if w == v: break\n"
        "        if len(comp) > 1: found.append(sorted(comp))\n"
        "for v in modules:\n"
        "    if v not in index: visit(v)\n"
        "print(len(modules)); [print(' '.join(c)) for c in found]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(staged)},
        cwd=staged,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_no_import_cycles(staged: Path) -> None:
    count, *cycles = _graph_cycles(staged).splitlines()
    assert int(count) > 100
    assert cycles == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    staged = stage_package(tmp_path)
    (staged / "crmlab" / "registry" / "_a.py").write_text("from crmlab.registry import _b\n")
    (staged / "crmlab" / "registry" / "_b.py").write_text("from crmlab.registry import _a\n")
    _, *cycles = _graph_cycles(staged).splitlines()
    assert cycles == ["crmlab.registry._a crmlab.registry._b"]


def _modules() -> list[Path]:
    return sorted(path for folder in _mapping().values() for path in folder.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_modules_declare_all(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assigned |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert "__all__" in assigned, f"{path} has no __all__"


@pytest.mark.parametrize(
    "package", [p for p in _mapping() if p.count(".") == 2], ids=lambda p: p.removeprefix("crmlab.")
)
def test_sub_packages_say_their_job(package: str) -> None:
    """Each sub-package's ``__init__`` docstring states its job in one sentence."""
    doc = ast.get_docstring(ast.parse((_mapping()[package] / "__init__.py").read_text())) or ""
    assert doc.endswith(".") and doc.count(". ") == 0, f"{package}: {doc!r}"
