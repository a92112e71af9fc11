"""Training data sets: :func:`load` reads a :class:`~crmlab.runners.sources.DataSource` into a :class:`Dataset`.

A dataset holds ``uint8`` tokens (see :mod:`crmlab.runners.tokens`) and ``float32`` values, tokenised once and then
cached on disk by content (:mod:`crmlab.runners.token_cache`); :func:`split` cuts a dataset into index arrays, at
random or by whole groups (e.g. sequence clusters, so near-duplicates never straddle a split).

Every mistake in the data is a one-line :class:`~crmlab.registry.errors.SpecError` (``FILE: key.path: message`` or
``FILE:LINE: message``, see :mod:`crmlab.runners.readers`). No Keras here: this module is numpy only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from crmlab.registry.errors import SpecError, did_you_mean
from crmlab.runners.readers import parse_training_rows
from crmlab.runners.sources import DataSource, decode_text, file_format, read_bytes
from crmlab.runners.token_cache import cache_key, default_cache_dir, read_cache, write_cache
from crmlab.runners.tokens import MODEL_LENGTH

__all__ = ["Dataset", "load", "split"]


@dataclass(eq=False)
class Dataset:
    """Tokenised sequences with their measured values.

    Attributes:
        tokens: ``uint8`` ``(n, length)``, 0 = N, 1 = A, 2 = C, 3 = G, 4 = T.
        values: ``float32`` ``(n,)``.
        groups: ``(n,)`` group labels (``int64`` or ``str``) for grouped splits, or None.
        name: a short name (by default the file name without suffixes).
        content_hash: SHA-256 hex digest identifying the exact content (the token cache key for a loaded file).
    """

    tokens: np.ndarray
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

        Args:
            idx: rows to take, e.g. one of the arrays :func:`split` returns.

        Returns:
            A dataset of ``len(rows)`` rows with the same name and a content hash derived from this one's and the
            row indices.
        """
        rows = np.atleast_1d(np.arange(len(self))[idx])
        digest = hashlib.sha256(f"{self.content_hash}:subset:".encode() + rows.astype("<i8").tobytes()).hexdigest()
        groups = None if self.groups is None else self.groups[rows]
        return Dataset(self.tokens[rows], self.values[rows], groups, self.name, digest)


def load(
    source: DataSource,
    length: int = MODEL_LENGTH,
    base_dir: Path | str = ".",
    cache_dir: Path | str | None = None,
    name: str = "",
    key: str = "data",
) -> Dataset:
    """Read, check and tokenise a data source; tokens are cached on disk by content.

    Args:
        source: what to read.
        length: model input length; sequences are padded with N or truncated at the 3' end.
        base_dir: folder that relative ``source.path`` and ``source.values_file`` are resolved against.
        cache_dir: token cache folder (default :func:`~crmlab.runners.token_cache.default_cache_dir`).
        name: dataset name (default: the file name without suffixes).
        key: key path of the source in the spec, for errors (``data.train`` gives ``data.train.path: ...``).

    Returns:
        A dataset: tokens ``uint8`` ``(n, length)``, values ``float32`` ``(n,)``, groups ``(n,)`` or None, and the
        cache key as ``content_hash``.

    Raises:
        SpecError: a one-line error naming the file and the setting (``FILE: key.path: ...``) or the file line
            (``FILE:LINE: ...``).
    """
    base = Path(base_dir)
    path = base / Path(source.path).expanduser()
    label = str(path)
    fmt = file_format(source, path, label, key)
    raw = read_bytes(path, label, f"{key}.path")
    values_path: Path | None = None
    values_raw: bytes | None = None
    if source.values_file is not None:
        if fmt != "fasta":
            raise SpecError(label, f"{key}.values_file", f"values_file is for FASTA data only (this file is {fmt})")
        values_path = base / Path(source.values_file).expanduser()
        values_raw = read_bytes(values_path, str(values_path), f"{key}.values_file")
    digest = cache_key(source, length, raw, values_raw)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"{digest}.npz"
    cached = read_cache(cache_file, length)
    if cached is not None:
        tokens, values, groups = cached
    else:
        text = decode_text(raw, path, label)
        values_text = None
        if values_path is not None and values_raw is not None:
            values_text = (decode_text(values_raw, values_path, str(values_path)), str(values_path))
        rows = parse_training_rows(source, fmt, text, label, key, values_text)
        if source.too_long == "error":
            rows.check_lengths(length, label, key)
        tokens = rows.encode(length, source.unknown == "as_n", label)
        values, groups = rows.values, rows.groups
        arrays = {"tokens": tokens, "values": values}
        if groups is not None:
            arrays["groups"] = groups
        write_cache(cache_file, arrays)
    if not name:
        stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
        name = Path(stem).stem
    return Dataset(tokens, values, groups, name, digest)


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
