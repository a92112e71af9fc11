"""Parsing decoded data files into :class:`Rows`: delimited tables (TSV, CSV) and FASTA, before encoding.

Training data (:func:`parse_training_rows`) needs a value for every sequence: a value column, a value in each FASTA
header (``>id value`` or ``>id|value``) or a FASTA ``values_file`` joined by record id. Sequences to score
(:func:`parse_scoring_rows`) need only the sequences; values and ids are read when the file has them. Both share
the header checks, the ``where`` filter, the number parsing and the FASTA record reader, and both encode through
:meth:`Rows.encode`, which names the file line of a bad character.

Every mistake is a one-line :class:`~crmlab.registry.errors.SpecError`: ``FILE: key.path: message`` for a setting
(``data/x.tsv: data.train.sequence_column: no column 'seqq' (did you mean 'seq'?)``) and ``FILE:LINE: message``
for a row, where LINE counts every line of the file from 1, header included.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean
from crmlab.runners.sources import DataSource, format_by_suffix
from crmlab.runners.tokens import encode

__all__ = ["Rows", "parse_scoring_rows", "parse_training_rows"]

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
def _missing(label: str, key_path: str, column: str, header: Sequence[str]) -> Issue:
    return Issue(label, key_path, f"no column '{column}'{did_you_mean(column, header)}")


def _read_table(
    text: str, sep: str, label: str, columns: Mapping[str, str], where: Mapping[str, Any], key: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a delimited table and check its header.

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
    try:
        df = pd.read_csv(
            io.StringIO(text), sep=sep, header=None, index_col=False, dtype=str, keep_default_na=False,
            skip_blank_lines=False, quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL, engine="c",
        )  # fmt: skip
    except pd.errors.ParserError as e:
        msg = str(e).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            expected, line, saw = m.groups()
            raise SpecError(f"{label}:{line}", "", f"{saw} fields, but the header has {expected}") from None
        raise SpecError(label, "", f"cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {msg}") from None
    header = [str(h) for h in df.iloc[0]]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise SpecError(f"{label}:1", "", f"duplicate column '{h}' in the header")
        seen.add(h)
    issues = [_missing(label, kp, col, header) for kp, col in columns.items() if col not in seen]
    issues += [_missing(label, f"{key}.where.{col}", col, header) for col in where if col not in seen]
    if issues:
        raise SpecError(issues[0].file, issues[0].path, issues[0].message) if len(issues) == 1 else SpecErrors(issues)
    df.columns = header
    df = df.iloc[1:]
    df = df[~(df == "").all(axis=1).to_numpy()]  # blank lines
    if df.empty:
        raise SpecError(label, "", "no data rows, only a header")
    return df, df.index.to_numpy(dtype=np.int64) + 1


def _where(df: pd.DataFrame, where: Mapping[str, Any], label: str, key: str) -> np.ndarray:
    """Boolean mask ``(rows,)`` of the rows where every ``where`` column equals its value; none left is an error."""
    keep = np.ones(len(df), dtype=bool)
    for col, want in where.items():
        column = df[col]
        wanted = want if isinstance(want, list) else [want]
        if all(isinstance(w, str) for w in wanted):
            keep &= column.isin(wanted).to_numpy()
        else:
            keep &= pd.to_numeric(column, errors="coerce").isin(wanted).to_numpy()
    if not keep.any():
        shown = ", ".join(f"{c} == {v!r}" for c, v in where.items())
        raise SpecError(label, f"{key}.where", f"no rows left where {shown} (of {len(df)} rows)")
    return keep


def _numbers(column: pd.Series, lines: np.ndarray, label: str, name: str) -> np.ndarray:
    """Parse a value column as ``float32`` ``(rows,)``; an empty, non-numeric, infinite or out-of-``float32``-range
    value is an error."""
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


def _group_labels(column: pd.Series, lines: np.ndarray, label: str, name: str) -> np.ndarray:
    """Group labels ``(rows,)``: ``int64`` when every label is an integer, else ``str``."""
    empty = (column == "").to_numpy()
    if empty.any():
        raise SpecError(f"{label}:{lines[int(np.argmax(empty))]}", "", f"empty value in column '{name}'")
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all() and np.abs(numbers).max() < 2**53:
        return numbers.astype(np.int64)
    return np.asarray(column.tolist(), dtype=str)


def _values_and_groups(
    df: pd.DataFrame, lines: np.ndarray, label: str, source: DataSource
) -> tuple[np.ndarray, np.ndarray | None]:
    """The value column as numbers and, when the source names one, the group column, with line-numbered errors."""
    values = _numbers(df[source.value_column], lines, label, source.value_column)
    groups = None
    if source.group_column is not None:
        groups = _group_labels(df[source.group_column], lines, label, source.group_column)
    return values, groups


def _table_rows(
    text: str, fmt: str, source: DataSource, label: str, key: str, columns: Mapping[str, str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The header-checked rows the ``where`` filter keeps and their file lines; an empty sequence is an error."""
    df, lines = _read_table(text, "\t" if fmt == "tsv" else ",", label, columns, source.where, key)
    if source.where:
        keep = _where(df, source.where, label, key)
        df, lines = df[keep], lines[keep]
    empty = (df[source.sequence_column] == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        raise SpecError(f"{label}:{lines[i]}", "", f"empty sequence in column '{source.sequence_column}'")
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
    df, vlines = _read_table(vtext, sep, vlabel, columns, source.where, key)
    known = set(df["id"].tolist())
    if source.where:
        keep = _where(df, source.where, vlabel, key)
        df, vlines = df[keep], vlines[keep]
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
def parse_training_rows(
    source: DataSource, fmt: str, text: str, label: str, key: str, values: tuple[str, str] | None = None
) -> Rows:
    """Parse a decoded training file into rows, each with its measured value (and group, if the source names one).

    Args:
        source: the data source.
        fmt: ``tsv``, ``csv`` or ``fasta``.
        text: the decoded file.
        label: the file name for errors.
        key: key prefix for errors (``data.train``).
        values: FASTA ``values_file`` as (decoded text, file name), or None.

    Returns:
        The rows with ``values`` ``(n,)``, ``groups`` ``(n,)`` or None, and their file lines; ``ids`` is None.

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``.
    """
    if fmt == "fasta":
        return _parse_fasta(text, source, label, key, values)
    columns = {f"{key}.sequence_column": source.sequence_column, f"{key}.value_column": source.value_column}
    if source.group_column is not None:
        columns[f"{key}.group_column"] = source.group_column
    df, lines = _table_rows(text, fmt, source, label, key, columns)
    vals, groups = _values_and_groups(df, lines, label, source)
    return Rows(df[source.sequence_column].tolist(), vals, groups, lines)


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
        numbers = pd.to_numeric(pd.Series([m.group(2) if m else "" for m in matches]), errors="coerce").to_numpy()
        if np.isfinite(numbers).all():
            values = numbers.astype(np.float32)
            ids = [m.group(1) for m in matches if m is not None]
        else:
            ids = [header.split()[0] if header else str(i + 1) for i, (header, _) in enumerate(records)]
        return Rows(sequences, values, None, lines, ids, spans)
    df, lines = _table_rows(text, fmt, source, label, key, {f"{key}.sequence_column": source.sequence_column})
    if source.value_column in df.columns:
        values = _numbers(df[source.value_column], lines, label, source.value_column)
    ids = df[id_column].tolist() if id_column in df.columns else [str(i + 1) for i in range(len(df))]
    return Rows(df[source.sequence_column].tolist(), values, None, lines, ids)
