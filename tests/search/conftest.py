"""A tiny ablation trained once per test process and shared by the tests that only read finished runs.

Its runs are canonical, the A/A control and no_transformer under seeds 0 and 1 (6 runs). Tests that use it carry
``pytest.mark.xdist_group("tiny_ablation")`` so that, under pytest-xdist, they run in the process that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crmlab.search.ablation import load_ablation
from crmlab.search.ablation_train import run_ablation

ROOT = Path(__file__).resolve().parents[2]
TINY_ABLATION = ROOT / "tests" / "fixtures" / "studies" / "tiny_ablation.yaml"
TINY_OVERRIDES = ["variants={}", "leave_one_out=[transformer]", "controls={replicate: true}"]


@dataclass
class TrainedAblation:
    """The shared tiny ablation: its runs folder, MLflow database and what :func:`run_ablation` returned."""

    runs: Path
    db: Path
    results: dict[tuple[str, int], Any]
    rows: list[Any]
    report: Path


@pytest.fixture(scope="session")
def tiny_ablation(tmp_path_factory: pytest.TempPathFactory) -> TrainedAblation:
    """``tiny_ablation.yaml`` with ``TINY_OVERRIDES``, trained once into a session folder."""
    tmp = tmp_path_factory.mktemp("tiny_ablation")
    runs, db = tmp / "runs", tmp / "mlflow.db"
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES)
    results, rows, report = run_ablation(ablation, runs, f"sqlite:///{db}", progress=lambda _: None)
    return TrainedAblation(runs, db, results, rows, report)
