"""A read-only view of chosen rows of a 2-D array, gathering only the rows it is asked for.

A data set split into training and validation rows keeps its tokens once, often memory-mapped from the token
cache: each part is a :class:`RowView` of the same array, and a batch gathers just its rows from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RowView"]


class RowView:
    """Rows ``rows`` of ``array``, indexed and converted like the array ``array[rows]`` but never copied whole
    unless converted whole (``np.asarray(view)``, :meth:`astype`).

    Args:
        array: ``(n, ...)`` the array (an ``np.memmap`` stays mapped).
        rows: ``int64`` ``(m,)`` row indices into ``array``.

    Attributes:
        array: the array the rows are taken from.
        rows: the row indices.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be one-dimensional, got shape {self.rows.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(m, ...)``: the number of rows, then the array's other dimensions."""
        return (len(self.rows), *self.array.shape[1:])

    @property
    def ndim(self) -> int:
        """The number of dimensions (the array's)."""
        return int(self.array.ndim)

    @property
    def dtype(self) -> np.dtype:
        """The element type (the array's)."""
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``array[rows][key]``, gathering only the rows ``key`` selects (a row, a slice, indices or a mask first,
        then, in a tuple, indices of the other dimensions)."""
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        chosen = self.rows[key]
        out = self.array[chosen]
        if not rest:
            return out
        return out[rest] if np.ndim(chosen) == 0 else out[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.array[self.rows]
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype: Any) -> np.ndarray:
        """All the rows as a new array of ``dtype``, ``(m, ...)``."""
        return np.asarray(self, dtype=dtype)
