"""The learning-rate schedule a recipe stage trains with, as a Keras schedule evaluated per optimiser step."""

from __future__ import annotations

import math
from typing import Any

import keras

from crmlab.runners.recipe import Schedule

__all__ = ["StageSchedule"]


@keras.saving.register_keras_serializable(package="crmlab")
class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe :class:`~crmlab.runners.recipe.Schedule` evaluated per optimiser step (``keras.ops`` only).

    Args:
        schedule: the stage's schedule, as ``Schedule.model_dump()``.
        steps_per_epoch: optimiser steps per epoch (the schedule is defined in epochs).
        epochs: the stage's epochs (the cosine decay ends at the last one).
        scale: factor on every rate (the replica count under linear learning-rate scaling).
    """

    def __init__(self, schedule: dict[str, Any], steps_per_epoch: int, epochs: int, scale: float = 1.0) -> None:
        self.schedule, self.steps_per_epoch, self.epochs, self.scale = schedule, steps_per_epoch, epochs, scale

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        s = Schedule(**self.schedule)
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        if s.kind == "constant":
            return ops.convert_to_tensor(s.peak * self.scale, "float32")
        warm = s.initial + (s.peak - s.initial) * epoch / max(s.warmup_epochs, 1e-9)
        if s.kind == "flat":
            after = ops.convert_to_tensor(s.peak, "float32") + 0.0 * epoch
        else:
            span = float(max(self.epochs - s.warmup_epochs, 1))
            t = ops.clip((epoch - s.warmup_epochs) / span, 0.0, 1.0)
            after = s.final + 0.5 * (s.peak - s.final) * (1.0 + ops.cos(math.pi * t))
        rate = ops.where(epoch < s.warmup_epochs, warm, after) if s.warmup_epochs > 0 else after
        return rate * self.scale

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "scale": self.scale,
        }
