"""Input-pipeline throughput: sequences per second of tokenising, batching and feeding the training data."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from crmlab.runners.data import encode
from crmlab.runners.training import Batches

__all__ = ["pipeline_throughput"]


def pipeline_throughput(
    sequences: Sequence[str], values: np.ndarray, batch_size: int = 64, length: int = 112, repeats: int = 3
) -> dict[str, float]:
    """Sequences per second of each stage of the training input pipeline, best of ``repeats``.

    - ``tokenise``: :func:`crmlab.runners.data._tokens.encode` (strings -> ``uint8`` tokens, padded to ``length``);
    - ``batch``: one shuffled epoch of :class:`crmlab.runners.training._batches.Batches` (index, gather, cast to int32);
    - ``feed``: one epoch of ``model.fit`` over those batches with a model that does almost nothing (a trainable
      scale on the token mean), i.e. Keras' data adapter and the transfer into the backend: the most the
      pipeline can deliver to a model.
    """

    def best(fn: Callable[[], None]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return len(sequences) / min(times)

    tokens = encode(sequences, length)
    batches = Batches(tokens, np.asarray(values, dtype="float32"), batch_size, seed=0)

    def one_epoch() -> None:
        for i in range(len(batches)):
            batches[i]

    inputs = keras.Input((length,), dtype="int32")
    scaled = keras.layers.Dense(1)(keras.ops.mean(keras.ops.cast(inputs, "float32"), axis=1, keepdims=True))
    probe = keras.Model(inputs, scaled)
    probe.compile(optimizer="sgd", loss="mse")
    probe.fit(batches, epochs=1, verbose=0, shuffle=False)
    return {
        "tokenise": best(lambda: encode(sequences, length)),
        "batch": best(one_epoch),
        "feed": best(lambda: probe.fit(batches, epochs=1, verbose=0, shuffle=False)),
    }
