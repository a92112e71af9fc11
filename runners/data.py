"""Training data: sequence tables and FASTA files -> ``uint8`` tokens and ``float32`` values, cached on disk.

Tokens: 0 = N, 1 = A, 2 = C, 3 = G, 4 = T (the CRMnet order); sequences are padded with N at the 3' end to the
model length, and a longer one is an error unless its source says ``too_long: truncate``. A :class:`DataSource`
says where the data is and how to read it, :func:`load` turns it into a :class:`Dataset` (tokenised once, then
cached by content hash), and :func:`split` cuts a dataset into index arrays, at random or by whole groups (e.g.
sequence clusters, so near-duplicates never straddle a split).

Every mistake in the data is a one-line :class:`~crmlab.registry.errors.SpecError`: ``FILE: key.path: message`` for a
setting (``data/x.tsv: data.train.sequence_column: no column 'seqq' (did you mean 'seq'?)``) and ``FILE:LINE:
message`` for a row (``data/x.tsv:1875: sequence has 'X' at position 31; allowed: A, C, G, T, N``), where LINE
counts every line of the file from 1, header included.

No Keras here: this module is numpy and pandas only.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic

from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean

ALPHABET = "NACGT"
MODEL_LENGTH = 112
FORMAT_VERSION = 1
"""Bump when the tokenisation or the cache layout changes: every cached token file is then re-made."""

_TOKEN = np.zeros(256, dtype=np.uint8)
_VALID = np.zeros(256, dtype=bool)
for _i, _c in enumerate(ALPHABET):
    for _b in (_c, _c.lower()):
        _TOKEN[ord(_b)] = _i
        _VALID[ord(_b)] = True
_BAD = np.uint8(255)
# Like _TOKEN, but other characters become 255; byte 0 is the padding of numpy's fixed-width bytes (-> N).
_STRICT = np.where(_VALID, _TOKEN, _BAD).astype(np.uint8)
_STRICT[0] = 0


def _pairs(table: np.ndarray) -> np.ndarray:
    """A 65,536-entry table mapping two bytes at once (read as one native ``uint16``) to two tokens."""
    pair_bytes = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(table[pair_bytes]).view(np.uint16).reshape(-1)


_TOKEN2, _STRICT2 = _pairs(_TOKEN), _pairs(_STRICT)

_FORMATS = {".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".csv": "csv"}
_FORMATS.update(dict.fromkeys((".fa", ".fasta", ".fna", ".fas"), "fasta"))
_OTHER_COMPRESSION = {".bz2": "bzip2", ".xz": "xz", ".zip": "zip", ".zst": "zstd", ".lz4": "lz4", ".7z": "7z"}
_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"PK\x03\x04": "zip", b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf": "7z"}
_GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------------------------------------------- encoding
class _BadCharacter(Exception):
    """Internal: sequence ``row`` has a character outside the alphabet at 0-based ``col``."""

    def __init__(self, row: int, col: int, char: str) -> None:
        super().__init__(row, col, char)
        self.row, self.col = row, col
        self.message = f"sequence has {char!r} at position {col + 1}; allowed: A, C, G, T, N"


def _lookup(table: np.ndarray, pairs: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``table[raw]`` for bytes ``raw`` ``(n, length)``, two bytes per lookup where the size allows (twice as fast)."""
    if raw.size % 2:
        return table[raw]
    return np.take(pairs, raw.reshape(-1).view(np.uint16)).view(np.uint8).reshape(raw.shape)


def _has_nul(sequences: Sequence[str]) -> bool:
    try:
        return any("\x00" in s for s in sequences)
    except TypeError:  # not all str: let the exact path decide
        return True


def _tokens(sequences: Sequence[str], length: int, unknown_as_n: bool) -> np.ndarray:
    """Encode like :func:`encode`, raising :class:`_BadCharacter` for the first bad character (row-major)."""
    n = len(sequences)
    if n == 0:
        return np.zeros((0, length), dtype=np.uint8)
    # Fast path: numpy converts the strings to fixed-width ASCII bytes in C (truncating, NUL-padding), and one
    # table lookup turns bytes into tokens. Anything unusual (non-ASCII, bad characters) takes the exact path.
    try:
        fixed = np.asarray(sequences, dtype=f"S{length}") if length > 0 else None
    except (UnicodeEncodeError, TypeError, ValueError):
        fixed = None
    if fixed is not None and fixed.shape == (n,):
        raw = fixed.view(np.uint8).reshape(n, length)
        if unknown_as_n:
            return _lookup(_TOKEN, _TOKEN2, raw)
        tokens = _lookup(_STRICT, _STRICT2, raw)
        if tokens.max() < _BAD and not _has_nul(sequences):
            return tokens
    # Exact path: per-sequence bytes, characters other than ASCII replaced by '?' (invalid, so they are reported).
    fixed_bytes = b"".join(s.encode("ascii", "replace")[:length].ljust(length, b"N") for s in sequences)
    raw = np.frombuffer(fixed_bytes, dtype=np.uint8).reshape(n, length)
    if not unknown_as_n:
        bad = ~_VALID[raw]
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise _BadCharacter(row, col, sequences[row][col])
    return _TOKEN[raw]


def encode(
    sequences: Sequence[str], length: int = MODEL_LENGTH, unknown_as_n: bool = False, source: str = "<sequences>"
) -> np.ndarray:
    """Encode sequences as tokens, padded with N or truncated at the 3' end to ``length``.

    Args:
        sequences: DNA strings over A, C, G, T, N (any case).
        length: model input length (CRMnet: 112).
        unknown_as_n: map any other character to N instead of failing.
        source: file name used in error messages.

    Returns:
        ``uint8`` array of shape ``(len(sequences), length)``.

    Raises:
        SpecError: a character other than A, C, G, T, N (``source:ROW: ...``), unless ``unknown_as_n``.
    """
    try:
        return _tokens(sequences, length, unknown_as_n)
    except _BadCharacter as bad:
        raise SpecError(f"{source}:{bad.row + 1}", "", bad.message) from None


def decode(tokens: np.ndarray) -> list[str]:
    """Tokens ``(n, length)`` -> strings (padding N kept)."""
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)[np.asarray(tokens, dtype=np.int64)]
    return [row.tobytes().decode() for row in letters]


# -------------------------------------------------------------------------------------------------- data model
class DataSource(pydantic.BaseModel):
    """Where a data set is and how to read it (the ``data.<role>`` entry of a run spec).

    Attributes:
        path: the file; a relative path is resolved against ``load(base_dir=...)``.
        format: ``tsv``, ``csv`` or ``fasta``; ``auto`` goes by the suffix (``.tsv``/``.tab``/``.txt``, ``.csv``,
            ``.fa``/``.fasta``/``.fna``/``.fas``), a ``.gz`` is read transparently (``x.tsv.gz`` is tsv).
        sequence_column: the column of DNA sequences (tables).
        value_column: the column of measured values (tables, and the FASTA ``values_file``).
        where: keep only the rows whose column equals the value, or one of a list of values, e.g.
            ``{in_github_subset: 1}`` or ``{subset: [random, yeast]}`` (all columns must hold).
        unknown: ``error`` on a character other than A, C, G, T, N; ``as_n`` reads it as N.
        values_file: FASTA only: a table (tsv/csv) with an ``id`` column and the value column; without it each
            FASTA header carries its value, ``>id value`` or ``>id|value``.
        group_column: a column carried along as :attr:`Dataset.groups`, for grouped splits (e.g. ``cluster``).
        too_long: a sequence longer than the model input is an ``error``, or is cut at the 3' end (``truncate``,
            as the CRMnet reference code does).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    path: str
    format: Literal["auto", "tsv", "csv", "fasta"] = "auto"
    sequence_column: str = "seq"
    value_column: str = "expression"
    where: dict[str, int | float | str | list[int | float | str]] = {}
    unknown: Literal["error", "as_n"] = "error"
    values_file: str | None = None
    group_column: str | None = None
    too_long: Literal["error", "truncate"] = "error"


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


# ------------------------------------------------------------------------------------------------- file reading
@dataclass
class _Table:
    """Internal: parsed rows before encoding; ``lines[i]`` is the 1-based file line of row ``i``."""

    sequences: list[str]
    values: np.ndarray
    groups: np.ndarray | None
    lines: np.ndarray
    spans: list[list[tuple[int, int]]] | None = field(default=None)  # FASTA: (line, length) of each sequence line

    def line_of(self, row: int, col: int) -> int:
        """The file line holding character ``col`` (0-based) of sequence ``row``."""
        if self.spans is None:
            return int(self.lines[row])
        for line, n in self.spans[row]:
            if col < n:
                return line
            col -= n
        return int(self.lines[row])


def _format_of(source: DataSource, path: Path, label: str, key: str) -> str:
    """The format of ``path``: the explicit ``source.format`` or one read off the suffix."""
    name = path.name.lower()
    suffix = Path(name[:-3] if name.endswith(".gz") else name).suffix
    if suffix in _OTHER_COMPRESSION:
        raise SpecError(
            label, f"{key}.path", f"{_OTHER_COMPRESSION[suffix]} compression is not supported; use gzip (.gz)"
        )
    if source.format != "auto":
        return source.format
    if suffix not in _FORMATS:
        raise SpecError(label, f"{key}.format", "cannot tell the format from the name; set format: tsv, csv or fasta")
    return _FORMATS[suffix]


def _read_bytes(path: Path, label: str, key_path: str) -> bytes:
    """The file's bytes as stored (compressed or not)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(label, key_path, "no such file") from None
    except IsADirectoryError:
        raise SpecError(label, key_path, "is a directory, not a file") from None
    except OSError as e:
        raise SpecError(label, key_path, f"cannot read: {e.strerror or e}") from None


def _text(raw: bytes, path: Path, label: str) -> str:
    """Decompress (gzip, by content) and decode UTF-8; a ``.gz`` that isn't gzip or binary data is an error."""
    data = raw
    if raw[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SpecError(label, "", f"corrupt gzip data ({e})") from None
    else:
        kind = next((k for magic, k in _MAGIC.items() if raw.startswith(magic)), None)
        if kind is not None:
            raise SpecError(label, "", f"is {kind}-compressed; only gzip (.gz) and plain text are read")
        if path.name.lower().endswith(".gz"):
            raise SpecError(label, "", "not a gzip file, though the name ends in .gz")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SpecError(f"{label}:{line}", "", "not UTF-8 text (is this a binary or compressed file?)") from None
    return text.removeprefix("\ufeff")


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


def _parse_table(text: str, sep: str, source: DataSource, label: str, key: str) -> _Table:
    columns = {f"{key}.sequence_column": source.sequence_column, f"{key}.value_column": source.value_column}
    if source.group_column is not None:
        columns[f"{key}.group_column"] = source.group_column
    df, lines = _read_table(text, sep, label, columns, source.where, key)
    if source.where:
        keep = _where(df, source.where, label, key)
        df, lines = df[keep], lines[keep]
    seqs = df[source.sequence_column]
    empty = (seqs == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        raise SpecError(f"{label}:{lines[i]}", "", f"empty sequence in column '{source.sequence_column}'")
    values, groups = _values_and_groups(df, lines, label, source)
    return _Table(seqs.tolist(), values, groups, lines)


_HEADER_VALUE = re.compile(r"(.*?\S)(?:\s+|\|)([^\s|]+)")


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


def _parse_fasta(text: str, source: DataSource, label: str, key: str, values: tuple[str, str] | None) -> _Table:
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
        return _Table(sequences, numbers.astype(np.float32), None, lines, spans)
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
) -> _Table:
    """Attach values (and groups) from the FASTA ``values_file`` by record id; rows ``where`` drops are dropped."""
    vtext, vlabel = values
    vpath = Path(vlabel)
    vformat = _FORMATS.get(Path(vpath.name[:-3] if vpath.name.lower().endswith(".gz") else vpath.name).suffix.lower())
    sep = "," if vformat == "csv" else "\t"
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
    return _Table(
        [sequences[r] for r in take],
        vals[sel],
        None if groups is None else groups[sel],
        lines[take],
        [spans[r] for r in take],
    )


def _parse(
    source: DataSource, fmt: str, text: str, label: str, key: str, values: tuple[str, str] | None = None
) -> _Table:
    """Parse a decoded file into rows (the expensive step the token cache skips).

    Args:
        source: the data source.
        fmt: ``tsv``, ``csv`` or ``fasta``.
        text: the decoded file.
        label: the file name for errors.
        key: key prefix for errors (``data.train``).
        values: FASTA ``values_file`` as (decoded text, file name), or None.

    Returns:
        The rows, with their file lines.
    """
    if fmt == "fasta":
        return _parse_fasta(text, source, label, key, values)
    return _parse_table(text, "\t" if fmt == "tsv" else ",", source, label, key)


def _check_lengths(table: _Table, length: int, label: str, key: str) -> None:
    """A sequence longer than the model input ``length`` is an error naming its line and the setting to cut it."""
    lengths = np.fromiter(map(len, table.sequences), dtype=np.int64, count=len(table.sequences))
    too_long = lengths > length
    if too_long.any():
        row = int(np.argmax(too_long))
        raise SpecError(
            f"{label}:{table.lines[row]}",
            "",
            f"sequence of {lengths[row]} nt is longer than the model input ({length}); "
            f"set {key}.too_long: truncate to cut it at the 3' end",
        )


# ------------------------------------------------------------------------------------------------------ caching
def default_cache_dir() -> Path:
    """The token cache: ``$CRMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/crmlab/tokens`` (``~/.cache/...``)."""
    env = os.environ.get("CRMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "crmlab" / "tokens"


def _cache_key(source: DataSource, length: int, raw: bytes, values_raw: bytes | None) -> str:
    """SHA-256 of the format version, the source's fields but its file names, the length and the file bytes (and
    values file): the same data read the same way has the same key wherever the files are (an exported study)."""
    h = hashlib.sha256(f"crmlab-tokens-v{FORMAT_VERSION}\n".encode())
    # ``too_long: truncate`` (the behaviour before the setting existed) keeps the keys of earlier caches and runs
    names = {"path", "values_file"}
    fields = source.model_dump(mode="json", exclude=names | {"too_long"} if source.too_long == "truncate" else names)
    h.update(json.dumps({"source": fields, "length": length}, sort_keys=True).encode())
    for blob in (raw, values_raw):
        if blob is not None:
            h.update(b"\n" + len(blob).to_bytes(8, "little"))
            h.update(blob)
    return h.hexdigest()


def _read_cache(path: Path, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Cached (tokens, values, groups), or None if absent or unreadable (then it is simply re-made)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            tokens, values = z["tokens"], z["values"]
            groups = z["groups"] if "groups" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = tokens.shape[0] if tokens.ndim == 2 else -1
    if tokens.dtype != np.uint8 or tokens.shape != (n, length) or values.shape != (n,) or values.dtype != np.float32:
        return None
    return tokens, values, groups


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a temporary file in the same folder, then ``os.replace``); a failure only warns."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"crmlab: cannot write the token cache {path}: {e}", RuntimeWarning, stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------- loading
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
        cache_dir: token cache folder (default :func:`default_cache_dir`).
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
    fmt = _format_of(source, path, label, key)
    raw = _read_bytes(path, label, f"{key}.path")
    values_path: Path | None = None
    values_raw: bytes | None = None
    if source.values_file is not None:
        if fmt != "fasta":
            raise SpecError(label, f"{key}.values_file", f"values_file is for FASTA data only (this file is {fmt})")
        values_path = base / Path(source.values_file).expanduser()
        values_raw = _read_bytes(values_path, str(values_path), f"{key}.values_file")
    digest = _cache_key(source, length, raw, values_raw)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"{digest}.npz"
    cached = _read_cache(cache_file, length)
    if cached is not None:
        tokens, values, groups = cached
    else:
        text = _text(raw, path, label)
        values = None
        if values_path is not None and values_raw is not None:
            values = (_text(values_raw, values_path, str(values_path)), str(values_path))
        table = _parse(source, fmt, text, label, key, values)
        if source.too_long == "error":
            _check_lengths(table, length, label, key)
        try:
            tokens = _tokens(table.sequences, length, source.unknown == "as_n")
        except _BadCharacter as bad:
            raise SpecError(f"{label}:{table.line_of(bad.row, bad.col)}", "", bad.message) from None
        values, groups = table.values, table.groups
        arrays = {"tokens": tokens, "values": values}
        if groups is not None:
            arrays["groups"] = groups
        _write_cache(cache_file, arrays)
    if not name:
        stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
        name = Path(stem).stem
    return Dataset(tokens, values, groups, name, digest)


@dataclass(eq=False)
class SequenceTable:
    """Sequences to score (:func:`read_sequences`): measured values are optional.

    Attributes:
        ids: ``(n,)`` identifiers (an id column, the FASTA record id, or the 1-based row number).
        sequences: the sequences as written in the file.
        tokens: ``uint8`` ``(n, length)``, encoded exactly as :func:`load` encodes training data.
        lengths: ``int64`` ``(n,)`` real (unpadded) length of each sequence in the tokens, at most ``length``.
        values: ``float32`` ``(n,)`` measured values when the file has them, else None.
    """

    ids: list[str]
    sequences: list[str]
    tokens: np.ndarray
    lengths: np.ndarray
    values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def read_sequences(
    source: DataSource,
    length: int = MODEL_LENGTH,
    base_dir: Path | str = ".",
    key: str = "input",
    id_column: str = "id",
) -> SequenceTable:
    """Read sequences to score with the same parsing, checks and encoding as :func:`load`; values are optional.

    A table needs only ``source.sequence_column``; its ``value_column`` is read when present, ``id_column`` names
    the rows when present (else the 1-based row number), ``where`` filters rows. A FASTA record's id is its header
    up to the value (``>id value``, ``>id|value``: every header must carry one for values to be read) or its first
    word. Nothing is cached (inputs to score are read once).

    Args:
        source: what to read (``values_file`` is not supported here).
        length: model input length; longer sequences are truncated at the 3' end, shorter ones padded with N.
        base_dir: folder a relative ``source.path`` is resolved against.
        key: key path of the source, for errors.
        id_column: the table column holding row ids, if present.

    Returns:
        The sequences, tokens ``(n, length)``, real lengths ``(n,)``, ids and values (or None).

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``, as :func:`load`.
    """
    path = Path(base_dir) / Path(source.path).expanduser()
    label = str(path)
    fmt = _format_of(source, path, label, key)
    text = _text(_read_bytes(path, label, f"{key}.path"), path, label)
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
        table = _Table(sequences, np.zeros(0, np.float32), None, lines, spans)
    else:
        columns = {f"{key}.sequence_column": source.sequence_column}
        df, lines = _read_table(text, "\t" if fmt == "tsv" else ",", label, columns, source.where, key)
        if source.where:
            keep = _where(df, source.where, label, key)
            df, lines = df[keep], lines[keep]
        sequences = df[source.sequence_column].tolist()
        empty = [i for i, seq in enumerate(sequences) if not seq]
        if empty:
            raise SpecError(f"{label}:{lines[empty[0]]}", "", f"empty sequence in column '{source.sequence_column}'")
        if source.value_column in df.columns:
            values = _numbers(df[source.value_column], lines, label, source.value_column)
        ids = df[id_column].tolist() if id_column in df.columns else [str(i + 1) for i in range(len(df))]
        table = _Table(sequences, np.zeros(0, np.float32), None, lines)
    try:
        tokens = _tokens(table.sequences, length, source.unknown == "as_n")
    except _BadCharacter as bad:
        raise SpecError(f"{label}:{table.line_of(bad.row, bad.col)}", "", bad.message) from None
    lengths = np.minimum([len(seq) for seq in table.sequences], length).astype(np.int64)
    return SequenceTable(ids, table.sequences, tokens, lengths, values)


# ---------------------------------------------------------------------------------------------------- splitting
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
