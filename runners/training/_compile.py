"""Compiling a model for one stage of a recipe: the loss, the optimiser with its per-step schedule, the metrics."""

from __future__ import annotations

from typing import Any

import keras

from crmlab.runners.parallel import Distribution
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.training._metrics import PearsonR
from crmlab.runners.training._schedule import StageSchedule

__all__ = ["build_training_state", "compile_for_training", "loss_function", "stage_schedule"]


def loss_function(recipe: Recipe) -> keras.losses.Loss:
    """The recipe's training loss (Huber with its ``delta``, or mean squared error)."""
    if recipe.loss.name == "huber":
        return keras.losses.Huber(delta=recipe.loss.delta)
    return keras.losses.MeanSquaredError()


def compile_for_training(
    model: keras.Model, recipe: Recipe, stage: Stage, steps: int, dist: Distribution
) -> tuple[Any, StageSchedule]:
    """Compile ``model`` for ``stage`` of ``recipe`` (loss, optimiser, per-step schedule, metrics, XLA).

    Args:
        model: the model to compile (under ``dist``'s scope).
        recipe: the recipe.
        stage: the stage of ``recipe`` to train next.
        steps: the number of optimiser steps per epoch.
        dist: the distribution (its replica count scales the rate under ``lr_scaling: linear``).

    Returns:
        The optimiser and its schedule (:class:`~crmlab.runners.training._schedule.StageSchedule`, kept in an optimiser
        variable; ``schedule.set(*stage_schedule(...))`` switches it to another stage without recompiling).
    """
    lr = StageSchedule(*stage_schedule(recipe, stage, steps, dist))
    kwargs: dict[str, Any] = {"learning_rate": lr}
    if recipe.clipnorm:
        kwargs["clipnorm"] = recipe.clipnorm
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=recipe.weight_decay, **kwargs)
    else:
        optimizer = keras.optimizers.Adam(**kwargs)
    lr.attach(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=loss_function(recipe),
        metrics=[keras.metrics.R2Score(name="r2"), PearsonR(), keras.metrics.MeanSquaredError(name="mse")],
        jit_compile=recipe.jit_compile,
        steps_per_execution=recipe.steps_per_execution,
    )
    return optimizer, lr


def stage_schedule(recipe: Recipe, stage: Stage, steps: int, dist: Distribution) -> tuple[dict, int, int, float]:
    """The arguments of ``stage``'s :class:`~crmlab.runners.training._schedule.StageSchedule` (its ``set`` or
    constructor):
    the schedule, ``steps`` per epoch, the stage's epochs and the rate's scale (replicas under linear scaling)."""
    scale = dist.replicas if recipe.lr_scaling == "linear" else 1
    return recipe.stage_schedule(stage).model_dump(), steps, recipe.stage_epochs(stage), float(scale)


def build_training_state(model: keras.Model, x: Any, y: Any) -> None:
    """Create a compiled model's optimiser slots, loss and metric state now, eagerly, from one example batch.

    Left to the first traced train step (TensorFlow without a distribution strategy defers it there), every such
    variable's initialiser is lifted out of the graph one at a time: that made tracing a stage's train and
    validation steps about twice as slow, on every stage of every run. Metric state is reset afterwards.

    Args:
        model: a model compiled by :func:`compile_for_training`.
        x: an input batch, ``(n, length)`` tokens (a single row is enough).
        y: its targets, ``(n, 1)`` float32.
    """
    model.optimizer.build(model.trainable_variables)
    y_pred = model(x, training=False)
    model.compute_loss(x, y, y_pred)
    model.compute_metrics(x, y, y_pred, sample_weight=None)
    model.reset_metrics()
