"""A finished run's outputs: its files in the run directory and, with MLflow, its logged model, final metrics,
artifacts, scatter plots and prediction tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crmlab.registry import GraphSpec
from crmlab.runners.rundir import RunResult, write_result_files
from crmlab.runners.studyfile import Recipe
from crmlab.runners.tracking import Tracker

__all__ = ["write_outputs"]


def write_outputs(result: RunResult, graph: GraphSpec, recipe: Recipe, tracker: Tracker | None) -> None:
    """Write a finished run's files into ``result.run_dir``
    (:func:`~crmlab.runners.rundir._results.write_result_files`) and, with a ``tracker``, log its model (the run's
    logged pyfunc model, :func:`~crmlab.runners.inference._mlflow_model.log_sequence_model`), its final metrics
    (``test.<set>.<metric>``, ``final.<metric>``, ``time_per_step_ms``, ``parameters``; also the logged model's) and
    artifacts.

    ``model.keras`` and ``timing.json`` must already be in the run directory.
    """
    write_result_files(result, graph, recipe)
    if tracker is None:
        return
    import keras

    # imported here, not at the top: the logged model needs MLflow, and a run without it (--no-mlflow on a
    # machine where MLflow is not installed) must not import it
    from crmlab.runners.inference import log_sequence_model, prediction_scatters

    out = result.run_dir
    model_id = log_sequence_model(tracker, out / "model.keras", keras.config.backend())
    timing = json.loads((out / "timing.json").read_text())
    final = {f"test.{t}.{k}": v for t, m in result.test_metrics.items() for k, v in m.items()}
    final.update({f"final.{k}": v for k, v in result.validation.items()})
    if timing["seconds_per_step"]:
        final["time_per_step_ms"] = 1000 * timing["seconds_per_step"]
    final["parameters"] = result.parameters["total"]
    tracker.log_metrics(final, model_id=model_id)
    for name in ("graph.yaml", "recipe.yaml", "result.json"):
        tracker.log_artifact(out / name)
    pearson_r = {name: metrics["pearson_r"] for name, metrics in result.test_metrics.items()}
    for path in prediction_scatters(result.predictions, result.measured, pearson_r, out):
        tracker.log_artifact(path, "plots")
    for name in result.predictions:
        tracker.log_artifact(_predictions_tsv(result, name, out), "predictions")


def _predictions_tsv(result: RunResult, name: str, out: Path) -> Path:
    path = out / f"predictions_{name}.tsv"
    table = np.column_stack([result.measured[name], result.predictions[name]])
    np.savetxt(path, table, fmt="%.6g", delimiter="\t", header="measured\tpredicted", comments="")
    return path
