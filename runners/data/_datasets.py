"""Training data sets: :func:`load` reads a :class:`~crmlab.runners.data._sources.DataSource` into a :class:`Dataset`.

A dataset holds ``uint8`` tokens (see :mod:`crmlab.runners.data._tokens`) and ``float32`` values, tokenised once and
then cached on disk by content (:mod:`crmlab.runners.data._token_cache`) and read memory-mapped, so processes share
them;
:func:`split` cuts a dataset into index arrays, at random or by whole groups (e.g. sequence clusters, so
near-duplicates never straddle a split), and :meth:`Dataset.subset` takes rows without copying the tokens.

Every mistake in the data is a one-line :class:`~crmlab.registry.errors.SpecError` (``FILE: key.path: message`` or
``FILE:LINE: message``, see :mod:`crmlab.runners.data._readers`). No Keras here: this module is numpy only.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from crmlab.registry import SpecError, did_you_mean
from crmlab.runners.data._readers import Rows, parse_training_fasta, read_training_table
from crmlab.runners.data._rowview import RowView
from crmlab.runners.data._sources import DataSource, decode_text, file_format, open_bytes, open_text, read_bytes
from crmlab.runners.data._tables import as_group_labels
from crmlab.runners.data._token_cache import CacheWriteError, CacheWriter, data_key, default_cache_dir, read_cache
from crmlab.runners.data._tokens import MODEL_LENGTH

__all__ = ["Dataset", "load", "split"]


@dataclass(eq=False)
class Dataset:
    """Tokenised sequences with their measured values.

    Attributes:
        tokens: ``uint8`` ``(n, length)``, 0 = N, 1 = A, 2 = C, 3 = G, 4 = T; a loaded data set's are memory-mapped
            from the token cache, and a :meth:`subset`'s are a :class:`~crmlab.runners.data._rowview.RowView` of them
            (indexing gathers just the rows asked for; ``np.asarray`` or ``astype`` gives them all as an array).
        values: ``float32`` ``(n,)``.
        groups: ``(n,)`` group labels (``int64`` or ``str``) for grouped splits, or None.
        name: a short name (by default the file name without suffixes).
        content_hash: SHA-256 hex digest identifying the exact content (the token cache key for a loaded file).
    """

    tokens: np.ndarray | RowView
    values: np.ndarray
    groups: np.ndarray | None = None
    name: str = ""
    content_hash: str = ""

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if self.tokens.ndim != 2 or self.values.shape != (n,) or (self.groups is not None and len(self.groups) != n):
            shapes = [a.shape if a is not None else None for a in (self.tokens, self.values, self.groups)]
            raise ValueError(f"inconsistent shapes (tokens, values, groups): {shapes}")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        """Sequence length of the tokens (model input length)."""
        return int(self.tokens.shape[1])

    def subset(self, idx: np.ndarray | Sequence[int] | slice) -> Dataset:
        """The rows ``idx`` (integer indices, a boolean mask or a slice) as a new dataset.

        The tokens are not copied: the subset's are a :class:`~crmlab.runners.data._rowview.RowView` of this one's
        array (memory-mapped tokens stay mapped); values and groups are copied.

        Args:
            idx: rows to take, e.g. one of the arrays :func:`split` returns.

        Returns:
            A dataset of ``len(rows)`` rows with the same name and a content hash derived from this one's and the
            row indices.
        """
        rows = np.atleast_1d(np.arange(len(self))[idx])
        digest = hashlib.sha256(f"{self.content_hash}:subset:".encode())
        digest.update(np.ascontiguousarray(rows, dtype="<i8").data)
        groups = None if self.groups is None else self.groups[rows]
        if isinstance(self.tokens, RowView):
            tokens = RowView(self.tokens.array, self.tokens.rows[rows])
        else:
            tokens = RowView(self.tokens, rows)
        return Dataset(tokens, self.values[rows], groups, self.name, digest.hexdigest())


def load(
    source: DataSource,
    length: int = MODEL_LENGTH,
    base_dir: Path | str = ".",
    cache_dir: Path | str | None = None,
    name: str = "",
    key: str = "data",
) -> Dataset:
    """Read, check and tokenise a data source; tokens are cached on disk by content and read memory-mapped.

    A table (tsv, csv) is read in chunks of rows (:data:`~crmlab.runners.data._tables.CHUNK_ROWS`) straight into the
    cache, so memory holds one chunk, never the whole file; a FASTA file and its ``values_file`` are read whole.
    A file loaded before is not read again: its key comes from the cache's index (see
    :func:`~crmlab.runners.data._token_cache.data_key`) and its tokens are mapped from the cache.

    Args:
        source: what to read.
        length: model input length; sequences are padded with N or truncated at the 3' end.
        base_dir: folder that relative ``source.path`` and ``source.values_file`` are resolved against.
        cache_dir: token cache folder (default :func:`~crmlab.runners.data._token_cache.default_cache_dir`).
        name: dataset name (default: the file name without suffixes).
        key: key path of the source in the spec, for errors (``data.train`` gives ``data.train.path: ...``).

    Returns:
        A dataset: tokens ``uint8`` ``(n, length)``, values ``float32`` ``(n,)``, groups ``(n,)`` or None (all
        memory-mapped read-only, unless the cache cannot be written), and the cache key as ``content_hash``.

    Raises:
        SpecError: a one-line error naming the file and the setting (``FILE: key.path: ...``) or the file line
            (``FILE:LINE: ...``).
    """
    base = Path(base_dir)
    path = base / Path(source.path).expanduser()
    label = str(path)
    fmt = file_format(source, path, label, key)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    values_path: Path | None = None
    with ExitStack() as files:
        data = files.enter_context(open_bytes(path, label, f"{key}.path"))
        values = None
        if source.values_file is not None:
            if fmt != "fasta":
                raise SpecError(label, f"{key}.values_file", f"values_file is for FASTA data only (this file is {fmt})")
            values_path = base / Path(source.values_file).expanduser()
            values = files.enter_context(open_bytes(values_path, str(values_path), f"{key}.values_file"))
        digest = data_key(source, length, data, values, cache)
    arrays = read_cache(cache / digest, length)
    if arrays is None:
        read = _Reading(source, fmt, path, values_path, length, key)
        try:
            arrays = read.into(CacheWriter(cache / digest, length))
        except CacheWriteError as e:
            warnings.warn(f"crmlab: cannot write the token cache {e}", RuntimeWarning, stacklevel=2)
            arrays = read.into(CacheWriter(None, length))
    if not name:
        stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
        name = Path(stem).stem
    return Dataset(*arrays, name, digest)


@dataclass(frozen=True)
class _Reading:
    """How to read one data source: :meth:`into` parses, checks and tokenises it into a cache writer."""

    source: DataSource
    fmt: str
    path: Path
    values_path: Path | None
    length: int
    key: str

    def _rows(self) -> Iterator[Rows]:
        label, key = str(self.path), self.key
        if self.fmt != "fasta":
            with open_text(self.path, label, f"{key}.path") as handle:
                yield from read_training_table(self.source, self.fmt, handle, label, key)
            return
        text = decode_text(read_bytes(self.path, label, f"{key}.path"), self.path, label)
        values = None
        if self.values_path is not None:
            vlabel = str(self.values_path)
            vtext = decode_text(read_bytes(self.values_path, vlabel, f"{key}.values_file"), self.values_path, vlabel)
            values = (vtext, vlabel)
        yield parse_training_fasta(self.source, text, label, key, values)

    def into(self, writer: CacheWriter) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Tokens ``(n, length)``, values ``(n,)`` and groups ``(n,)`` or None, written through ``writer``."""
        label = str(self.path)
        values: list[np.ndarray] = []
        groups: list[np.ndarray] = []
        with writer:
            for rows in self._rows():
                if self.source.too_long == "error":
                    rows.check_lengths(self.length, label, self.key)
                writer.append(rows.encode(self.length, self.source.unknown == "as_n", label))
                values.append(rows.values)
                if rows.groups is not None:
                    groups.append(rows.groups)
            joined = None
            if groups:
                joined = np.concatenate(groups) if self.fmt == "fasta" else as_group_labels(np.concatenate(groups))
            return writer.finish(np.concatenate(values), joined)


def split(
    dataset: Dataset, method: Literal["random", "group"], fractions: tuple[float, ...] = (0.9, 0.1), seed: int = 0
) -> list[np.ndarray]:
    """Split rows into disjoint parts of (about) the given fractions.

    ``random`` shuffles rows; ``group`` shuffles the distinct groups (``dataset.groups``) and fills the parts in
    order with whole groups, a group going to the part its middle row falls in, so no group is ever in two parts
    (sizes then follow the fractions only as closely as the group sizes allow).

    Args:
        dataset: the data.
        method: ``random`` or ``group``.
        fractions: one positive fraction per part, summing to 1 (e.g. train, validation).
        seed: the shuffle seed; the same seed gives the same parts.

    Returns:
        One sorted ``int64`` index array ``(rows_k,)`` per fraction; together they cover every row exactly once.

    Raises:
        SpecError: bad fractions, an unknown method, a group split without groups, or an empty part.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or not np.all(fr > 0) or abs(fr.sum() - 1.0) > 1e-6:
        raise SpecError("", "split.fractions", f"need positive fractions that sum to 1, got {list(fractions)}")
    n = len(dataset)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fr) * n
    bounds[-1] = n
    if method == "random":
        cuts = np.rint(bounds[:-1]).astype(np.int64)
        parts = np.split(rng.permutation(n), cuts)
    elif method == "group":
        if dataset.groups is None:
            raise SpecError(
                "",
                "split.method",
                f"a group split needs groups, and {dataset.name or 'the data'} has none (set group_column)",
            )
        uniq, inverse, counts = np.unique(dataset.groups, return_inverse=True, return_counts=True)
        order = rng.permutation(len(uniq))
        sizes = counts[order]
        middle = np.cumsum(sizes) - sizes / 2
        part_of_group = np.empty(len(uniq), dtype=np.int64)
        part_of_group[order] = np.minimum(np.searchsorted(bounds, middle, side="right"), fr.size - 1)
        row_part = part_of_group[inverse.reshape(-1)]
        parts = [np.flatnonzero(row_part == k) for k in range(fr.size)]
    else:
        raise SpecError(
            "", "split.method", f"no split method '{method}'{did_you_mean(str(method), ['random', 'group'])}"
        )
    for k, part in enumerate(parts):
        if part.size == 0:
            unit = "groups" if method == "group" else "rows"
            raise SpecError(
                "", "split.fractions", f"part {k + 1} of {list(fractions)} would be empty: too few {unit} ({n} rows)"
            )
    return [np.sort(p).astype(np.int64) for p in parts]
