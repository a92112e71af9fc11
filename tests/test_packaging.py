"""The built wheel: one top-level import package, ``crmlab``, importable from any working folder.

The wheel is built from a copy of the checkout (so no build litter lands in the repository) and installed
``--no-deps`` into a fresh venv; that venv reaches crmlab's dependencies through a ``.pth`` line naming this
environment's site-packages, which adds the folder without running its ``.pth`` files, so the editable install of
the checkout stays invisible there. The command runs from the repository root (where the top-level ``blocks/``,
``registry/`` ... folders must not shadow the installed package) and from an unrelated folder.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*cmd: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crmlab's wheel, built from a copy of the checkout's files (tracked and untracked, not ignored)."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout.split("\0")
    src = tmp / "src"
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((REPO / rel).read_bytes())
    pip = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "w")
    run(*pip, src)
    (built,) = (tmp / "w").glob("crmlab-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (``--system-site-packages``) with the wheel installed ``--no-deps``; returns its bin folder."""
    env = tmp_path_factory.mktemp("venv") / "v"
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "crmlab_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"crmlab"}
    for module in (
        "cli",
        "registry/core",
        "blocks/base",
        "blocks/testing",
        "runners/training/_train",
        "runners/mlflow_model",
    ):
        assert f"crmlab/{module}.py" in names
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:  # every sub-package, one by one as pyproject lists them
        assert "/".join([*package.split("."), "__init__.py"]) in names, package
    folders = {
        str(p.parent.relative_to(REPO)) for top in ("runners", "search") for p in (REPO / top).rglob("__init__.py")
    }
    assert len(folders) == sum(p.startswith(("crmlab.runners", "crmlab.search")) for p in packages)  # none forgotten
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["crmlab"]


@pytest.mark.parametrize("where", ["repository root", "unrelated folder"])
def test_installed_wheel_imports_from_anywhere(installed: Path, where: str, tmp_path: Path) -> None:
    cwd = REPO if where == "repository root" else tmp_path
    code = "import crmlab, crmlab.blocks, crmlab.blocks.conv, crmlab.cli; print(crmlab.blocks.conv.__file__)"
    located = Path(run(installed / "python", "-c", code, cwd=cwd).stdout.strip())
    assert located.parts[-3:] == ("crmlab", "blocks", "conv.py")
    assert installed.parent in located.parents, located  # the wheel's copy, not the checkout's blocks/ folder
    assert run(installed / "crmlab", "--help", cwd=cwd).stdout.startswith("usage: crmlab")
    listing = run(installed / "crmlab", "blocks", cwd=cwd).stdout
    assert "origin: crmlab 0.1.0 (crmlab.blocks.conv:SEConvEncoder)" in listing
