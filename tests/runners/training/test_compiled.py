"""Compiled models reused across stages and runs: a new stage's schedule takes effect without retracing; a model is
named as in a fresh process."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from crmlab.blocks.assemble import assemble
from crmlab.registry import load_graph, resolve_graph
from crmlab.runners.parallel import make_distribution
from crmlab.runners.studyfile import Recipe, Schedule, Stage
from crmlab.runners.training import compile_for_training
from crmlab.runners.training._compile import stage_schedule
from crmlab.runners.training._compiled import clear_training_models, training_model

GRAPHS = Path(__file__).resolve().parents[2] / "fixtures" / "studies"


def test_a_new_stage_schedule_changes_the_traced_step_without_retracing() -> None:
    dist = make_distribution("none")
    frozen = Stage(name="frozen", data="d", schedule=Schedule(kind="constant", peak=1e-30))
    moving = Stage(name="moving", data="d", schedule=Schedule(kind="constant", peak=0.1))
    recipe = Recipe(stages=[frozen, moving], jit_compile=False)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    optimizer, schedule = compile_for_training(model, recipe, frozen, 1, dist)
    x, y = np.ones((4, 3), "float32"), np.full((4, 1), 5.0, "float32")
    start = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    step = model.train_function
    assert all(np.allclose(a, b, rtol=0, atol=1e-20) for a, b in zip(start, model.get_weights(), strict=True))

    schedule.set(*stage_schedule(recipe, moving, 1, dist))
    model.fit(x, y, epochs=1, verbose=0)
    assert model.train_function is step, "the same traced train step"
    assert np.abs(start[0] - model.get_weights()[0]).min() > 0.05, "rate 0.1: the weights moved"
    assert float(keras.ops.convert_to_numpy(schedule(0))) == np.float32(0.1)
    assert len(optimizer.variables) == len([v for v in optimizer.variables if v.name != "stage_schedule"]) + 1


def test_a_model_is_named_as_in_a_fresh_process_whatever_the_process_built_before() -> None:
    """Keras numbers the names it makes up per process (``conv1d``, ``conv1d_1``, ...) and TensorFlow names a traced
    step's ops after the layers; its graph optimiser regroups sums by op name, so a graph assembled after another one
    (``conv1d_18``, ...) trained to other bits: the quickstart's no_se seed 1 reached r 0.5701 in one ``--jobs 2``
    worker and 0.6271 in another. ``training_model`` restarts the names: the same graph gets the same names, and the
    same recipe the same names of its optimiser and metrics, whatever came before."""
    tiny = resolve_graph(load_graph(GRAPHS / "tiny_graph.yaml"))
    recipe = Recipe(stages=[Stage(name="s", data="d")], strategy="none")

    def names() -> list[str]:
        clear_training_models()  # assembled and compiled anew
        model = training_model(tiny, recipe).model
        model.optimizer.build(model.trainable_variables)
        return [v.path for v in model.variables + model.optimizer.variables + model.metrics_variables]

    first = names()
    assemble(tiny), keras.layers.Dense(1), keras.optimizers.Adam()  # as an earlier run would: the counters move on
    assert names() == first
    assert any(name.endswith("_1/kernel") for name in first), "names Keras made up"
    clear_training_models()
