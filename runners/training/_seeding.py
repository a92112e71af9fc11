"""Seeding a run without throwing away the compiled steps a process keeps.

``keras.utils.set_random_seed`` seeds Python, NumPy and Keras, and also TensorFlow's global seed when TensorFlow is
installed. Setting TensorFlow's global seed clears the eager context's kernel cache, so every traced step of every
model this process compiled is optimised again by Grappler on its next call: 3-4 s for the train step of the test
suite's tiny CRMnet on a 2-core CPU, more for its validation and predict steps, far more for a canonical one. A
run that reuses a compiled model (:mod:`crmlab.runners.training._compiled`) paid it anyway.

Nothing a run computes reads TensorFlow's global seed: Keras 3 draws initialisers and dropout from its own
``SeedGenerator`` states with stateless ops, the batches' order and reverse-complement halves come from NumPy
generators seeded by the run (:class:`~crmlab.runners.training._batches.Batches`), and a traced
step is reused across runs, so a seed baked into it at trace time could not follow the run anyway. A run's result is
therefore the same with or without it (the suite's ``--jobs`` tests compare runs trained in fresh processes with
runs trained on reused compiled models, bit for bit). :func:`seed_run` seeds what
``keras.utils.set_random_seed`` seeds, except TensorFlow, through Keras' own global state (private modules of
Keras 3, which pyproject.toml pins below 4; its test compares the draws with ``keras.utils.set_random_seed``'s).
"""

from __future__ import annotations

import random

import numpy as np
from keras.src.backend.common import global_state
from keras.src.random import seed_generator
from keras.src.utils import rng_utils

__all__ = ["seed_run"]


def seed_run(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and Keras' global seed (its global ``SeedGenerator`` is
    recreated from it), as ``keras.utils.set_random_seed(seed)`` does, but leave TensorFlow's global seed (and with
    it the compiled steps' kernels) alone.

    Args:
        seed: the run's seed (a non-negative integer).
    """
    if not isinstance(seed, int):
        raise TypeError(f"a seed is an integer, not {type(seed).__name__}")
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
