"""Training batches: gathered per batch from a row view (a split's part) exactly as from the array of its rows."""

from __future__ import annotations

import numpy as np

from crmlab.runners.pipeline import Batches
from crmlab.runners.rowview import RowView


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
