"""Reading sequences to score: ids and optional values from tables and FASTA, encoded as training data is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crmlab.registry import SpecError
from crmlab.runners.data import DataSource, encode, read_sequences
from tests.runners.data_helpers import real_lines, write


@pytest.fixture
def seqs() -> list[str]:
    return [line.split("\t")[0] for line in real_lines(n=3)[1:]]


def test_a_table_gives_ids_values_and_lengths(tmp_path: Path, seqs: list[str]) -> None:
    write(tmp_path / "x.csv", ["name,seq,expression", *(f"r{i},{s},{i}.5" for i, s in enumerate(seqs))])
    table = read_sequences(DataSource(path="x.csv"), length=100, base_dir=tmp_path, id_column="name")
    assert table.ids == ["r0", "r1", "r2"] and table.sequences == seqs and len(table) == 3
    np.testing.assert_array_equal(table.tokens, encode(seqs, length=100))
    np.testing.assert_array_equal(table.lengths, [min(len(s), 100) for s in seqs])
    np.testing.assert_array_equal(table.values, np.array([0.5, 1.5, 2.5], dtype=np.float32))
    write(tmp_path / "y.tsv", ["seq", *seqs])
    plain = read_sequences(DataSource(path="y.tsv"), base_dir=tmp_path)
    assert plain.ids == ["1", "2", "3"] and plain.values is None


def test_fasta_values_are_read_only_when_every_header_has_one(tmp_path: Path, seqs: list[str]) -> None:
    write(tmp_path / "x.fa", [">a 1.5", seqs[0][:50], seqs[0][50:], ">b|2", seqs[1]])
    table = read_sequences(DataSource(path="x.fa"), base_dir=tmp_path)
    assert table.ids == ["a", "b"] and table.sequences == seqs[:2]
    np.testing.assert_array_equal(table.values, np.array([1.5, 2], dtype=np.float32))
    write(tmp_path / "y.fa", [">a 1.5", seqs[0], ">b second", seqs[1], ">", seqs[2]])
    table = read_sequences(DataSource(path="y.fa"), base_dir=tmp_path)
    assert table.ids == ["a", "b", "3"] and table.values is None


def test_errors_name_the_file_and_the_setting_or_line(tmp_path: Path, seqs: list[str]) -> None:
    f = write(tmp_path / "x.fa", [">a", seqs[0][:50], seqs[0][50:70] + "Z" + seqs[0][71:]])
    with pytest.raises(SpecError, match=r": sequence has 'Z' at position 71; allowed: A, C, G, T, N$") as info:
        read_sequences(DataSource(path="x.fa"), base_dir=tmp_path)
    assert str(info.value).startswith(f"{f}:3: ")
    with pytest.raises(SpecError) as info:
        read_sequences(DataSource(path="x.fa", where={"keep": 1}), base_dir=tmp_path, key="--test")
    assert str(info.value) == f"{f}: --test.where: FASTA has no columns to filter on"
    with pytest.raises(SpecError) as info:
        read_sequences(DataSource(path="x.fa", values_file="v.tsv"), base_dir=tmp_path)
    assert str(info.value) == f"{f}: input.values_file: not read when scoring sequences; give a table instead"
    f = write(tmp_path / "x.tsv", ["seq\texpression", f"{seqs[0]}\t1", "\t2"])
    with pytest.raises(SpecError) as info:
        read_sequences(DataSource(path="x.tsv"), base_dir=tmp_path)
    assert str(info.value) == f"{f}:3: empty sequence in column 'seq'"
