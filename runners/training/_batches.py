"""Batches fed to Keras: training batches (seeded per-epoch shuffling, optional reverse-complement augmentation) and
validation batches in order; both gather and convert one batch at a time."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from crmlab.runners.data import RowView

__all__ = ["Batches", "InOrder", "reverse_complement"]

_COMPLEMENT = np.array([0, 4, 3, 2, 1], dtype=np.uint8)  # N A C G T -> N T G C A


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    """Reverse complement of token rows ``(n, length)``; padding N moves to the 5' end."""
    return _COMPLEMENT[tokens[:, ::-1]]


class Batches(keras.utils.PyDataset):
    """Shuffled mini-batches of ``(tokens, targets)``.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same batches as an
    uninterrupted one. Set :attr:`epoch` before each epoch (the runner's callback does). Every batch is full: the
    last one is completed with the first examples of the epoch's order, so a batch always splits evenly across
    replicas (JAX data-parallel requires it) and no example is seen less than once per epoch.

    Each batch gathers just its rows from ``tokens``, so memory-mapped tokens, or a
    :class:`~crmlab.runners.data._rowview.RowView` of them (a split's part), are never copied whole.

    Args:
        tokens: ``(n, length)`` uint8 tokens: an array or a :class:`~crmlab.runners.data._rowview.RowView`.
        targets: ``(n,)`` float targets.
        batch_size: global batch size.
        seed: shuffling seed.
        reverse_complement: replace a random half of each batch by its reverse complement.
        part: ``(index, count)``: give the ``index``-th of ``count`` equal slices of every global batch (each
            process of a multi-process run feeds its own slice; ``batch_size`` must divide by ``count``).
    """

    def __init__(
        self,
        tokens: np.ndarray | RowView,
        targets: np.ndarray,
        batch_size: int,
        seed: int,
        reverse_complement: bool = False,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        if batch_size % part[1]:
            raise ValueError(f"a global batch of {batch_size} does not split into {part[1]} equal slices")
        self.tokens, self.targets = tokens, np.asarray(targets, dtype="float32").reshape(-1, 1)  # no copy if float32
        self.batch_size, self.seed, self.rc = batch_size, seed, reverse_complement
        self.part = part
        self.epoch = 0
        self._order_epoch = -1
        self._order = np.arange(len(tokens))

    def __len__(self) -> int:
        return math.ceil(len(self.tokens) / self.batch_size)

    def _ensure_order(self) -> None:
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.tokens))
            self._order_epoch = self.epoch

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        self._ensure_order()
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if len(idx) < self.batch_size and len(self._order) >= self.batch_size:
            idx = np.concatenate([idx, self._order[: self.batch_size - len(idx)]])
        flip = np.random.default_rng([self.seed, self.epoch, index]).random(len(idx)) < 0.5
        mine = slice(self.part[0] * len(idx) // self.part[1], (self.part[0] + 1) * len(idx) // self.part[1])
        idx, flip = idx[mine], flip[mine]  # this process's slice of the global batch (all of it, alone)
        rows = self.tokens[idx]
        x = rows.astype("int32")
        if self.rc:
            x[flip] = reverse_complement(rows[flip]).astype("int32")
        return x, self.targets[idx]


class InOrder(keras.utils.PyDataset):
    """Rows ``rows`` of ``(tokens, targets)`` in their order, in batches of ``batch_size`` (the last one smaller).

    Validation data of any size: each batch gathers and converts just its rows to ``int32``, so a paper-size
    validation split (3M rows: 1.4 GB as ``int32``) is never copied whole. The batches are those Keras makes of
    in-memory arrays with the same batch size, so the metrics are the same.

    Args:
        tokens: ``(n, length)`` uint8 tokens: an array or a :class:`~crmlab.runners.data._rowview.RowView`.
        targets: ``(m, 1)`` float32 targets of the rows ``rows`` (``m`` rows).
        batch_size: rows per batch.
        rows: the rows of ``tokens`` to give, a slice with ``m`` rows (all of them by default).
    """

    def __init__(
        self, tokens: np.ndarray | RowView, targets: np.ndarray, batch_size: int, rows: slice | None = None
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.start, stop, _ = (rows or slice(None)).indices(len(tokens))
        self.tokens, self.targets, self.batch_size = tokens, targets, batch_size
        if len(targets) != stop - self.start:
            raise ValueError(f"{len(targets)} targets for {stop - self.start} rows")

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        first = index * self.batch_size
        last = min(first + self.batch_size, len(self.targets))
        x = np.asarray(self.tokens[self.start + first : self.start + last]).astype("int32")
        return x, self.targets[first:last]
