"""Regression metrics: a streaming Pearson r for Keras (``keras.ops`` only) and the numpy test-set metrics."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops
from scipy import stats

__all__ = ["PearsonR", "regression_metrics"]


@keras.saving.register_keras_serializable(package="crmlab")
class PearsonR(keras.metrics.Metric):
    """Pearson correlation between targets and predictions, accumulated exactly over an epoch.

    Keeps the six running sums (n, Σx, Σy, Σx², Σy², Σxy) in float32, so the value over batches equals the value
    over the whole set up to rounding.
    """

    def __init__(self, name: str = "pearson_r", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.sums = self.add_variable(shape=(6,), initializer="zeros", name="sums", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        x = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        y = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        n = ops.cast(ops.shape(x)[0], "float32")
        self.sums.assign_add(ops.stack([n, ops.sum(x), ops.sum(y), ops.sum(x * x), ops.sum(y * y), ops.sum(x * y)]))

    def result(self) -> Any:
        n, sx, sy, sxx, syy, sxy = (self.sums[i] for i in range(6))
        cov = sxy - sx * sy / n
        var = (sxx - sx * sx / n) * (syy - sy * sy / n)
        return cov / ops.sqrt(ops.maximum(var, 1e-12))

    def reset_state(self) -> None:
        self.sums.assign(ops.zeros((6,), dtype="float32"))


def regression_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman rho, R^2 and MSE of ``predicted`` against ``measured`` (both ``(n,)``)."""
    y = np.asarray(measured, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    resid = float(np.sum((y - p) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "pearson_r": float(stats.pearsonr(y, p).statistic),
        "spearman_rho": float(stats.spearmanr(y, p).statistic),
        "r2": 1.0 - resid / total if total > 0 else float("nan"),
        "mse": resid / len(y),
    }
