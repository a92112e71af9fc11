"""Parsing data files into :class:`Rows`: delimited tables (TSV, CSV, see :mod:`crmlab.runners.data._tables`) and FASTA,
before encoding.

Training data needs a value for every sequence: a value column (:func:`read_training_table`, which streams a table
in chunks of rows), a value in each FASTA header (``>id value`` or ``>id|value``) or a FASTA ``values_file`` joined
by record id (:func:`parse_training_fasta`). Sequences to score (:func:`parse_scoring_rows`) need only the
sequences; values and ids are read when the file has them. All share the header checks, the ``where`` filter, the
number parsing and the FASTA record reader, and all encode through :meth:`Rows.encode`, which names the file line
of a bad character.

Every mistake is a one-line :class:`~crmlab.registry.errors.SpecError`: ``FILE: key.path: message`` for a setting
(``data/x.tsv: data.train.sequence_column: no column 'seqq' (did you mean 'seq'?)``) and ``FILE:LINE: message``
for a row, where LINE counts every line of the file from 1, header included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from crmlab.registry import SpecError
from crmlab.runners.data._sources import DataSource, format_by_suffix
from crmlab.runners.data._tables import (
    CHUNK_ROWS,
    as_group_labels,
    check_sequences,
    group_text,
    numbers,
    read_table,
    table_chunks,
    where_rows,
)
from crmlab.runners.data._tokens import encode

__all__ = ["Rows", "parse_scoring_rows", "parse_training_fasta", "read_training_table"]

_HEADER_VALUE = re.compile(r"(.*?\S)(?:\s+|\|)([^\s|]+)")


@dataclass(eq=False)
class Rows:
    """Parsed rows of a data file, before encoding.

    Attributes:
        sequences: the sequences as written in the file (a multi-line FASTA record joined).
        values: ``float32`` ``(n,)`` measured values, or None when the file has none (sequences to score).
        groups: ``(n,)`` group labels (``int64`` or ``str``), or None.
        lines: ``int64`` ``(n,)`` 1-based file line of each row (a FASTA record's header line).
        ids: ``(n,)`` row identifiers (sequences to score), or None.
        spans: FASTA: the (line, length) of each sequence line of each record; None for tables.
    """

    sequences: list[str]
    values: np.ndarray | None
    groups: np.ndarray | None
    lines: np.ndarray
    ids: list[str] | None = None
    spans: list[list[tuple[int, int]]] | None = None

    def line_of(self, row: int, col: int) -> int:
        """The file line holding character ``col`` (0-based) of sequence ``row``."""
        if self.spans is None:
            return int(self.lines[row])
        for line, n in self.spans[row]:
            if col < n:
                return line
            col -= n
        return int(self.lines[row])

    def check_lengths(self, length: int, label: str, key: str) -> None:
        """A sequence longer than the model input ``length`` is an error naming its line and the setting to cut it."""
        lengths = np.fromiter(map(len, self.sequences), dtype=np.int64, count=len(self.sequences))
        too_long = lengths > length
        if too_long.any():
            row = int(np.argmax(too_long))
            raise SpecError(
                f"{label}:{self.lines[row]}",
                "",
                f"sequence of {lengths[row]} nt is longer than the model input ({length}); "
                f"set {key}.too_long: truncate to cut it at the 3' end",
            )

    def encode(self, length: int, unknown_as_n: bool, label: str) -> np.ndarray:
        """The sequences as ``uint8`` tokens ``(n, length)``; a bad character is ``label:LINE: ...``."""
        return encode(self.sequences, length, unknown_as_n, source=label, line_of=self.line_of)


# ---------------------------------------------------------------------------------------------------- tables
def _values_and_groups(
    df: pd.DataFrame, lines: np.ndarray, label: str, source: DataSource
) -> tuple[np.ndarray, np.ndarray | None]:
    """The value column as numbers and, when the source names one, the group column, with line-numbered errors."""
    values = numbers(df[source.value_column], lines, label, source.value_column)
    groups = None
    if source.group_column is not None:
        groups = as_group_labels(group_text(df[source.group_column], lines, label, source.group_column))
    return values, groups


def _table_rows(
    text: str, fmt: str, source: DataSource, label: str, key: str, columns: Mapping[str, str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The header-checked rows the ``where`` filter keeps and their file lines; an empty sequence is an error."""
    df, lines = read_table(text, "\t" if fmt == "tsv" else ",", label, columns, source.where, key)
    if source.where:
        df, lines = where_rows(df, lines, source.where, label, key)
    check_sequences(df, lines, label, source.sequence_column)
    return df, lines


# ----------------------------------------------------------------------------------------------------- FASTA
def _fasta_records(
    text: str, label: str
) -> tuple[list[tuple[str, int]], list[str], list[list[tuple[int, int]]], np.ndarray]:
    """FASTA records (multi-line sequences allowed): (header, line) pairs, sequences, line spans, header lines."""
    records: list[tuple[str, int]] = []  # header text, line
    chunks: list[list[str]] = []
    spans: list[list[tuple[int, int]]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            records.append((line[1:].strip(), number))
            chunks.append([])
            spans.append([])
        elif not records:
            raise SpecError(f"{label}:{number}", "", "sequence before the first '>' header")
        else:
            chunks[-1].append(line)
            spans[-1].append((number, len(line)))
    if not records:
        raise SpecError(
            label, "", "file is empty" if not text.strip() else "no FASTA records (no line starts with '>')"
        )
    sequences = ["".join(c) for c in chunks]
    for (header, number), seq in zip(records, sequences, strict=True):
        if not seq:
            raise SpecError(f"{label}:{number}", "", f"record '{header}' has no sequence")
    return records, sequences, spans, np.array([number for _, number in records], dtype=np.int64)


def _parse_fasta(text: str, source: DataSource, label: str, key: str, values: tuple[str, str] | None) -> Rows:
    """Read FASTA records (multi-line sequences allowed); values from headers or from the values table."""
    if source.values_file is None:
        for opt, what in (("where", source.where), ("group_column", source.group_column)):
            if what:
                raise SpecError(label, f"{key}.{opt}", "FASTA has no columns; set values_file to a table with them")
    records, sequences, spans, lines = _fasta_records(text, label)
    if values is None:
        numbers = np.empty(len(records), dtype=np.float64)
        for i, (header, number) in enumerate(records):
            m = _HEADER_VALUE.fullmatch(header)
            if m is None:
                raise SpecError(
                    f"{label}:{number}",
                    "",
                    "FASTA header has no value (write '>id value' or '>id|value', or set values_file)",
                )
            try:
                numbers[i] = float(m.group(2))
            except ValueError:
                numbers[i] = np.nan
            if not np.isfinite(numbers[i]):
                raise SpecError(
                    f"{label}:{number}", "", f"empty or non-numeric value {m.group(2)!r} in the FASTA header"
                )
        return Rows(sequences, numbers.astype(np.float32), None, lines, spans=spans)
    return _join_values(sequences, records, lines, spans, source, label, key, values)


def _join_values(
    sequences: list[str],
    records: list[tuple[str, int]],
    lines: np.ndarray,
    spans: list[list[tuple[int, int]]],
    source: DataSource,
    label: str,
    key: str,
    values: tuple[str, str],
) -> Rows:
    """Attach values (and groups) from the FASTA ``values_file`` by record id; rows ``where`` drops are dropped."""
    vtext, vlabel = values
    sep = "," if format_by_suffix(Path(vlabel)) == "csv" else "\t"
    columns = {f"{key}.values_file": "id", f"{key}.value_column": source.value_column}
    if source.group_column is not None:
        columns[f"{key}.group_column"] = source.group_column
    df, vlines = read_table(vtext, sep, vlabel, columns, source.where, key)
    known = set(df["id"].tolist())
    if source.where:
        df, vlines = where_rows(df, vlines, source.where, vlabel, key)
    ids = df["id"].tolist()
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise SpecError(f"{vlabel}:{vlines[i]}", "", f"duplicate id '{ids[i]}'")
    vals, groups = _values_and_groups(df, vlines, vlabel, source)
    row_of = {v: i for i, v in enumerate(ids)}
    take: list[int] = []
    rows: list[int] = []
    for r, (header, number) in enumerate(records):
        rid = header.split()[0] if header else ""
        if rid not in row_of and "|" in rid:
            rid = rid.split("|")[0]
        if rid in row_of:
            take.append(r)
            rows.append(row_of[rid])
        elif rid not in known:
            raise SpecError(f"{label}:{number}", "", f"no value for id '{rid}' in {vlabel}")
    if not take:
        raise SpecError(label, f"{key}.where", "no FASTA records left after where")
    sel = np.array(rows, dtype=np.int64)
    return Rows(
        [sequences[r] for r in take],
        vals[sel],
        None if groups is None else groups[sel],
        lines[take],
        spans=[spans[r] for r in take],
    )


# ------------------------------------------------------------------------------------------------ entry points
def parse_training_fasta(source: DataSource, text: str, label: str, key: str, values: tuple[str, str] | None) -> Rows:
    """Parse a decoded training FASTA file into rows, each with its measured value (and group, from a values file).

    Args:
        source: the data source.
        text: the decoded file.
        label: the file name for errors.
        key: key prefix for errors (``data.train``).
        values: the ``values_file`` as (decoded text, file name), or None (values in the headers).

    Returns:
        The rows with ``values`` ``(n,)``, ``groups`` ``(n,)`` or None, and their file lines; ``ids`` is None.

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``.
    """
    return _parse_fasta(text, source, label, key, values)


def read_training_table(
    source: DataSource, fmt: str, handle: TextIO, label: str, key: str, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Rows]:
    """Read a training table (tsv or csv) chunk by chunk into rows, each with its measured value (and group).

    Only one chunk is held at a time. The chunks' group labels stay as written (``str``): join them and pass them
    to :func:`~crmlab.runners.data._tables.as_group_labels` to get the labels of the whole table.

    Args:
        source: the data source.
        fmt: ``tsv`` or ``csv``.
        handle: the decoded text (:func:`~crmlab.runners.data._sources.open_text`).
        label: the file name for errors.
        key: key prefix for errors (``data.train``).
        chunk_rows: file lines per chunk (see :func:`~crmlab.runners.data._tables.table_chunks`).

    Yields:
        Rows of one chunk with ``values`` ``(rows,)``, ``groups`` ``str`` ``(rows,)`` or None, and their file lines.

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``.
    """
    sep = "\t" if fmt == "tsv" else ","
    columns = {f"{key}.sequence_column": source.sequence_column, f"{key}.value_column": source.value_column}
    if source.group_column is not None:
        columns[f"{key}.group_column"] = source.group_column
    for df, lines in table_chunks(handle, sep, label, columns, source.where, key, chunk_rows):
        check_sequences(df, lines, label, source.sequence_column)
        values = numbers(df[source.value_column], lines, label, source.value_column)
        groups = None
        if source.group_column is not None:
            groups = group_text(df[source.group_column], lines, label, source.group_column)
        yield Rows(df[source.sequence_column].tolist(), values, groups, lines)


def parse_scoring_rows(source: DataSource, fmt: str, text: str, label: str, key: str, id_column: str) -> Rows:
    """Parse a decoded file of sequences to score; values and ids are read when the file has them.

    A table needs only ``source.sequence_column``; its ``value_column`` is read when present, ``id_column`` names
    the rows when present (else the 1-based row number), ``where`` filters rows. A FASTA record's id is its header
    up to the value (``>id value``, ``>id|value``: every header must carry one for values to be read) or its first
    word. ``group_column`` is not read.

    Args:
        source: the data source (``values_file`` is not supported here).
        fmt: ``tsv``, ``csv`` or ``fasta``.
        text: the decoded file.
        label: the file name for errors.
        key: key prefix for errors.
        id_column: the table column holding row ids, if present.

    Returns:
        The rows with ``ids`` ``(n,)``, ``values`` ``(n,)`` or None, and their file lines; ``groups`` is None.

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``.
    """
    values: np.ndarray | None = None
    if fmt == "fasta":
        if source.values_file is not None:
            raise SpecError(label, f"{key}.values_file", "not read when scoring sequences; give a table instead")
        if source.where:
            raise SpecError(label, f"{key}.where", "FASTA has no columns to filter on")
        records, sequences, spans, lines = _fasta_records(text, label)
        matches = [_HEADER_VALUE.fullmatch(header) for header, _ in records]
        parsed = pd.to_numeric(pd.Series([m.group(2) if m else "" for m in matches]), errors="coerce").to_numpy()
        if np.isfinite(parsed).all():
            values = parsed.astype(np.float32)
            ids = [m.group(1) for m in matches if m is not None]
        else:
            ids = [header.split()[0] if header else str(i + 1) for i, (header, _) in enumerate(records)]
        return Rows(sequences, values, None, lines, ids, spans)
    df, lines = _table_rows(text, fmt, source, label, key, {f"{key}.sequence_column": source.sequence_column})
    if source.value_column in df.columns:
        values = numbers(df[source.value_column], lines, label, source.value_column)
    ids = df[id_column].tolist() if id_column in df.columns else [str(i + 1) for i in range(len(df))]
    return Rows(df[source.sequence_column].tolist(), values, None, lines, ids)
