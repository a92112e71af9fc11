"""Gradient x input saliency of a trained model, matched against known motifs (``crmlab explain`` for one model).

Saliency is taken with respect to the one-hot input: the model is cut after its ``onehot_input`` block, so the
rest of the network is a function of a float ``(batch, length, 5)`` one-hot array (channels N, A, C, G, T). The
gradient of the prediction (measured scale) times the input keeps, at each position, the gradient at the observed
base: the per-position saliency of the CRMnet paper's Fig. 5 ("input-masked gradient"). Gradients come from the
backend's own automatic differentiation (:func:`input_gradients`: TensorFlow or JAX).

:func:`explain` joins saliency with JASPAR motif hits (:mod:`crmlab.runners.inference._motifs`);
:func:`write_explanation` writes
the tables and figures to a folder, :func:`log_folder` logs it to an MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from crmlab.registry import CrmlabError
from crmlab.runners.data import SequenceTable
from crmlab.runners.inference._explain_plots import motif_bars, saliency_logos
from crmlab.runners.inference._motifs import Motif, motif_table, scan

__all__ = [
    "Explanation",
    "explain",
    "input_gradients",
    "log_folder",
    "onehot_model",
    "saliency",
    "write_explanation",
]


def onehot_model(model: keras.Model) -> keras.Model:
    """The part of ``model`` after its ``onehot_input`` block: one-hot ``(batch, length, 5)`` -> ``(batch, 1)``.

    Raises:
        CrmlabError: the model has no single ``onehot_input`` block feeding the rest of the network.
    """
    from crmlab.blocks.sequence import OneHotInput

    found = [layer for layer in model.layers if isinstance(layer, OneHotInput)]
    if len(found) != 1:
        raise CrmlabError(f"saliency needs a model with exactly one onehot_input block; this one has {len(found)}")
    try:
        return keras.Model(found[0].output, model.outputs[0])
    except ValueError as exc:
        raise CrmlabError(f"saliency: the model uses its tokens other than through onehot_input ({exc})") from None


def input_gradients(fn: Callable[[Any], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled function ``x -> d sum(fn(x)) / d x`` on the current Keras backend.

    Each sample's output depends on that sample alone (inference mode), so the gradient of the sum is the batch of
    per-sample gradients.

    Args:
        fn: maps a float array ``(batch, ...)`` to outputs ``(batch, ...)`` with Keras ops (e.g. a Keras model).

    Returns:
        A function from a float array ``(batch, ...)`` to the gradients, same shape and dtype, as numpy.

    Raises:
        CrmlabError: a backend without a gradient implementation here (TensorFlow and JAX have one).
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def grad_tf(x: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = keras.ops.sum(fn(x))
            return tape.gradient(total, x)

        return lambda x: grad_tf(tf.convert_to_tensor(x)).numpy()
    if backend == "jax":
        import jax

        grad_jax = jax.jit(jax.grad(lambda x: keras.ops.sum(fn(x))))
        return lambda x: np.asarray(grad_jax(np.asarray(x)))
    raise CrmlabError(f"--backend: saliency needs the tensorflow or jax backend, not {backend}")


def saliency(
    model: keras.Model, tokens: np.ndarray, batch_size: int = 256, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient x input of ``model``'s prediction with respect to the one-hot input, in batches.

    Args:
        model: a trained model (tokens -> ``(batch, 1)``) with an ``onehot_input`` block.
        tokens: ``(n, length)`` tokens.
        batch_size: sequences per gradient evaluation (the last batch is padded to this size, compiled once).
        progress: show a progress bar.

    Returns:
        ``contributions`` ``float32`` ``(n, length, 4)``: gradient x input in the A, C, G, T channels (non-zero only
        at the observed base), and ``saliency`` ``float32`` ``(n, length)``: gradient x input summed over all five
        channels (N included), i.e. the gradient at the observed base.
    """
    sub = onehot_model(model)
    channels = int(sub.inputs[0].shape[-1])
    grad = input_gradients(lambda x: sub(x, training=False))
    n, length = tokens.shape
    contributions = np.zeros((n, length, channels - 1), dtype=np.float32)
    scores = np.zeros((n, length), dtype=np.float32)
    bar = keras.utils.Progbar(n, unit_name="sequence") if progress else None
    for start in range(0, n, batch_size):
        chunk = tokens[start : start + batch_size].astype(np.int64)
        x = np.zeros((batch_size, length, channels), dtype=np.float32)
        x[np.arange(len(chunk))[:, None], np.arange(length)[None, :], np.clip(chunk, 0, channels - 1)] = 1.0
        gx = (grad(x) * x)[: len(chunk)]
        contributions[start : start + len(chunk)] = gx[..., 1:]
        scores[start : start + len(chunk)] = gx.sum(axis=-1)
        if bar is not None:
            bar.update(start + len(chunk))
    return contributions, scores


@dataclass(eq=False)
class Explanation:
    """Saliency of one model on one sequence set, with the motif hits and the per-motif table.

    Attributes:
        sequences: the scored sequences (ids, tokens ``(n, length)``, lengths ``(n,)``, measured values or None).
        contributions: ``(n, length, 4)`` gradient x input in the A, C, G, T channels.
        saliency: ``(n, length)`` per-position saliency.
        hits: motif hits (:func:`crmlab.runners.inference._motifs.scan`).
        table: the per-motif table (:func:`crmlab.runners.inference._motifs.motif_table`).
    """

    sequences: SequenceTable
    contributions: np.ndarray
    saliency: np.ndarray
    hits: pd.DataFrame
    table: pd.DataFrame


def explain(
    model: keras.Model,
    sequences: SequenceTable,
    motifs: Sequence[Motif],
    p_value: float = 1e-4,
    hits: pd.DataFrame | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Explanation:
    """Saliency of ``model`` over ``sequences``, motif hits (scanned unless given) and the per-motif table.

    Args:
        model: a trained model.
        sequences: the sequences (with measured values for the expression columns).
        motifs: motifs to scan for.
        p_value: hit threshold of the scan.
        hits: hits of ``motifs`` in ``sequences`` from an earlier :func:`crmlab.runners.inference._motifs.scan` (shared
        by models).
        batch_size: sequences per gradient evaluation.
        progress: show progress bars.

    Returns:
        The explanation.
    """
    contributions, scores = saliency(model, sequences.tokens, batch_size, progress)
    if hits is None:
        hits = scan(motifs, sequences.tokens, sequences.lengths, p_value)
    table = motif_table(motifs, hits, scores, sequences.lengths, sequences.values)
    return Explanation(sequences, contributions, scores, hits, table)


def write_explanation(
    expl: Explanation,
    motifs: Sequence[Motif],
    out: Path,
    title: str,
    settings: dict[str, Any],
    logos: int = 6,
    min_hits: int = 10,
) -> list[Path]:
    """Write ``motifs.tsv``, ``hits.tsv``, ``saliency.npz``, ``summary.json``, the bar chart and the logos.

    Args:
        expl: the explanation.
        motifs: the scanned motifs (for the motif logos).
        out: the folder (created).
        title: figure title (model and test set).
        settings: recorded in ``summary.json`` (model, test set, p-value, JASPAR release, ...).
        logos: number of motifs to draw saliency logos for (highest saliency ratio among frequent motifs).
        min_hits: motifs with fewer hits are left out of the figures (not the table).

    Returns:
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    seqs = expl.sequences
    files = [out / "motifs.tsv", out / "hits.tsv", out / "saliency.npz", out / "summary.json"]
    expl.table.to_csv(files[0], sep="\t", index=False, float_format="%.6g")
    hits = expl.hits.assign(id=[seqs.ids[i] for i in expl.hits["sequence"]])
    hits.to_csv(files[1], sep="\t", index=False, float_format="%.6g")
    np.savez_compressed(
        files[2], saliency=expl.saliency, contributions=expl.contributions, lengths=seqs.lengths, ids=np.array(seqs.ids)
    )
    frequent = expl.table[expl.table["hits"] >= min_hits]
    above = frequent[frequent["saliency_at_hits"] > frequent["saliency_all"]]
    abs_above = frequent[frequent["abs_saliency_ratio"] > 1]
    summary = {
        **settings,
        "sequences": len(seqs),
        "motifs_scanned": len(motifs),
        "motifs_with_hits": int((expl.table["hits"] > 0).sum()),
        "hits": len(expl.hits),
        "saliency_all": float(expl.table["saliency_all"].iloc[0]) if len(expl.table) else None,
        "abs_saliency_all": float(expl.table["abs_saliency_all"].iloc[0]) if len(expl.table) else None,
        "min_hits": min_hits,
        "saliency_above_all_positions": [f"{r.motif} {r.name}" for r in above.itertuples()],
        "abs_saliency_above_all_positions": [f"{r.motif} {r.name}" for r in abs_above.itertuples()],
    }
    files[3].write_text(json.dumps(summary, indent=1))
    files += motif_bars(expl.table, out / "motif_saliency.png", title, min_hits)
    files += saliency_logos(
        seqs, expl.contributions, expl.saliency, expl.hits, expl.table, motifs, out / "logos", logos, min_hits
    )
    return files


def log_folder(run_id: str, tracking_uri: str | None, folder: Path, artifact_path: str) -> None:
    """Log every file under ``folder`` as artifacts of MLflow run ``run_id`` under ``artifact_path``.

    Raises:
        CrmlabError: the store cannot be reached or has no such run.
    """
    from mlflow.tracking import MlflowClient

    from crmlab.runners.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    try:
        MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(folder), artifact_path)
    except Exception as exc:  # an unreachable store, an unknown run: the user's setting to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"--tracking-uri: cannot log to MLflow run {run_id} in {uri}: {first}") from None
