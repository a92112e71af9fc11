"""Data sources: the :class:`DataSource` spec entry and opening its files (format, bytes, decompression, text).

A :class:`DataSource` says where a data file is and how to read it. The file's format is explicit or read off its
suffix (``.gz`` ignored), its bytes are read as stored, and :func:`decode_text` turns them into text: gzip is
recognised by content and decompressed, any other compression or binary data is a one-line
:class:`~crmlab.registry.errors.SpecError` (``FILE: key.path: message`` or ``FILE:LINE: message``).
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal, TextIO

import pydantic

from crmlab.registry import SpecError

__all__ = [
    "DataSource",
    "decode_text",
    "file_format",
    "format_by_suffix",
    "open_bytes",
    "open_text",
    "read_bytes",
]

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


@contextmanager
def _reading(label: str, key_path: str) -> Iterator[None]:
    """Turn the errors of opening or reading a file into ``label: key_path: ...``."""
    try:
        yield
    except FileNotFoundError:
        raise SpecError(label, key_path, "no such file") from None
    except IsADirectoryError:
        raise SpecError(label, key_path, "is a directory, not a file") from None
    except OSError as e:
        raise SpecError(label, key_path, f"cannot read: {e.strerror or e}") from None


def read_bytes(path: Path, label: str, key_path: str) -> bytes:
    """The file's bytes as stored (compressed or not); a missing or unreadable file is ``label: key_path: ...``."""
    with _reading(label, key_path):
        return path.read_bytes()


def open_bytes(path: Path, label: str, key_path: str) -> BinaryIO:
    """The file opened for reading its bytes as stored; a missing or unreadable file is ``label: key_path: ...``."""
    with _reading(label, key_path):
        return path.open("rb")


def _is_gzip(head: bytes, path: Path, label: str) -> bool:
    """Whether the file starting with ``head`` is gzip; other compression, or a ``.gz`` that isn't, is an error."""
    if head[:2] == _GZIP_MAGIC:
        return True
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    if kind is not None:
        raise SpecError(label, "", f"is {kind}-compressed; only gzip (.gz) and plain text are read")
    if path.name.lower().endswith(".gz"):
        raise SpecError(label, "", "not a gzip file, though the name ends in .gz")
    return False


def _utf8_error(data: bytes, start: int, newlines: int, label: str) -> SpecError:
    line = newlines + data[:start].count(b"\n") + 1
    return SpecError(f"{label}:{line}", "", "not UTF-8 text (is this a binary or compressed file?)")


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
    if _is_gzip(raw, path, label):
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SpecError(label, "", f"corrupt gzip data ({e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _utf8_error(data, e.start, 0, label) from None
    return text.removeprefix("\ufeff")


@contextmanager
def open_text(path: Path, label: str, key_path: str) -> Iterator[TextIO]:
    """The file as a stream of text, read as :func:`decode_text` reads it (gzip by content, UTF-8, no BOM) without
    holding the whole file; line ends are kept as written.

    Errors reading the stream inside the ``with`` block are the one-line errors :func:`decode_text` gives: a byte
    that is not UTF-8 is ``label:LINE: not UTF-8 text ...`` (the file is read again to find its line), broken gzip
    data ``label: corrupt gzip data (...)`` and a failing read ``label: key_path: cannot read: ...``.

    Args:
        path: the file.
        label: the file name for errors.
        key_path: the setting naming the file (``data.train.path``).

    Yields:
        The text stream, closed on leaving the block.
    """
    with _reading(label, key_path), path.open("rb") as raw:
        head = raw.read(8)
    gz = _is_gzip(head, path, label)
    text: dict[str, str] = {"encoding": "utf-8-sig", "newline": ""}
    try:
        with gzip.open(path, "rt", **text) if gz else path.open(**text) as fh:
            yield fh
    except UnicodeDecodeError:
        raise _first_utf8_error(path, gz, label) from None
    except (OSError, EOFError, zlib.error) as e:
        if gz:
            raise SpecError(label, "", f"corrupt gzip data ({e})") from None
        raise SpecError(label, key_path, f"cannot read: {getattr(e, 'strerror', None) or e}") from None


def _first_utf8_error(path: Path, gz: bool, label: str) -> SpecError:
    """The error naming the line of the first byte of ``path`` (gzip decompressed) that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0
    with gzip.open(path, "rb") if gz else path.open("rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                return _utf8_error(e.object, e.start, newlines, label)
            newlines += block.count(b"\n")
    return SpecError(label, "", "not UTF-8 text (is this a binary or compressed file?)")
