"""The tiny search trained once per test process (``optuna_search``) and its runs folder, shared by test_search.py
and test_pareto.py. Tests that use them carry ``pytest.mark.xdist_group("tiny_search")`` so that, under
pytest-xdist, they run in the process that trained it."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmlab.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml"


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs folder: identical runs (canonical, the same trial in another study) are trained once and reused."""
    return tmp_path_factory.mktemp("search") / "runs"


@pytest.fixture(scope="session")
def optuna_search(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny search on Optuna through the CLI (4 random trials) with --export; returns its paths and output."""
    tmp = tmp_path_factory.mktemp("optuna")
    args = [
        "search",
        str(TINY),
        "--runs-dir",
        str(runs),
        "--storage",
        f"sqlite:///{tmp / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--export",
        str(tmp / "out" / "best.yaml"),
    ]
    return {"tmp": tmp, "args": args, "code": main([*args, "--register", "tiny_best"])}
