"""The learning-rate schedule a recipe stage trains with, as a Keras schedule evaluated per optimiser step."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from crmlab.runners.rundir._checkpoint import SCHEDULE_VARIABLE
from crmlab.runners.studyfile import Schedule

__all__ = ["StageSchedule"]

"""The name of the optimiser variable that holds a stage's schedule (not training state: checkpoints leave it out)."""
_KINDS = {"constant": 0.0, "flat": 1.0, "cosine": 2.0}


@keras.saving.register_keras_serializable(package="crmlab")
class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe :class:`~crmlab.runners.studyfile._recipe.Schedule` evaluated per optimiser step (``keras.ops`` only).

    Its numbers live in one optimiser variable once :meth:`attach` ed, so the next stage (:meth:`set`) trains with
    the same traced train step: changing the schedule does not recompile the model.

    Args:
        schedule: the stage's schedule, as ``Schedule.model_dump()``.
        steps_per_epoch: optimiser steps per epoch (the schedule is defined in epochs).
        epochs: the stage's epochs (the cosine decay ends at the last one).
        scale: factor on every rate (the replica count under linear learning-rate scaling).
    """

    def __init__(self, schedule: dict[str, Any], steps_per_epoch: int, epochs: int, scale: float = 1.0) -> None:
        self.schedule, self.steps_per_epoch, self.epochs, self.scale = schedule, steps_per_epoch, epochs, scale
        self.variable: Any = None

    def _numbers(self) -> np.ndarray:
        """``[kind, initial, peak, final, warmup_epochs, epochs, steps_per_epoch, scale]`` as float32 ``(8,)``."""
        s = Schedule(**self.schedule)
        values = [_KINDS[s.kind], s.initial, s.peak, s.final, s.warmup_epochs, self.epochs, self.steps_per_epoch]
        return np.asarray([*values, self.scale], dtype="float32")

    def attach(self, optimizer: Any) -> None:
        """Keep the schedule's numbers in a variable of ``optimizer`` (create it under the distribution's scope)."""
        self.variable = optimizer.add_variable((8,), dtype="float32", name=SCHEDULE_VARIABLE)
        self.variable.assign(self._numbers())

    def set(self, schedule: dict[str, Any], steps_per_epoch: int, epochs: int, scale: float = 1.0) -> None:
        """Switch to another stage's schedule (arguments as for the constructor)."""
        self.schedule, self.steps_per_epoch, self.epochs, self.scale = schedule, steps_per_epoch, epochs, scale
        if self.variable is not None:
            self.variable.assign(self._numbers())

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        v = self.variable if self.variable is not None else ops.convert_to_tensor(self._numbers())
        kind, initial, peak, final, warmup, epochs, steps, scale = (v[i] for i in range(8))
        epoch = ops.cast(step, "float32") / steps
        warm = initial + (peak - initial) * epoch / ops.maximum(warmup, 1e-9)
        t = ops.clip((epoch - warmup) / ops.maximum(epochs - warmup, 1.0), 0.0, 1.0)
        cosine = final + 0.5 * (peak - final) * (1.0 + ops.cos(math.pi * t))
        after = ops.where(kind == _KINDS["cosine"], cosine, peak)
        warming = ops.logical_and(kind != _KINDS["constant"], epoch < warmup)
        return ops.where(warming, warm, after) * scale

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "scale": self.scale,
        }
