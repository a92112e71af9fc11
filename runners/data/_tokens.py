"""DNA sequences <-> ``uint8`` tokens: 0 = N, 1 = A, 2 = C, 3 = G, 4 = T (the CRMnet order).

Sequences are padded with N or truncated at the 3' end to the model length. A character other than A, C, G, T, N
(any case) is a one-line :class:`~crmlab.registry.errors.SpecError` naming the file and line
(``data/x.tsv:1875: sequence has 'X' at position 31; allowed: A, C, G, T, N``), unless it is read as N.

No Keras here: this module is numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from crmlab.registry import SpecError

__all__ = ["ALPHABET", "MODEL_LENGTH", "decode", "encode"]

ALPHABET = "NACGT"
MODEL_LENGTH = 112

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


class _BadCharacter(Exception):
    """Sequence ``row`` has a character outside the alphabet at 0-based ``col``."""

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
    sequences: Sequence[str],
    length: int = MODEL_LENGTH,
    unknown_as_n: bool = False,
    source: str = "<sequences>",
    line_of: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """Encode sequences as tokens, padded with N or truncated at the 3' end to ``length``.

    Args:
        sequences: DNA strings over A, C, G, T, N (any case).
        length: model input length (CRMnet: 112).
        unknown_as_n: map any other character to N instead of failing.
        source: file name used in error messages.
        line_of: maps (sequence index, character index), both 0-based, of a bad character to the line reported
            in the error; by default the 1-based sequence index.

    Returns:
        ``uint8`` array of shape ``(len(sequences), length)``.

    Raises:
        SpecError: a character other than A, C, G, T, N (``source:LINE: ...``), unless ``unknown_as_n``.
    """
    try:
        return _tokens(sequences, length, unknown_as_n)
    except _BadCharacter as bad:
        line = bad.row + 1 if line_of is None else line_of(bad.row, bad.col)
        raise SpecError(f"{source}:{line}", "", bad.message) from None


def decode(tokens: np.ndarray) -> list[str]:
    """Tokens ``(n, length)`` -> strings (padding N kept)."""
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)[np.asarray(tokens, dtype=np.int64)]
    return [row.tobytes().decode() for row in letters]
