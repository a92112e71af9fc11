"""Compiled models reused across stages and runs: a new stage's schedule takes effect without retracing."""

from __future__ import annotations

import keras
import numpy as np

from crmlab.runners.parallel import make_distribution
from crmlab.runners.studyfile import Recipe, Schedule, Stage
from crmlab.runners.training import compile_for_training
from crmlab.runners.training._compile import stage_schedule


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
