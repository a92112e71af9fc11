"""Delimited tables (TSV, CSV): reading a header-checked table whole or in chunks, the ``where`` filter, and parsing
its value and group columns.

A table is read by pandas' C parser with every field a string. A file is read whole (:func:`read_table`) or as a
stream of chunks of rows (:func:`table_chunks`), which never holds more than one chunk: both check the header,
drop blank lines and number each row by its file line, and a file of up to one chunk gives exactly the same rows
and errors either way. Every mistake is a one-line :class:`~crmlab.registry.errors.SpecError`:
``FILE: key.path: message`` for a setting and ``FILE:LINE: message`` for a row, where LINE counts every line of the
file from 1, header included.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import numpy as np
import pandas as pd

from crmlab.registry import Issue, SpecError, SpecErrors, did_you_mean

__all__ = [
    "CHUNK_ROWS",
    "as_group_labels",
    "check_sequences",
    "group_text",
    "numbers",
    "read_table",
    "table_chunks",
    "where_mask",
    "where_rows",
]

CHUNK_ROWS = 1 << 19
"""Rows per chunk that :func:`table_chunks` reads by default (about 60 MB of 110-nt sequences)."""


def _frames(handle: TextIO, sep: str, label: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """The file as string frames, the header as the first row: one frame, or chunks of ``chunk_rows`` rows."""
    try:
        read = pd.read_csv(
            handle, sep=sep, header=None, index_col=False, dtype=str, keep_default_na=False, skip_blank_lines=False,
            quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL, engine="c", chunksize=chunk_rows,
        )  # fmt: skip
        if chunk_rows is None:
            yield read
        else:
            with read:
                yield from read
    except pd.errors.EmptyDataError:
        raise SpecError(label, "", "file is empty") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            expected, line, saw = m.groups()
            raise SpecError(f"{label}:{line}", "", f"{saw} fields, but the header has {expected}") from None
        raise SpecError(label, "", f"cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {msg}") from None


def _missing(label: str, key_path: str, column: str, header: list[str]) -> Issue:
    return Issue(label, key_path, f"no column '{column}'{did_you_mean(column, header)}")


def _header(
    first: pd.DataFrame, label: str, columns: Mapping[str, str], where: Mapping[str, Any], key: str
) -> list[str]:
    """The column names (the first row); a duplicate name, or a column the caller or ``where`` needs, is an error."""
    header = [str(h) for h in first.iloc[0]]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise SpecError(f"{label}:1", "", f"duplicate column '{h}' in the header")
        seen.add(h)
    issues = [_missing(label, kp, col, header) for kp, col in columns.items() if col not in seen]
    issues += [_missing(label, f"{key}.where.{col}", col, header) for col in where if col not in seen]
    if issues:
        raise SpecError(issues[0].file, issues[0].path, issues[0].message) if len(issues) == 1 else SpecErrors(issues)
    return header


def _data_rows(df: pd.DataFrame, header: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Name the columns, drop blank lines, and number the rows by file line ``(rows,)`` (header row excluded)."""
    df.columns = header
    df = df[~(df == "").all(axis=1).to_numpy()]
    return df, df.index.to_numpy(dtype=np.int64) + 1


def read_table(
    text: str, sep: str, label: str, columns: Mapping[str, str], where: Mapping[str, Any], key: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a whole delimited table and check its header.

    Args:
        text: the whole file.
        sep: field separator.
        label: file name for errors.
        columns: key path (for errors) -> column name the caller needs.
        where: the ``where`` filter, whose columns must exist.
        key: key prefix of the data source (``data.train``).

    Returns:
        The rows (string columns, blank lines dropped) and their 1-based file line numbers ``(rows,)``.
    """
    if not text.strip():
        raise SpecError(label, "", "file is empty")
    (df,) = _frames(io.StringIO(text), sep, label, None)
    header = _header(df, label, columns, where, key)
    df, lines = _data_rows(df.iloc[1:], header)
    if df.empty:
        raise SpecError(label, "", "no data rows, only a header")
    return df, lines


def table_chunks(
    handle: TextIO,
    sep: str,
    label: str,
    columns: Mapping[str, str],
    where: Mapping[str, Any],
    key: str,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Read a delimited table chunk by chunk: the header checked, blank lines dropped, ``where`` applied.

    A mistake in a row is reported when its chunk is read, so of several mistakes in different chunks the first
    chunk's is reported; a file of one chunk gives exactly the errors of :func:`read_table` then :func:`where_rows`.

    Args:
        handle: the text, at its start and seekable (:func:`~crmlab.runners.data._sources.open_text`).
        sep: field separator.
        label: file name for errors.
        columns: key path (for errors) -> column name the caller needs.
        where: keep only the rows where these columns have these values (see :func:`where_mask`).
        key: key prefix of the data source (``data.train``).
        chunk_rows: file lines per chunk.

    Yields:
        Non-empty chunks of the rows ``where`` keeps (string columns) and their 1-based file lines ``(rows,)``.

    Raises:
        SpecError: an empty file, a bad header, a ragged row, no data rows or no rows left after ``where``.
    """
    while block := handle.read(1 << 16):
        if block.strip():
            break
    else:
        raise SpecError(label, "", "file is empty")
    handle.seek(0)
    header: list[str] | None = None
    rows = 0
    kept = 0
    for df in _frames(handle, sep, label, chunk_rows):
        if header is None:
            header = _header(df, label, columns, where, key)
            df = df.iloc[1:]
        chunk, lines = _data_rows(df, header)
        rows += len(chunk)
        if where:
            keep = where_mask(chunk, where)
            chunk, lines = chunk[keep], lines[keep]
        kept += len(chunk)
        if len(chunk):
            yield chunk, lines
    if rows == 0:
        raise SpecError(label, "", "no data rows, only a header")
    if kept == 0:
        raise _nothing_left(where, label, key, rows)


def where_mask(df: pd.DataFrame, where: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask ``(rows,)`` of the rows where every ``where`` column equals its value (or one of its list)."""
    keep = np.ones(len(df), dtype=bool)
    for col, want in where.items():
        column = df[col]
        wanted = want if isinstance(want, list) else [want]
        if all(isinstance(w, str) for w in wanted):
            keep &= column.isin(wanted).to_numpy()
        else:
            keep &= pd.to_numeric(column, errors="coerce").isin(wanted).to_numpy()
    return keep


def _nothing_left(where: Mapping[str, Any], label: str, key: str, rows: int) -> SpecError:
    shown = ", ".join(f"{c} == {v!r}" for c, v in where.items())
    return SpecError(label, f"{key}.where", f"no rows left where {shown} (of {rows} rows)")


def where_rows(
    df: pd.DataFrame, lines: np.ndarray, where: Mapping[str, Any], label: str, key: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows and lines :func:`where_mask` keeps; none left is an error."""
    keep = where_mask(df, where)
    if not keep.any():
        raise _nothing_left(where, label, key, len(df))
    return df[keep], lines[keep]


def check_sequences(df: pd.DataFrame, lines: np.ndarray, label: str, column: str) -> None:
    """An empty sequence in ``column`` is an error naming its line."""
    empty = (df[column] == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        raise SpecError(f"{label}:{lines[i]}", "", f"empty sequence in column '{column}'")


def numbers(column: pd.Series, lines: np.ndarray, label: str, name: str) -> np.ndarray:
    """Parse a value column as ``float32`` ``(rows,)``; an empty, non-numeric, infinite or out-of-``float32``-range
    value is an error naming its line."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "non-finite" if np.isinf(values[i]) else "empty or non-numeric"
        raise SpecError(f"{label}:{lines[i]}", "", f"{what} value in column '{name}'")
    huge = np.abs(values) > np.finfo(np.float32).max
    if huge.any():
        i = int(np.argmax(huge))
        raise SpecError(f"{label}:{lines[i]}", "", f"value {values[i]:g} in column '{name}' is beyond float32 range")
    return values.astype(np.float32)


def group_text(column: pd.Series, lines: np.ndarray, label: str, name: str) -> np.ndarray:
    """Group labels as written, ``str`` ``(rows,)``; an empty label is an error naming its line."""
    empty = (column == "").to_numpy()
    if empty.any():
        raise SpecError(f"{label}:{lines[int(np.argmax(empty))]}", "", f"empty value in column '{name}'")
    return np.asarray(column.tolist(), dtype=str)


def as_group_labels(labels: np.ndarray) -> np.ndarray:
    """Group labels ``(rows,)`` from :func:`group_text`: ``int64`` when every label is an integer, else unchanged."""
    parsed = pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    if np.isfinite(parsed).all() and (parsed == np.round(parsed)).all() and np.abs(parsed).max() < 2**53:
        return parsed.astype(np.int64)
    return labels
