"""Where a run's model is in an MLflow store: the run's logged model (:data:`MODEL_NAME`, saved by
:func:`crmlab.runners.inference._mlflow_model.log_sequence_model`) with the Keras file among its artifacts, or, for a
run logged by an older crmlab, the run's plain ``model.keras`` artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError

__all__ = ["KERAS_ARTIFACT", "MODEL_NAME", "download_keras", "logged_model_id"]

MODEL_NAME = "model"
"""The name of a run's logged model."""
KERAS_ARTIFACT = "model.keras"
"""The Keras file's name among the MLflow model's artifacts (``artifacts/model.keras`` in the model folder)."""


def logged_model_id(client: Any, run_id: str) -> str | None:
    """The id of the run's logged model :data:`MODEL_NAME` (its newest), or ``None`` (a run of an older crmlab)."""
    outputs = client.get_run(run_id).outputs
    ids = [o.model_id for o in (outputs.model_outputs if outputs is not None else [])]
    named = [m for m in (client.get_logged_model(i) for i in ids) if m.name == MODEL_NAME]
    return max(named, key=lambda m: m.creation_timestamp).model_id if named else None


def download_keras(run_id: str, tracking_uri: str, dst: Path) -> Path:
    """Download the Keras file of an MLflow run into ``dst``: its logged model's, else (a run logged before the
    logged model) its ``model.keras`` artifact.

    Raises:
        CrmlabError: the run is not in the store, or has neither (one line).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri)
        model_id = logged_model_id(client, run_id)
        if model_id is not None:
            uri = f"{client.get_logged_model(model_id).artifact_location}/artifacts/{KERAS_ARTIFACT}"
            return Path(download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri))
        if any(a.path == KERAS_ARTIFACT for a in client.list_artifacts(run_id)):
            local = download_artifacts(
                run_id=run_id, artifact_path=KERAS_ARTIFACT, dst_path=str(dst), tracking_uri=tracking_uri
            )
            return Path(local)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"{run_id}: cannot read this MLflow run's model from {tracking_uri}: {first}") from None
    raise CrmlabError(f"{run_id}: this MLflow run has no logged model and no model.keras in {tracking_uri}")
