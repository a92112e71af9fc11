"""Scoring a model as the runner does: a stage's data split, predictions of any number of rows (in chunks, across
processes), and the exported model's final validation metrics."""

from __future__ import annotations

import keras
import numpy as np

from crmlab.runners.data import Dataset, RowView, split
from crmlab.runners.parallel import predict_across, process_count
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.training._compile import loss_function
from crmlab.runners.training._metrics import regression_metrics

__all__ = ["final_validation", "predict", "stage_split"]


def stage_split(ds: Dataset, stage: Stage, datasets: dict[str, Dataset], seed: int) -> tuple[Dataset, Dataset]:
    """A stage's training and validation data: its ``split`` of ``ds`` by ``seed``, or ``ds`` and the validation
    file (``split.method: files``)."""
    if stage.split.method == "files":
        return ds, datasets[str(stage.split.validation)]
    frac = stage.split.validation_fraction
    train_idx, val_idx = split(ds, stage.split.method, (1 - frac, frac), seed)
    return ds.subset(train_idx), ds.subset(val_idx)


def final_validation(
    head: keras.Model,
    recipe: Recipe,
    datasets: dict[str, Dataset],
    norm: tuple[float, float],
    replicas: int = 1,
) -> dict[str, float]:
    """The exported model's ``val_*`` metrics on the last stage's validation split, on that stage's standardised
    scale (as the per-epoch metrics are). ``head`` is the exported model without its target scaling, so its
    predictions are on that scale already; ``norm`` is the stage's ``(mean, std)``.

    They differ from the best epoch's when the model is not that epoch's weights: ``keep_previous`` mixing,
    strand averaging, or no ``restore_best``. ``val_loss`` is the recipe's loss without regularisation terms.
    """
    stage = recipe.stages[-1]
    _, val = stage_split(datasets[stage.data], stage, datasets, recipe.seed)
    mean, std = norm
    y = (val.values.astype("float64") - mean) / std
    p = predict(head, val.tokens, replicas).astype("float64")
    m = regression_metrics(y, p)
    loss = float(keras.ops.convert_to_numpy(loss_function(recipe)(y.reshape(-1, 1), p.reshape(-1, 1))))
    return {"val_pearson_r": m["pearson_r"], "val_r2": m["r2"], "val_mse": m["mse"], "val_loss": loss}


def predict(
    model: keras.Model, tokens: np.ndarray | RowView, replicas: int = 1, batch_size: int = 1024, chunk: int = 65536
) -> np.ndarray:
    """Predictions ``(n,)`` for ``tokens`` ``(n, length)``, about ``chunk`` rows converted to ``int32`` at a time (a
    paper-size set is never copied whole); the last chunk is padded to a multiple of ``replicas`` (JAX data-parallel
    batches must split evenly across devices) and the padding trimmed off again. Batches are ``batch_size`` rows
    from the first row on, whatever ``chunk`` is."""
    size = max(batch_size // replicas, 1) * replicas
    step = max(chunk // size, 1) * size
    parts = [_predict_rows(model, tokens[i : i + step], replicas, size) for i in range(0, len(tokens), step)]
    return np.concatenate(parts) if parts else np.zeros(0, "float32")


def _predict_rows(model: keras.Model, rows: np.ndarray, replicas: int, size: int) -> np.ndarray:
    x = np.asarray(rows).astype("int32")
    pad = (-len(x)) % replicas
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    if process_count() > 1:
        return predict_across(model, x, size).reshape(-1)[: len(rows)]
    return model.predict(x, batch_size=size, verbose=0).reshape(-1)[: len(rows)]
