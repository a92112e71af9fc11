"""Sequence encoding: DNA strings -> compact ``uint8`` tokens (0 = N, 1 = A, 2 = C, 3 = G, 4 = T)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from registry.errors import SpecError

ALPHABET = "NACGT"
MODEL_LENGTH = 112

_TOKEN = np.zeros(256, dtype=np.uint8)
_VALID = np.zeros(256, dtype=bool)
for _i, _c in enumerate(ALPHABET):
    for _b in (_c, _c.lower()):
        _TOKEN[ord(_b)] = _i
        _VALID[ord(_b)] = True


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
    n = len(sequences)
    if n == 0:
        return np.zeros((0, length), dtype=np.uint8)
    fixed = b"".join(s.encode("ascii", "replace")[:length].ljust(length, b"N") for s in sequences)
    raw = np.frombuffer(fixed, dtype=np.uint8).reshape(n, length)
    if not unknown_as_n:
        bad = ~_VALID[raw]
        if bad.any():
            row, col = np.argwhere(bad)[0]
            ch = sequences[row][col]
            raise SpecError(
                f"{source}:{row + 1}", "", f"sequence has {ch!r} at position {col + 1}; allowed: A, C, G, T, N"
            )
    return _TOKEN[raw]


def decode(tokens: np.ndarray) -> list[str]:
    """Tokens ``(n, length)`` -> strings (padding N kept)."""
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)[np.asarray(tokens, dtype=np.int64)]
    return [row.tobytes().decode() for row in letters]
