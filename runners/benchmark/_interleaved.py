"""Interleaved A/B timing: the step times of several compiled models taking turns on one batch."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from crmlab.runners.benchmark._step_time import time_steps

__all__ = ["interleaved_steps"]


def interleaved_steps(
    models: Mapping[str, keras.Model],
    x: np.ndarray,
    y: np.ndarray,
    rounds: int = 5,
    steps_per_round: int = 2,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Step times of several compiled models on the same batch, taking turns, so machine load hits all alike.

    Each model first runs ``warmup`` untimed steps; then, ``rounds`` times, each model in turn runs
    ``steps_per_round`` timed steps (the order alternates between rounds).

    Returns:
        ``{name: [seconds per step, ...]}``.
    """
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name] += time_steps(models[name], x, y, steps_per_round, warmup=0)
    return times
