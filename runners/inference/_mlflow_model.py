"""A finished run's model as an MLflow model: a ``mlflow.pyfunc`` model that scores DNA sequences.

Every finished run logs its exported Keras model as an MLflow 3 *logged model* named ``model`` (the run's "Logged
models" in the UI), not as a plain ``model.keras`` artifact: ``mlflow.pyfunc.load_model(URI).predict(df)`` takes a
DataFrame with a ``sequence`` column of DNA strings and returns the predicted expression, one ``float32`` per row, on
the measured scale of the run's final training stage (the exported model ends in its ``target_scale`` layer).
Sequences are encoded as ``crmlab predict`` encodes a file: the training tokens (:mod:`crmlab.runners.data._tokens`),
padded with N or cut at the 3' end to the model's input length, and a letter other than A, C, G, T, N is a one-line
error naming the row (``sequence:3: sequence has 'X' at position 4; allowed: A, C, G, T, N``).

The MLflow model holds the Keras file itself (``artifacts/model.keras``), which ``crmlab predict RUN_ID`` downloads
(:func:`crmlab.runners.inference._model_store.download_keras`); its requirements are pinned explicitly (crmlab, Keras
and the backend package at their installed versions), so logging loads nothing and infers nothing
(:func:`log_sequence_model`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from crmlab.registry import CrmlabError, SpecError
from crmlab.runners.data import encode
from crmlab.runners.inference._model_store import KERAS_ARTIFACT, MODEL_NAME, logged_model_id
from crmlab.runners.inference._predict import load_model, predict

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.signature import ModelSignature

    from crmlab.runners.tracking import Tracker

__all__ = [
    "SEQUENCE_COLUMN",
    "SequenceModel",
    "encode_frame",
    "log_sequence_model",
    "pip_requirements",
    "register_model",
]

SEQUENCE_COLUMN = "sequence"
"""The input column of DNA sequences."""
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_EXAMPLE = [  # two measured native yeast promoters (data/vaishnav_native_complex_3929.tsv, rows 1 and 2)
    "TGCATTTTTTTCACATCAAAAAAAAAAAGAAAAACAAAGAAAAAGGGGGAATAACACAGCCGCGGGTAACATGAAGCGGCGCGAGCGATACTTCCGTGGTTACGGCTGTT",
    "TGCATTTTTTTCACATCAAAAAAAAAAAGAAAAAGAAACAAAAAGGGGGAATAACACAGCCGCGGGTAACATGAAGCGGCGCGAGCGATACTTCCGTGGTTACGGCTGTT",
]


def encode_frame(frame: pd.DataFrame, length: int) -> np.ndarray:
    """The ``sequence`` column as tokens, as ``crmlab predict`` encodes a file's sequences.

    Args:
        frame: ``(n, ...)`` rows with a :data:`SEQUENCE_COLUMN` of DNA strings (A, C, G, T, N, any case).
        length: the model's input length; shorter sequences are padded with N, longer ones cut at the 3' end.

    Returns:
        ``uint8`` tokens ``(n, length)``.

    Raises:
        SpecError: no ``sequence`` column, an empty or missing sequence, a value that is not a string, or a letter
            other than A, C, G, T, N (``sequence:ROW: ...``, ROW 1-based).
    """
    if SEQUENCE_COLUMN not in frame.columns:
        raise SpecError("input", "", f"no column '{SEQUENCE_COLUMN}' (columns: {', '.join(map(str, frame.columns))})")
    sequences = frame[SEQUENCE_COLUMN].tolist()
    for row, seq in enumerate(sequences, start=1):
        if not isinstance(seq, str) or not seq:
            what = "empty sequence" if seq == "" or pd.isna(seq) else f"expected a DNA sequence, got {seq!r}"
            raise SpecError(f"{SEQUENCE_COLUMN}:{row}", "", what)
    return encode(sequences, length, source=SEQUENCE_COLUMN)


class SequenceModel(mlflow.pyfunc.PythonModel):
    """DNA sequences -> predicted expression with the crmlab Keras model among the MLflow model's artifacts
    (:data:`KERAS_ARTIFACT`); saved by reference (crmlab must be installed where it is loaded, as its pins say)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the Keras model (crmlab's blocks registered for deserialisation)."""
        self.loaded = load_model(context.artifacts[KERAS_ARTIFACT])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Predictions for the sequences of ``model_input``.

        Args:
            context: the model's context (unused: the Keras model is loaded by :meth:`load_context`).
            model_input: ``(n, ...)`` rows with a ``sequence`` column (:func:`encode_frame`).
            params: unused.

        Returns:
            ``float32`` predictions ``(n,)``, in batches of 1,024 as the runner scores its test sets
            (:func:`crmlab.runners.inference._predict.predict`).
        """
        return predict(self.loaded.model, encode_frame(model_input, self.loaded.length))


SequenceModel.__module__ = "crmlab.runners.inference"
"""A logged model pickles this class by reference, by ``__module__``: the public package path, which does not move
when the package's modules do (models logged before the sub-packages name ``crmlab.runners.mlflow_model``, kept for
them)."""


def pip_requirements(backend: str) -> list[str]:
    """The pinned requirements of a logged model: crmlab, Keras and the Keras ``backend``'s package (installed
    versions); MLflow adds its own."""
    return [f"{name}=={metadata.version(name)}" for name in ("crmlab", "keras", backend)]


def _signature() -> ModelSignature:
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("string", SEQUENCE_COLUMN)]), outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))])
    )


@contextlib.contextmanager
def _quiet_save() -> Iterator[None]:
    """No progress bar (copying the Keras file) or notes (cloudpickle, example check) from ``save_model`` on the
    training output; the logger level and the variable are restored after."""
    logger = logging.getLogger("mlflow.pyfunc")
    level, bar = logger.level, os.environ.get(_PROGRESS_BAR)
    logger.setLevel(logging.ERROR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar


def log_sequence_model(tracker: Tracker, keras_file: Path, backend: str) -> str:
    """Log ``keras_file`` as the tracker's run's pyfunc model (:data:`MODEL_NAME`); returns its model id.

    The model is saved with ``mlflow.pyfunc.save_model`` (signature, input example, explicit pins) and logged through
    the tracker's client (:meth:`~crmlab.runners.tracking._tracker.Tracker.log_model`), which is what
    ``mlflow.pyfunc.log_model`` does without its per-run extras: no global tracking URI or active run, no
    serving-input check (which loads the Keras model and predicts), no requirement inference.

    Args:
        tracker: a tracker with a started run.
        keras_file: the exported Keras model (the run folder's ``model.keras``; a local store hard-links it).
        backend: the Keras backend it was trained on (``tensorflow`` or ``jax``).
    """

    def save(path: Path, model: Any) -> None:
        with _quiet_save():
            mlflow.pyfunc.save_model(
                path,
                python_model=SequenceModel(),
                artifacts={KERAS_ARTIFACT: str(keras_file)},
                mlflow_model=model,
                signature=_signature(),
                input_example=pd.DataFrame({SEQUENCE_COLUMN: _EXAMPLE}),
                pip_requirements=pip_requirements(backend),
            )

    return tracker.log_model(MODEL_NAME, save, {f"artifacts/{KERAS_ARTIFACT}": keras_file})


def register_model(tracking_uri: str, run_id: str, name: str, tags: Mapping[str, str]) -> ModelVersion:
    """Register the run's logged model as a new version of the registered model ``name`` (created if missing).

    Args:
        tracking_uri: the tracking store, whose model registry is used.
        run_id: the MLflow run whose logged model (:data:`MODEL_NAME`) is registered.
        name: the registered model's name.
        tags: tags of the new version (study, run key, test metrics).

    Returns:
        The new model version.

    Raises:
        CrmlabError: the run has no logged model, or the registry refuses or cannot be reached (one line).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        model_id = logged_model_id(client, run_id)
        if model_id is None:
            raise CrmlabError(f"--register: MLflow run {run_id} has no logged model to register in {tracking_uri}")
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        # the source is the model's storage location, not models:/<model_id>: a local (SQL) registry resolves that
        # URI through the process's global tracking URI, not through this client's
        source = client.get_logged_model(model_id).artifact_location
        return client.create_model_version(
            name, source, run_id=run_id, tags=dict(tags), model_id=model_id, await_creation_for=0
        )
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"--register: cannot register {name!r} in {tracking_uri}: {first}") from None
