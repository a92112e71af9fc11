"""A tiny ablation trained once per test process and shared by the tests that only read finished runs.

Its runs are canonical, the A/A control, no_transformer and no_pretraining under seeds 0 and 1 (8 runs), logged to
a real ``mlflow server`` on loopback (the session's ``mlflow_server``). Tests that use it carry
``pytest.mark.xdist_group("tiny_ablation")`` so that, under pytest-xdist, they run in the process that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crmlab.search.ablation import load_ablation, run_ablation
from tests.mlflow_server import MlflowServer

ROOT = Path(__file__).resolve().parents[2]
TINY_ABLATION = ROOT / "tests" / "fixtures" / "studies" / "tiny_ablation.yaml"
TINY_OVERRIDES = ["variants={}", "leave_one_out=[transformer, pretraining]", "controls={replicate: true}"]


@dataclass
class TrainedAblation:
    """The shared tiny ablation: its runs folder, MLflow tracking URI (a server) and what :func:`run_ablation`
    returned."""

    runs: Path
    uri: str
    results: dict[tuple[str, int], Any]
    rows: list[Any]
    report: Path


@pytest.fixture(scope="session")
def tiny_ablation(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> TrainedAblation:
    """``tiny_ablation.yaml`` with ``TINY_OVERRIDES``, trained once into a session folder."""
    runs = tmp_path_factory.mktemp("tiny_ablation") / "runs"
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES)
    results, rows, report = run_ablation(ablation, runs, mlflow_server.url, progress=lambda _: None)
    return TrainedAblation(runs, mlflow_server.url, results, rows, report)
