"""What a training run produces: a :class:`RunResult` when it finishes (or :class:`TrainingFailed` when it cannot),
the files it leaves in its run directory, and reading a finished run back from them.

A finished run directory holds ``graph.yaml``, ``recipe.yaml``, ``result.json`` (test metrics, parameter counts,
MLflow run id, final validation metrics, history), ``model.keras`` and ``predictions_<test>.npy`` /
``measured_<test>.npy`` per test set; with MLflow, the final metrics, these files, scatter plots and prediction
tables are logged to the run, and ``model.keras`` as the run's logged model, a pyfunc model that scores sequences
(:mod:`crmlab.runners.inference._mlflow_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crmlab.registry import CrmlabError, GraphSpec, yamlio
from crmlab.runners.data import Dataset
from crmlab.runners.rundir._runkey import data_hashes, run_key
from crmlab.runners.studyfile import Recipe

__all__ = ["RunResult", "TrainingFailed", "finished_result", "load_result", "run_history", "write_result_files"]


class TrainingFailed(CrmlabError):
    """A run that cannot go on (NaN loss, diverged): the reason is the message."""


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_key: the run's key (its directory's name).
        run_dir: the run's directory.
        test_metrics: metrics by test set name, then metric name.
        history: one record per epoch (stage, epoch, seconds, time, Keras logs; ``reused`` for a cached stage).
        parameters: ``total`` and ``trainable`` parameter counts.
        mlflow_run_id: the MLflow run (``None`` without tracking).
        model_path: the exported model (``model.keras``).
        predictions: predictions ``(n,)`` by test set name.
        measured: measured values ``(n,)`` by test set name.
        validation: the exported model's ``val_*`` metrics on the last stage's validation split.
    """

    run_key: str
    run_dir: Path
    test_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    parameters: dict[str, int]
    mlflow_run_id: str | None = None
    model_path: Path | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    measured: dict[str, np.ndarray] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


def run_history(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, Dataset],
    tests: dict[str, Dataset],
    runs_dir: Path,
) -> list[dict[str, Any]]:
    """The per-epoch records this exact run has committed in ``runs_dir`` so far (empty if it never started)."""
    state = Path(runs_dir) / run_key(graph, recipe, data_hashes(datasets, tests)) / "state.json"
    return json.loads(state.read_text()).get("history", []) if state.exists() else []


def finished_result(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, Dataset],
    tests: dict[str, Dataset],
    runs_dir: Path,
) -> RunResult | None:
    """The result of this exact run if it has finished in ``runs_dir``, else ``None`` (nothing is trained)."""
    key = run_key(graph, recipe, data_hashes(datasets, tests))
    state = Path(runs_dir) / key / "state.json"
    if state.exists() and json.loads(state.read_text()).get("finished"):
        return load_result(state.parent, key)
    return None


def write_result_files(result: RunResult, graph: GraphSpec, recipe: Recipe) -> None:
    """Write a finished run's files into ``result.run_dir``: ``graph.yaml``, ``recipe.yaml``, ``result.json`` and the
    ``predictions_<test>.npy`` / ``measured_<test>.npy`` arrays ``(n,)`` that :func:`load_result` reads back."""
    out = result.run_dir
    (out / "graph.yaml").write_text(yamlio.dumps(graph.to_dict()))
    (out / "recipe.yaml").write_text(yamlio.dumps(recipe.model_dump(mode="json")))
    for name, pred in result.predictions.items():
        np.save(out / f"predictions_{name}.npy", pred)
        np.save(out / f"measured_{name}.npy", result.measured[name])
    summary = {
        "run_key": result.run_key,
        "test_metrics": result.test_metrics,
        "parameters": result.parameters,
        "mlflow_run_id": result.mlflow_run_id,
        "validation": result.validation,
        "history": result.history,
    }
    (out / "result.json").write_text(json.dumps(summary, indent=1))


def load_result(run_dir: Path, key: str) -> RunResult:
    """The :class:`RunResult` of the finished run in ``run_dir`` whose key is ``key`` (from its written files)."""
    summary = json.loads((run_dir / "result.json").read_text())
    preds = {p.stem.removeprefix("predictions_"): np.load(p) for p in run_dir.glob("predictions_*.npy")}
    measured = {p.stem.removeprefix("measured_"): np.load(p) for p in run_dir.glob("measured_*.npy")}
    return RunResult(
        key,
        run_dir,
        summary["test_metrics"],
        summary["history"],
        summary["parameters"],
        summary.get("mlflow_run_id"),
        run_dir / "model.keras",
        preds,
        measured,
        summary.get("validation", {}),
    )
