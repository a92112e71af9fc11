"""Data sources: the :class:`DataSource` spec entry and opening its files (format, bytes, decompression, text).

A :class:`DataSource` says where a data file is and how to read it. The file's format is explicit or read off its
suffix (``.gz`` ignored), its bytes are read as stored, and :func:`decode_text` turns them into text: gzip is
recognised by content and decompressed, any other compression or binary data is a one-line
:class:`~crmlab.registry.errors.SpecError` (``FILE: key.path: message`` or ``FILE:LINE: message``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import pydantic

from crmlab.registry.errors import SpecError

__all__ = ["DataSource", "decode_text", "file_format", "format_by_suffix", "read_bytes"]

_FORMATS = {".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".csv": "csv"}
_FORMATS.update(dict.fromkeys((".fa", ".fasta", ".fna", ".fas"), "fasta"))
_OTHER_COMPRESSION = {".bz2": "bzip2", ".xz": "xz", ".zip": "zip", ".zst": "zstd", ".lz4": "lz4", ".7z": "7z"}
_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"PK\x03\x04": "zip", b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf": "7z"}
_GZIP_MAGIC = b"\x1f\x8b"


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
        group_column: a column carried along as ``Dataset.groups``, for grouped splits (e.g. ``cluster``).
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


def _suffix(path: Path) -> str:
    """The lower-case suffix of ``path``'s name, a final ``.gz`` ignored (``x.TSV.gz`` -> ``.tsv``)."""
    name = path.name.lower()
    return Path(name[:-3] if name.endswith(".gz") else name).suffix


def format_by_suffix(path: Path) -> str | None:
    """The format the name of ``path`` says (``tsv``, ``csv`` or ``fasta``, a ``.gz`` ignored), or None."""
    return _FORMATS.get(_suffix(path))


def file_format(source: DataSource, path: Path, label: str, key: str) -> str:
    """The format of ``path``: the explicit ``source.format`` or one read off the suffix.

    Args:
        source: the data source.
        path: its resolved file.
        label: the file name for errors.
        key: key prefix of the data source for errors (``data.train``).

    Returns:
        ``tsv``, ``csv`` or ``fasta``.

    Raises:
        SpecError: a suffix of an unsupported compression, or ``format: auto`` and an unknown suffix.
    """
    suffix = _suffix(path)
    if suffix in _OTHER_COMPRESSION:
        raise SpecError(
            label, f"{key}.path", f"{_OTHER_COMPRESSION[suffix]} compression is not supported; use gzip (.gz)"
        )
    if source.format != "auto":
        return source.format
    if suffix not in _FORMATS:
        raise SpecError(label, f"{key}.format", "cannot tell the format from the name; set format: tsv, csv or fasta")
    return _FORMATS[suffix]


def read_bytes(path: Path, label: str, key_path: str) -> bytes:
    """The file's bytes as stored (compressed or not); a missing or unreadable file is ``label: key_path: ...``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(label, key_path, "no such file") from None
    except IsADirectoryError:
        raise SpecError(label, key_path, "is a directory, not a file") from None
    except OSError as e:
        raise SpecError(label, key_path, f"cannot read: {e.strerror or e}") from None


def decode_text(raw: bytes, path: Path, label: str) -> str:
    """Decompress (gzip, by content) and decode UTF-8; a ``.gz`` that isn't gzip or binary data is an error.

    Args:
        raw: the file's bytes as :func:`read_bytes` returns them.
        path: the file (its name tells whether it should be gzip).
        label: the file name for errors.

    Returns:
        The text, a leading byte-order mark removed.
    """
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
