"""Sequences to score: :func:`read_sequences` reads a file into a :class:`SequenceTable` (values optional).

The file is opened, parsed and encoded exactly as training data is (:mod:`crmlab.runners.data._sources`,
:mod:`crmlab.runners.data._readers`), with the same one-line errors; nothing is cached (inputs to score are read once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crmlab.runners.data._readers import parse_scoring_rows
from crmlab.runners.data._sources import DataSource, decode_text, file_format, read_bytes
from crmlab.runners.data._tokens import MODEL_LENGTH

__all__ = ["SequenceTable", "read_sequences"]


@dataclass(eq=False)
class SequenceTable:
    """Sequences to score (:func:`read_sequences`): measured values are optional.

    Attributes:
        ids: ``(n,)`` identifiers (an id column, the FASTA record id, or the 1-based row number).
        sequences: the sequences as written in the file.
        tokens: ``uint8`` ``(n, length)``, encoded exactly as training data is encoded.
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
    """Read sequences to score with the same parsing, checks and encoding as training data; values are optional.

    A table needs only ``source.sequence_column``; its ``value_column`` is read when present, ``id_column`` names
    the rows when present (else the 1-based row number), ``where`` filters rows. A FASTA record's id is its header
    up to the value (``>id value``, ``>id|value``: every header must carry one for values to be read) or its first
    word.

    Args:
        source: what to read (``values_file`` is not supported here).
        length: model input length; longer sequences are truncated at the 3' end, shorter ones padded with N.
        base_dir: folder a relative ``source.path`` is resolved against.
        key: key path of the source, for errors.
        id_column: the table column holding row ids, if present.

    Returns:
        The sequences, tokens ``(n, length)``, real lengths ``(n,)``, ids and values (or None).

    Raises:
        SpecError: ``FILE: key.path: message`` or ``FILE:LINE: message``, as
            :func:`~crmlab.runners.data._datasets.load`.
    """
    path = Path(base_dir) / Path(source.path).expanduser()
    label = str(path)
    fmt = file_format(source, path, label, key)
    text = decode_text(read_bytes(path, label, f"{key}.path"), path, label)
    rows = parse_scoring_rows(source, fmt, text, label, key, id_column)
    tokens = rows.encode(length, source.unknown == "as_n", label)
    lengths = np.minimum([len(seq) for seq in rows.sequences], length).astype(np.int64)
    return SequenceTable(rows.ids or [], rows.sequences, tokens, lengths, rows.values)
