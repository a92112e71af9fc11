"""A row view indexes and converts like the array of its rows, gathering only the rows asked for."""

from __future__ import annotations

import numpy as np
import pytest

from crmlab.runners.data import RowView


def test_a_row_view_behaves_like_the_array_of_its_rows() -> None:
    array = np.arange(60, dtype=np.uint8).reshape(12, 5)
    rows = np.array([7, 2, 9, 2, 11])
    view, same = RowView(array, rows), array[rows]
    assert view.shape == same.shape and view.ndim == 2 and view.dtype == np.uint8 and len(view) == 5
    for key in (1, -1, slice(1, 4), slice(None, None, -2), np.array([4, 0]), same[:, 0] > 20, (2, 3), (slice(3), 1)):
        np.testing.assert_array_equal(view[key], same[key])
    np.testing.assert_array_equal(np.asarray(view), same)
    converted = view.astype("int32")
    assert converted.dtype == np.int32
    np.testing.assert_array_equal(converted, same)
    with pytest.raises(ValueError, match="one-dimensional"):
        RowView(array, rows.reshape(1, -1))
