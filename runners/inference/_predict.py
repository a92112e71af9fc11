"""Scoring sequences with a trained model: model references, batched prediction, in-silico saturation mutagenesis.

A trained model is named by a ``.keras`` file, a run directory (``RUNS_DIR/<run key>/``, holding ``model.keras``)
or an MLflow run id (the Keras file of its logged model is downloaded,
:func:`crmlab.runners.inference._model_store.download_keras`; a run logged before crmlab logged models has a
``model.keras`` artifact instead). Every exported crmlab model ends in a ``target_scale`` rescaling layer, so it
predicts on the measured scale of the run's final training stage.

Sequences are read with :func:`crmlab.runners.data._sequences.read_sequences` (the readers, checks and encoding of
training data), so a file scored here gives the very tokens its training or test run saw.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from crmlab.registry import CrmlabError
from crmlab.runners.data import ALPHABET, SequenceTable

__all__ = [
    "BASES",
    "LoadedModel",
    "check_length",
    "load_model",
    "mutagenesis_path",
    "predict",
    "saturation_mutagenesis",
    "write_mutagenesis",
    "write_predictions",
]

BASES = "ACGT"
"""Substitution columns of the mutagenesis effects, in token order (tokens 1..4)."""

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class LoadedModel:
    """A trained model and where it came from.

    Attributes:
        model: the Keras model: tokens ``(batch, length)`` -> predictions ``(batch, 1)`` on the measured scale.
        source: what the user named (path or run id).
        run_id: the MLflow run that produced it, when known (a run id, or the run directory's ``result.json``).
        run_dir: the run directory, when given one.
    """

    model: keras.Model
    source: str
    run_id: str | None = None
    run_dir: Path | None = None

    @property
    def length(self) -> int:
        """The model's input length (tokens per sequence)."""
        return int(self.model.inputs[0].shape[1])


def load_model(ref: str | Path, tracking_uri: str | None = None) -> LoadedModel:
    """Load a trained model from a ``.keras`` file, a run directory or an MLflow run id.

    Args:
        ref: the ``.keras`` path, the run directory, or a 32-hex-digit MLflow run id.
        tracking_uri: MLflow tracking URI for a run id (default: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``).

    Returns:
        The model with its provenance.

    Raises:
        CrmlabError: nothing to load under that name (one line naming it).
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise CrmlabError(f"{text}: no model.keras in this directory (is the run finished?)")
        result = path / "result.json"
        run_id = json.loads(result.read_text()).get("mlflow_run_id") if result.is_file() else None
        return LoadedModel(_load_keras(path / "model.keras"), text, run_id, path)
    if path.suffix == ".keras" or path.exists():
        if not path.is_file():
            raise CrmlabError(f"{text}: no such model file")
        return LoadedModel(_load_keras(path), text)
    if not _RUN_ID.fullmatch(text):
        raise CrmlabError(f"{text}: not a .keras file, a run directory or an MLflow run id")
    return LoadedModel(_download_model(text, tracking_uri), text, text)


def _load_keras(path: Path) -> keras.Model:
    from crmlab.registry import core

    core.blocks().load_all()  # imports every block module, registering its layers for deserialisation
    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"{path}: cannot load the model: {first}") from None


def _download_model(run_id: str, tracking_uri: str | None) -> keras.Model:
    from crmlab.runners.inference._model_store import download_keras
    from crmlab.runners.tracking import default_tracking_uri

    with tempfile.TemporaryDirectory(prefix="crmlab-model-") as tmp:
        return _load_keras(download_keras(run_id, tracking_uri or default_tracking_uri(), Path(tmp)))


def check_length(table: SequenceTable, loaded: LoadedModel, label: str) -> None:
    """The tokens must have the model's input length (read them with ``length=loaded.length``)."""
    if table.tokens.shape[1] != loaded.length:
        raise CrmlabError(f"{label}: sequences encoded to length {table.tokens.shape[1]}, model takes {loaded.length}")


def predict(model: keras.Model, tokens: np.ndarray, batch_size: int = 1024, progress: bool = False) -> np.ndarray:
    """Predictions for ``tokens`` in batches, exactly as the training runner predicts its test sets.

    Args:
        model: a trained model (tokens -> ``(batch, 1)``).
        tokens: ``(n, length)`` tokens.
        batch_size: rows per forward pass (the runner uses 1,024; the same size gives bit-identical results).
        progress: show a progress bar.

    Returns:
        ``float32`` predictions ``(n,)``.
    """
    if len(tokens) == 0:
        return np.zeros(0, np.float32)
    out = model.predict(tokens.astype("int32"), batch_size=batch_size, verbose=1 if progress else 0)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def saturation_mutagenesis(
    model: keras.Model,
    tokens: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = 1024,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """In-silico saturation mutagenesis: the predicted effect of every single-nucleotide substitution.

    The effect of base ``b`` at position ``p`` of sequence ``i`` is ``predict(mutant) - predict(sequence)``, the
    mutant being sequence ``i`` with base ``b`` at ``p``. Positions run over the real (unpadded) sequence only;
    the reference base's own effect is 0 by definition (it is not a substitution and is not predicted).

    Args:
        model: a trained model.
        tokens: ``(n, length)`` tokens (1..4 = A, C, G, T; 0 = N).
        lengths: ``(n,)`` real length of each sequence.
        batch_size: rows per forward pass.
        progress: show a progress bar (one step per sequence).

    Returns:
        The reference predictions ``(n,)`` and the effects ``float32`` ``(n, length, 4)`` (columns A, C, G, T;
        NaN past each sequence's length).
    """
    n, length = tokens.shape
    reference = predict(model, tokens, batch_size)
    effects = np.full((n, length, len(BASES)), np.nan, dtype=np.float32)
    bar = keras.utils.Progbar(n, unit_name="sequence") if progress else None
    per_chunk = max(1, (16 * batch_size) // max(3 * length, 1))
    for start in range(0, n, per_chunk):
        rows = range(start, min(start + per_chunk, n))
        mutants, where = [], []
        for i in rows:
            positions = np.arange(lengths[i])
            for b in range(len(BASES)):
                alt = positions[tokens[i, positions] != b + 1]
                batch = np.repeat(tokens[i][None], len(alt), axis=0)
                batch[np.arange(len(alt)), alt] = b + 1
                mutants.append(batch)
                where.append((np.full(len(alt), i), alt, np.full(len(alt), b)))
            known = positions[tokens[i, positions] > 0]  # an N has no reference base: all 4 are substitutions
            effects[i, known, tokens[i, known].astype(np.int64) - 1] = 0.0
        if mutants:
            scores = predict(model, np.concatenate(mutants), batch_size)
            i_idx, p_idx, b_idx = (np.concatenate(parts) for parts in zip(*where, strict=True))
            effects[i_idx, p_idx, b_idx] = scores - reference[i_idx]
        if bar is not None:
            bar.update(rows.stop)
    return reference, effects


def write_predictions(path: Path, table: SequenceTable, predictions: np.ndarray) -> None:
    """TSV ``id``, ``measured`` (when the input had values), ``predicted`` (9 significant digits: exact float32)."""
    lines = ["id\tmeasured\tpredicted" if table.values is not None else "id\tpredicted"]
    for k, (ident, pred) in enumerate(zip(table.ids, predictions, strict=True)):
        measured = f"{table.values[k]:.9g}\t" if table.values is not None else ""
        lines.append(f"{ident}\t{measured}{pred:.9g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_mutagenesis(
    path: Path, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray, effects: np.ndarray
) -> None:
    """TSV, one row per sequence position: ``id``, 1-based ``position``, ``ref`` base, effect of ``A C G T``."""
    letters = np.array(list(ALPHABET))
    with open(path, "w") as fh:
        fh.write("id\tposition\tref\t" + "\t".join(BASES) + "\n")
        for i, ident in enumerate(ids):
            for p in range(int(lengths[i])):
                values = "\t".join(f"{v:.6g}" for v in effects[i, p])
                fh.write(f"{ident}\t{p + 1}\t{letters[tokens[i, p]]}\t{values}\n")


def mutagenesis_path(out: Path) -> Path:
    """Where ``--ism`` effects go next to the predictions file ``OUT.tsv``: ``OUT.ism.tsv``."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.ism.tsv")
