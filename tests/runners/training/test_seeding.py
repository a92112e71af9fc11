"""Seeding a run: what ``keras.utils.set_random_seed`` seeds, without clearing the compiled steps' kernels."""

from __future__ import annotations

import random
import time

import keras
import numpy as np
import pytest

from crmlab.runners.training import seed_run


def _draws() -> tuple[float, float, np.ndarray, np.ndarray]:
    layer = keras.layers.Dense(3, kernel_initializer="glorot_uniform")  # an unseeded initialiser: Keras' global seed
    layer.build((None, 4))
    unseeded = keras.random.uniform((5,))  # keras.random with no seed: Keras' global generator
    return random.random(), float(np.random.random()), keras.ops.convert_to_numpy(layer.kernel), np.asarray(unseeded)


@pytest.mark.parametrize("seed", [0, 7])
def test_seed_run_draws_what_keras_set_random_seed_draws(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    expected = _draws()
    keras.utils.set_random_seed(seed + 1)
    seed_run(seed)
    found = _draws()
    assert found[:2] == expected[:2]
    np.testing.assert_array_equal(found[2], expected[2])
    np.testing.assert_array_equal(found[3], expected[3])


def test_seed_run_refuses_a_non_integer() -> None:
    with pytest.raises(TypeError, match="integer"):
        seed_run(1.5)  # type: ignore[arg-type]


@pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="TensorFlow's kernel cache")
def test_a_compiled_step_is_not_optimised_again_after_seed_run() -> None:
    """``keras.utils.set_random_seed`` makes the next call of a traced step pay Grappler again; ``seed_run`` does not
    (compared as a ratio to the steady step, in one process)."""
    inputs = keras.Input((64,))
    x = inputs
    for _ in range(24):
        x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer="adam", loss="mse")
    data = np.ones((8, 64), "float32"), np.ones((8, 1), "float32")

    def step() -> float:
        start = time.perf_counter()
        model.train_on_batch(*data)
        return time.perf_counter() - start

    step()
    steady = min(step() for _ in range(5))
    seed_run(1)
    after_seed_run = step()
    keras.utils.set_random_seed(1)
    after_keras = step()
    assert after_keras > 5 * steady, (after_keras, steady)  # the kernels were optimised again
    assert after_seed_run < after_keras / 3, (after_seed_run, after_keras, steady)
