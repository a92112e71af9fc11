"""Training batches: gathered per batch from a row view (a split's part) exactly as from the array of its rows;
validation batches in order, giving the metrics of in-memory arrays."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from crmlab.runners.data import RowView
from crmlab.runners.training import Batches
from crmlab.runners.training._batches import InOrder


def test_batches_of_a_row_view_match_those_of_its_array() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=(50, 8), dtype=np.uint8)
    rows = rng.permutation(50)[:37]
    targets = rng.random(37).astype(np.float32)
    view = Batches(RowView(tokens, rows), targets, 8, seed=3, reverse_complement=True)
    copy = Batches(tokens[rows], targets, 8, seed=3, reverse_complement=True)
    assert len(view) == len(copy) == 5
    for epoch in (0, 1):
        view.epoch = copy.epoch = epoch
        for i in range(len(view)):
            (xv, yv), (xc, yc) = view[i], copy[i]
            assert xv.shape == (8, 8) and xv.dtype == np.int32
            np.testing.assert_array_equal(xv, xc)
            np.testing.assert_array_equal(yv, yc)


def tiny_model(seed: int) -> keras.Model:
    """Tokens ``(batch, 8)`` -> ``(batch, 1)``."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,), dtype="int32"), keras.layers.Embedding(5, 3), keras.layers.Flatten()])
    model.add(keras.layers.Dense(1))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_validation_in_order_gives_the_metrics_of_arrays_without_copying_the_rows() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 5, size=(90, 8), dtype=np.uint8)
    val_rows = rng.permutation(90)[:41]
    val_y = rng.random((40, 1)).astype(np.float32)
    feed = InOrder(RowView(tokens, val_rows), val_y, 16, slice(1, 41))
    assert [len(feed[i][0]) for i in range(len(feed))] == [16, 16, 8]
    x, y = feed[2]
    assert x.dtype == np.int32
    np.testing.assert_array_equal(x, tokens[val_rows[33:41]])
    np.testing.assert_array_equal(y, val_y[32:40])

    train = Batches(tokens[:48], rng.random(48), 16, seed=0)
    arrays = (tokens[val_rows[1:41]].astype("int32"), val_y)
    a = tiny_model(0).fit(train, validation_data=arrays, validation_batch_size=16, epochs=2, verbose=0)
    b = tiny_model(0).fit(train, validation_data=feed, epochs=2, verbose=0)
    assert a.history["val_loss"] == pytest.approx(b.history["val_loss"], rel=1e-6)
    with pytest.raises(ValueError, match="40 targets for 41 rows"):
        InOrder(tokens, val_y, 16, slice(0, 41))
