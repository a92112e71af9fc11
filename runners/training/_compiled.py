"""Compiled models kept per process: a run or stage that trains the same graph with the same compile settings
re-initialises a model compiled before instead of tracing new train, validation and predict steps.

Tracing those steps cost 20-35 s per stage of a quarter-width CRMnet on a 2-core CPU, more than a short stage's
training; an ablation trains the same few graphs many times (seeds, the A/A control, no_pretraining). A reused model
gets the weights *and* dropout seed states of a model freshly assembled under the run's seed, and the optimiser
variables it had when first built (step 0, empty slots, the initial loss scale), so a run trains exactly as it would
on a fresh model. The stage's learning-rate schedule lives in an optimiser variable
(:class:`~crmlab.runners.training._schedule.StageSchedule`), so a new stage does not recompile either.

The cache keeps the :data:`CACHE_SIZE` models used last (an LRU), keyed by the resolved graph and the recipe fields
that compiling reads (:data:`COMPILE_FIELDS`) on the active backend.

Names: Keras names layers it is not given a name for by a per-process counter (``conv1d``, ``conv1d_1``, ...), and
TensorFlow names the ops of a traced step after the layers. Grappler's arithmetic optimiser regroups sums and
products (the gradients' among them) in an order that depends on op names, so the same graph assembled after
another one in the same process (``conv1d_20``, ...) trained to other weights than in a fresh process: ~1e-8 apart
after one step, and the quickstart's ``no_se`` seed 1 reached a Pearson r of 0.5701 in one ``--jobs 2`` worker and
0.6271 in another. :func:`training_model` restarts the counters before it assembles, so a model's names, and with
them its traced steps, are those of a fresh process whatever the process built before.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from crmlab.blocks.assemble import assemble, reverse_complement_average
from crmlab.registry import GraphSpec
from crmlab.runners.parallel import Distribution, make_distribution
from crmlab.runners.rundir import digest
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.training._compile import build_training_state, compile_for_training, stage_schedule
from crmlab.runners.training._schedule import StageSchedule

__all__ = ["CACHE_SIZE", "COMPILE_FIELDS", "TrainingModel", "clear_training_models", "training_model"]

CACHE_SIZE = 4
"""Compiled models kept per process (an ablation's canonical, no_transformer and no_se graphs fit)."""
COMPILE_FIELDS = (
    "loss",
    "optimizer",
    "weight_decay",
    "clipnorm",
    "precision",
    "strategy",
    "jit_compile",
    "steps_per_execution",
    "deterministic",
)
"""Recipe fields that compiling reads (with the graph and backend, the cache key), and ``deterministic``: TensorFlow's
op determinism is in force while a run's steps are traced, so a model traced under it serves only such runs."""

_CACHE: OrderedDict[str, TrainingModel] = OrderedDict()


@dataclass
class TrainingModel:
    """A compiled model and what a stage sets on it.

    Attributes:
        model: the compiled model (weights as the current run left them).
        dist: the distribution it was built under.
        schedule: the optimiser's learning-rate schedule.
        initial_state: the optimiser's variables as first built (``None`` until the first stage builds them).
        head: the strand-averaging export model over ``model`` (built once, on first use).
    """

    model: keras.Model
    dist: Distribution
    schedule: StageSchedule
    initial_state: list[np.ndarray] | None = None
    head: keras.Model | None = None

    def start_stage(self, recipe: Recipe, stage: Stage, steps: int, x: Any, y: Any) -> None:
        """Reset the optimiser to its first-built state and set ``stage``'s schedule (``steps`` per epoch).

        Args:
            recipe: the run's recipe.
            stage: the stage about to train.
            steps: optimiser steps per epoch.
            x: one training input row, ``(1, length)`` int32 (builds the optimiser the first time).
            y: its target, ``(1, 1)`` float32.
        """
        with self.dist.scope():
            if self.initial_state is None:
                build_training_state(self.model, x, y)
                self.initial_state = [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables]
            else:
                for variable, value in zip(self.model.optimizer.variables, self.initial_state, strict=True):
                    variable.assign(value)
            self.schedule.set(*stage_schedule(recipe, stage, steps, self.dist))

    def export_head(self, average_reverse_complement: bool) -> keras.Model:
        """The model whose outputs are exported: strand-averaged if asked, else the model itself."""
        if not average_reverse_complement:
            return self.model
        if self.head is None:
            self.head = reverse_complement_average(self.model)
        return self.head


def _key(graph: GraphSpec, recipe: Recipe) -> str:
    settings = recipe.model_dump(mode="json", include=set(COMPILE_FIELDS))
    return digest({"graph": graph.to_dict(), "backend": keras.config.backend(), "recipe": settings})


def training_model(graph: GraphSpec, recipe: Recipe) -> TrainingModel:
    """A compiled model of ``graph`` for ``recipe`` whose weights are freshly initialised under the current seed.

    Call it where the model would be assembled (after :func:`~crmlab.runners.training._seeding.seed_run` and the
    dtype policy). A model compiled before for the same key is re-initialised from a freshly assembled one; otherwise
    the model is assembled and compiled (its first stage's :meth:`TrainingModel.start_stage` builds the optimiser).
    """
    key = _key(graph, recipe)
    _restart_names()
    found = _CACHE.pop(key, None)
    if found is None:
        dist = make_distribution(recipe.strategy)
        with dist.scope():
            model = assemble(graph)
            _, schedule = compile_for_training(model, recipe, recipe.stages[0], 1, dist)
        found = TrainingModel(model, dist, schedule)
    else:
        fresh = assemble(graph)
        for target, source in zip(found.model.variables, fresh.variables, strict=True):
            target.assign(source.value)
    _CACHE[key] = found
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return found


def _restart_names() -> None:
    """Restart Keras' automatic names (``conv1d``, ``conv1d_1``, ...), as in a new process.

    Names need only be unique within a model, and every model the runner builds from here on is its own: a kept
    model (assembled after an earlier restart, so named alike) is reused, never combined with a new one.
    """
    from keras.src.utils import naming  # keras.backend.clear_session() would reset all of Keras' state

    naming.reset_uids()


def clear_training_models() -> None:
    """Forget every kept model (tests that compare a fresh model with a reused one; freeing memory)."""
    _CACHE.clear()
