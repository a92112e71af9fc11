"""The runner's predictions: any number of rows, converted a chunk at a time, give what one pass over them gives."""

from __future__ import annotations

import numpy as np

from crmlab.runners.data import RowView
from crmlab.runners.training._evaluate import predict
from tests.runners.training.test_batches import tiny_model


def test_predictions_in_chunks_equal_one_pass_and_keep_the_batches() -> None:
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 5, size=(300, 8), dtype=np.uint8)
    model = tiny_model(1)
    whole = predict(model, tokens, batch_size=32, chunk=10_000)
    assert whole.shape == (300,)
    np.testing.assert_array_equal(predict(model, tokens, batch_size=32, chunk=64), whole)
    np.testing.assert_array_equal(predict(model, tokens, replicas=7, batch_size=32, chunk=50), whole)
    rows = rng.permutation(300)[:101]
    np.testing.assert_array_equal(predict(model, RowView(tokens, rows), batch_size=32, chunk=64), whole[rows])
    assert predict(model, tokens[:0]).shape == (0,)
