"""Reading data files: gzip, CSV and FASTA (header values, values files), and one-line errors naming the file and
the setting or the file line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from crmlab.registry import SpecError
from crmlab.runners.data import DataSource, encode, load
from crmlab.runners.data._readers import Rows, read_training_table
from crmlab.runners.data._sources import open_text
from crmlab.runners.data._tables import as_group_labels
from tests.runners.data_helpers import DATA, DREAM, load_error, real_lines, two_columns, write


# ------------------------------------------------------------------------------------------------ reading
def test_gzip_is_transparent_and_csv_reads_the_same(tmp_path: Path) -> None:
    name = "vaishnav_random_complex_2954.tsv"
    plain = load(DataSource(path=name), base_dir=DATA)
    (tmp_path / "copy.tsv.gz").write_bytes(gzip.compress((DATA / name).read_bytes()))
    zipped = load(DataSource(path="copy.tsv.gz"), base_dir=tmp_path)
    np.testing.assert_array_equal(zipped.tokens, plain.tokens)
    np.testing.assert_array_equal(zipped.values, plain.values)
    assert zipped.name == "copy"
    lines = real_lines(name, 20)
    write(tmp_path / "few.csv", [line.replace("\t", ",") for line in lines])
    csv = load(DataSource(path="few.csv"), base_dir=tmp_path)
    np.testing.assert_array_equal(csv.tokens, plain.tokens[:20])
    np.testing.assert_array_equal(csv.values, plain.values[:20])


def test_fasta_with_values_in_the_header(tmp_path: Path) -> None:
    rows = [line.split("\t") for line in real_lines(n=4)[1:]]
    fasta = []
    for i, (seq, value, *_) in enumerate(rows):
        fasta.append(f">r{i} {value}" if i % 2 else f">r{i}|{value}")
        fasta += [seq[:60], seq[60:]]  # multi-line records
    write(tmp_path / "x.fa", fasta)
    ds = load(DataSource(path="x.fa"), base_dir=tmp_path)
    np.testing.assert_array_equal(ds.tokens, encode([r[0] for r in rows]))
    np.testing.assert_array_equal(ds.values, np.array([r[1] for r in rows], dtype=np.float32))


def test_fasta_with_a_values_file(tmp_path: Path) -> None:
    rows = [line.split("\t") for line in real_lines(DREAM, 5)[1:]]
    write(tmp_path / "x.fasta.gz", [])
    (tmp_path / "x.fasta.gz").write_bytes(
        gzip.compress("".join(f">s{i}\n{r[0]}\n" for i, r in enumerate(rows)).encode())
    )
    values = ["id\texpression\tcluster\tkeep"] + [
        f"s{i}\t{r[1]}\t{r[3]}\t{i % 2}" for i, r in reversed(list(enumerate(rows)))
    ]
    write(tmp_path / "values.tsv", values)
    source = DataSource(path="x.fasta.gz", values_file="values.tsv", group_column="cluster")
    ds = load(source, base_dir=tmp_path)
    np.testing.assert_array_equal(ds.tokens, encode([r[0] for r in rows]))
    np.testing.assert_array_equal(ds.values, np.array([r[1] for r in rows], dtype=np.float32))
    np.testing.assert_array_equal(ds.groups, [int(r[3]) for r in rows])
    kept = load(source.model_copy(update={"where": {"keep": 1}}), base_dir=tmp_path)
    np.testing.assert_array_equal(kept.tokens, ds.tokens[1::2])


# ------------------------------------------------------------------------------------------------- errors
def test_missing_file_names_the_key(tmp_path: Path) -> None:
    msg = load_error(DataSource(path="nope.tsv"), tmp_path, key="data.train")
    assert msg == f"{tmp_path / 'nope.tsv'}: data.train.path: no such file"
    msg = load_error(DataSource(path="x.fa", values_file="nope.tsv"), tmp_path, key="data.val")
    assert msg.endswith(": data.val.path: no such file")  # the FASTA itself is looked for first
    write(tmp_path / "x.fa", [">a 1", "ACGT"])
    msg = load_error(DataSource(path="x.fa", values_file="nope.tsv"), tmp_path, key="data.val")
    assert msg == f"{tmp_path / 'nope.tsv'}: data.val.values_file: no such file"


def test_missing_column_suggests_the_right_one(tmp_path: Path) -> None:
    f = write(tmp_path / "x.tsv", real_lines())
    msg = load_error(DataSource(path="x.tsv", sequence_column="seqq"), tmp_path, key="data.train")
    assert msg == f"{f}: data.train.sequence_column: no column 'seqq' (did you mean 'seq'?)"
    msg = load_error(DataSource(path="x.tsv", where={"in_github_subst": 1}), tmp_path, key="data.test")
    assert msg.startswith(f"{f}: data.test.where.in_github_subst: no column 'in_github_subst' (choose from: ")


@pytest.mark.parametrize("bad", ["", "abc", "NaN", "NA"])
def test_empty_or_non_numeric_value_gives_the_line(tmp_path: Path, bad: str) -> None:
    lines = two_columns(real_lines())
    lines[4] = lines[4].split("\t")[0] + "\t" + bad
    lines.insert(2, "")  # a blank line is skipped but still counted: the bad row is on line 6
    f = write(tmp_path / "x.tsv", lines)
    assert load_error(DataSource(path="x.tsv"), tmp_path) == f"{f}:6: empty or non-numeric value in column 'expression'"


def test_bad_character_gives_the_file_line(tmp_path: Path) -> None:
    lines = two_columns(real_lines())
    seq = lines[4].split("\t")[0]
    lines[4] = lines[4].replace(seq, seq[:30] + "X" + seq[31:])
    f = write(tmp_path / "x.tsv", lines)
    msg = load_error(DataSource(path="x.tsv"), tmp_path)
    assert msg == f"{f}:5: sequence has 'X' at position 31; allowed: A, C, G, T, N"
    ds = load(DataSource(path="x.tsv", unknown="as_n"), base_dir=tmp_path)
    assert ds.tokens[3, 30] == 0 and len(ds) == 6


def test_empty_header_only_and_filtered_out_files(tmp_path: Path) -> None:
    f = write(tmp_path / "x.tsv", [])
    assert load_error(DataSource(path="x.tsv"), tmp_path) == f"{f}: file is empty"
    write(f, [*real_lines(n=0), "", ""])
    assert load_error(DataSource(path="x.tsv"), tmp_path) == f"{f}: no data rows, only a header"
    write(f, real_lines("vaishnav_native_complex_3929.tsv", 3))
    msg = load_error(DataSource(path="x.tsv", where={"in_github_subset": 7}), tmp_path, key="data.test")
    assert msg == f"{f}: data.test.where: no rows left where in_github_subset == 7 (of 3 rows)"


def test_duplicate_header_and_ragged_rows(tmp_path: Path) -> None:
    lines = two_columns(real_lines())
    f = write(tmp_path / "x.tsv", ["seq\texpression\tseq", *lines[1:]])
    assert load_error(DataSource(path="x.tsv"), tmp_path) == f"{f}:1: duplicate column 'seq' in the header"
    lines[3] += "\t1.0"
    write(f, lines)
    assert load_error(DataSource(path="x.tsv"), tmp_path) == f"{f}:4: 3 fields, but the header has 2"


def test_wrong_compression_is_one_line(tmp_path: Path) -> None:
    f = write(tmp_path / "x.tsv.gz", real_lines())
    assert load_error(DataSource(path="x.tsv.gz"), tmp_path) == f"{f}: not a gzip file, though the name ends in .gz"
    f.write_bytes(gzip.compress((DATA / "vaishnav_random_complex_2954.tsv").read_bytes())[:500])
    assert load_error(DataSource(path="x.tsv.gz"), tmp_path).startswith(f"{f}: corrupt gzip data (")
    f = tmp_path / "x.tsv.bz2"
    f.write_bytes(b"BZh9")
    assert load_error(DataSource(path="x.tsv.bz2"), tmp_path, key="data.train") == (
        f"{f}: data.train.path: bzip2 compression is not supported; use gzip (.gz)"
    )
    write(tmp_path / "x.dat", real_lines())
    assert load_error(DataSource(path="x.dat"), tmp_path).endswith(
        ": data.format: cannot tell the format from the name; set format: tsv, csv or fasta"
    )
    assert len(load(DataSource(path="x.dat", format="tsv"), base_dir=tmp_path)) == 6


def test_fasta_errors_name_the_line(tmp_path: Path) -> None:
    seq = real_lines(n=1)[1].split("\t")[0]
    f = write(tmp_path / "x.fa", [">a 1.5", seq, ">b", seq])
    msg = load_error(DataSource(path="x.fa"), tmp_path)
    assert msg == f"{f}:3: FASTA header has no value (write '>id value' or '>id|value', or set values_file)"
    write(f, [">a 1.5", seq[:50], seq[50:70] + "Z" + seq[71:]])
    assert (
        load_error(DataSource(path="x.fa"), tmp_path)
        == f"{f}:3: sequence has 'Z' at position 71; allowed: A, C, G, T, N"
    )
    write(f, [">a 1.5", seq, ">b 2", seq])
    write(tmp_path / "v.tsv", ["id\texpression", "a\t1.0"])
    msg = load_error(DataSource(path="x.fa", values_file="v.tsv"), tmp_path)
    assert msg == f"{f}:3: no value for id 'b' in {tmp_path / 'v.tsv'}"


# ------------------------------------------------------------------------------------------ chunked tables
def chunked(path: Path, source: DataSource, chunk_rows: int = 2) -> list[Rows]:
    """The rows of a training table read ``chunk_rows`` file lines at a time."""
    with open_text(path, str(path), "data.path") as handle:
        return list(read_training_table(source, "tsv", handle, str(path), "data", chunk_rows))


def chunked_error(path: Path, source: DataSource, chunk_rows: int = 2) -> str:
    with pytest.raises(SpecError) as info:
        chunked(path, source, chunk_rows)
    return str(info.value)


def test_a_table_read_in_chunks_gives_the_same_rows_and_lines(tmp_path: Path) -> None:
    lines = real_lines(DREAM, 9)
    lines[4:4] = ["", ""]  # blank lines across a chunk boundary still count
    f = tmp_path / "x.tsv.gz"
    f.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    source = DataSource(path="x.tsv.gz", group_column="cluster", where={"cluster": [15677, 1]})
    whole = load(source, base_dir=tmp_path)
    parts = chunked(f, source)
    assert len(parts) > 3 and sum(len(p.sequences) for p in parts) == len(whole)
    np.testing.assert_array_equal(np.concatenate([p.encode(112, False, "x") for p in parts]), whole.tokens)
    np.testing.assert_array_equal(np.concatenate([p.values for p in parts]), whole.values)
    np.testing.assert_array_equal(as_group_labels(np.concatenate([p.groups for p in parts])), whole.groups)
    kept = [i + 1 for i, line in enumerate(lines) if line.endswith("\t15677")]
    assert np.concatenate([p.lines for p in parts]).tolist() == kept


def test_chunked_errors_name_the_file_line(tmp_path: Path) -> None:
    lines = two_columns(real_lines(n=8))
    f = write(tmp_path / "x.tsv", [*lines[:6], lines[6] + "\t1.0", *lines[7:]])
    assert chunked_error(f, DataSource(path="x.tsv")) == f"{f}:7: 3 fields, but the header has 2"
    write(f, [*lines[:7], lines[7].split("\t")[0] + "\tNaN", *lines[8:]])
    assert chunked_error(f, DataSource(path="x.tsv")) == f"{f}:8: empty or non-numeric value in column 'expression'"
    msg = chunked_error(f, DataSource(path="x.tsv", where={"expression": -1}))
    assert msg == f"{f}: data.where: no rows left where expression == -1 (of 8 rows)"
    write(f, ["  ", "", "\t"])
    assert chunked_error(f, DataSource(path="x.tsv"), 1) == f"{f}: file is empty"
    write(f, [lines[0], "", ""])
    assert chunked_error(f, DataSource(path="x.tsv"), 1) == f"{f}: no data rows, only a header"
    f.write_bytes(("\n".join(lines[:6]) + "\nAC\xe9GT\t1.0\n").encode("latin-1"))
    assert chunked_error(f, DataSource(path="x.tsv")) == f"{f}:7: not UTF-8 text (is this a binary or compressed file?)"


def test_group_labels_are_numbers_only_if_every_chunk_s_are(tmp_path: Path) -> None:
    groups = ["g", "007", "2", "3", "4", "5", "x"]
    lines = [f"{line}\t{g}" for line, g in zip(two_columns(real_lines(n=6)), groups, strict=True)]
    f = write(tmp_path / "x.tsv", lines)
    source = DataSource(path="x.tsv", group_column="g")
    labels = as_group_labels(np.concatenate([p.groups for p in chunked(f, source)]))
    assert labels.tolist() == ["007", "2", "3", "4", "5", "x"]
    np.testing.assert_array_equal(load(source, base_dir=tmp_path).groups, labels)
    write(f, lines[:-1])
    assert as_group_labels(np.concatenate([p.groups for p in chunked(f, source)])).tolist() == [7, 2, 3, 4, 5]
