"""Encoding sequences as tokens: padding, truncation, case, bad characters and their lines, throughput."""

from __future__ import annotations

import time

import numpy as np
import pytest

from crmlab.registry import SpecError
from crmlab.runners.data import Dataset, encode
from crmlab.runners.data._tokens import decode
from tests.runners.data_helpers import real_lines


def test_encode_round_trip_pads_and_truncates() -> None:
    seqs = [line.split("\t")[0] for line in real_lines(n=5)[1:]]
    tokens = encode(seqs)
    assert tokens.shape == (5, 112) and tokens.dtype == np.uint8
    assert decode(tokens) == [s.ljust(112, "N") for s in seqs]  # 3' padding with N (token 0)
    assert all((row[len(s) :] == 0).all() for row, s in zip(tokens, seqs, strict=True))
    assert decode(encode(seqs, length=80)) == [s[:80] for s in seqs]  # 3' truncation
    np.testing.assert_array_equal(encode([s.lower() for s in seqs]), tokens)
    with pytest.raises(SpecError, match=r"^f.tsv:2: sequence has 'é' at position 3; allowed: A, C, G, T, N$"):
        encode([seqs[0], "ACé"], source="f.tsv")
    with pytest.raises(SpecError, match=r"^<sequences>:1: sequence has '\\x00' at position 3"):
        encode(["AC\x00T"])
    assert encode(["ACéX\x00"], length=6, unknown_as_n=True).tolist() == [[1, 2, 0, 0, 0, 0]]


def test_encode_throughput(dream: Dataset) -> None:
    seqs = decode(dream.tokens[:50_000]) * 4  # 200,000 real 112-nt sequences
    best = min(_timed(encode, seqs) for _ in range(3))
    rate = len(seqs) / best
    print(f"\nencode: {rate / 1e6:.2f} M sequences/s (112 nt, one core)")
    assert rate > 200_000


def _timed(fn: object, arg: object) -> float:
    start = time.perf_counter()
    fn(arg)  # type: ignore[operator]
    return time.perf_counter() - start


def test_encode_reports_the_line_line_of_gives() -> None:
    lines = {(0, 0): 7, (1, 2): 9}
    with pytest.raises(SpecError, match=r"^f.fa:9: sequence has 'X' at position 3; allowed: A, C, G, T, N$"):
        encode(["ACGT", "ACXT"], source="f.fa", line_of=lambda row, col: lines[(row, col)])
