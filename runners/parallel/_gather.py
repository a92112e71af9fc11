"""Predictions of a model trained across several JAX processes, gathered onto every process."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from crmlab.runners.parallel._jax_processes import local_rows

__all__ = ["predict_across"]


def predict_across(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model``'s outputs for ``x`` when several processes train it: every process passes the same ``x`` and gets
    every output.

    Keras' ``predict`` cannot fetch outputs that span other processes' devices, so each global batch of
    ``batch_size`` rows (both divisible by the device count) is assembled from the processes' slices of it, run
    through the model's compiled forward pass, and gathered back onto every process.

    Args:
        model: a model built under the run's ``DataParallel`` distribution.
        x: ``(n, ...)`` inputs, the same in every process.
        batch_size: the global batch.

    Returns:
        ``(n, ...)`` outputs, the same in every process.
    """
    import jax
    from jax.experimental import multihost_utils

    distribution = keras.distribution.distribution()
    forward = jax.jit(lambda t, n, xs: model.stateless_call(t, n, xs, training=False)[0])
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    outputs = []
    for start in range(0, len(x), batch_size):
        rows = x[start : start + batch_size]
        layout: Any = distribution.get_data_layout(rows.shape).backend_layout
        batch = jax.make_array_from_process_local_data(layout, rows[local_rows(len(rows))], rows.shape)
        outputs.append(np.asarray(multihost_utils.process_allgather(forward(trainable, fixed, batch), tiled=True)))
    return np.concatenate(outputs)
