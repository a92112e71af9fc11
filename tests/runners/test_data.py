"""Data layer: reading the shipped real data, one-line errors, the token cache, splits and encoding."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

import crmlab.runners.data as rd
from crmlab.registry.errors import SpecError
from crmlab.runners.data import Dataset, DataSource, decode, encode, load, split

DATA = Path(__file__).resolve().parents[2] / "data"
DREAM = "dream_test_derived_61313.tsv.gz"
SHIPPED = {
    DREAM: 61_313,
    "dream_random_library_7369.tsv": 7_369,
    "vaishnav_random_complex_2954.tsv": 2_954,
    "vaishnav_native_complex_3929.tsv": 3_929,
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache: the default cache is a per-session temporary folder."""
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path_factory.getbasetemp() / "token-cache"))


def real_lines(name: str = "vaishnav_random_complex_2954.tsv", n: int = 6) -> list[str]:
    """The header and the first ``n`` data lines of a shipped file, as text (no newlines)."""
    opener = gzip.open if name.endswith(".gz") else open
    with opener(DATA / name, "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(n + 1)]


def two_columns(lines: list[str]) -> list[str]:
    """Keep ``seq`` and ``expression`` (the first two columns) of real TSV lines."""
    return ["\t".join(line.split("\t")[:2]) for line in lines]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def load_error(source: DataSource, base_dir: Path, **kw: object) -> str:
    """The message of the SpecError that loading raises; it must be exactly one line."""
    with pytest.raises(SpecError) as info:
        load(source, base_dir=base_dir, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def dream() -> Dataset:
    return load(DataSource(path=DREAM, group_column="cluster"), base_dir=DATA)


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.parametrize("name", list(SHIPPED))
def test_reads_every_shipped_file(name: str) -> None:
    ds = load(DataSource(path=name, too_long="truncate"), base_dir=DATA)  # the random library has 10 > 112 nt
    n = SHIPPED[name]
    assert len(ds) == n and ds.tokens.shape == (n, 112) and ds.tokens.dtype == np.uint8
    assert ds.values.shape == (n,) and ds.values.dtype == np.float32 and np.isfinite(ds.values).all()
    assert ds.groups is None and ds.name == name.split(".")[0] and len(ds.content_hash) == 64
    seq, value = real_lines(name, 1)[1].split("\t")[:2]
    assert decode(ds.tokens[:1])[0] == seq.ljust(112, "N")[:112]
    assert ds.values[0] == np.float32(float(value))


def test_where_with_a_list_keeps_rows_matching_any_value() -> None:
    source = DataSource(path="dream_test_derived_61313.tsv.gz", where={"subset": ["random", "yeast"]})
    assert len(load(source, base_dir=DATA)) == 1030 + 384


def test_where_selects_the_github_subset() -> None:
    ds = load(DataSource(path="vaishnav_native_complex_3929.tsv", where={"in_github_subset": 1}), base_dir=DATA)
    assert len(ds) == 3_733
    as_text = load(DataSource(path="vaishnav_native_complex_3929.tsv", where={"in_github_subset": "1"}), base_dir=DATA)
    np.testing.assert_array_equal(as_text.tokens, ds.tokens)


def test_dream_groups_are_the_clusters(dream: Dataset) -> None:
    assert dream.groups is not None and dream.groups.dtype == np.int64
    assert len(np.unique(dream.groups)) == 9_176


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


# -------------------------------------------------------------------------------------------------- cache
def test_second_load_is_a_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = DataSource(path=DREAM, group_column="cluster")
    first = load(source, base_dir=DATA, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first.content_hash}.npz"]  # no temporary files left

    def no_parsing(*args: object, **kw: object) -> None:
        raise AssertionError("parsed despite the cache")

    monkeypatch.setattr(rd, "_parse", no_parsing)
    second = load(source, base_dir=DATA, cache_dir=tmp_path)
    assert second.content_hash == first.content_hash
    for a, b in [(first.tokens, second.tokens), (first.values, second.values), (first.groups, second.groups)]:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="parsed despite"):  # the key covers the length and the source fields
        load(source, length=100, base_dir=DATA, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="parsed despite"):
        load(source.model_copy(update={"unknown": "as_n"}), base_dir=DATA, cache_dir=tmp_path)


def test_a_corrupt_cache_file_is_remade(tmp_path: Path) -> None:
    write(tmp_path / "x.tsv", real_lines())
    first = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "c" / f"{first.content_hash}.npz").write_bytes(b"garbage")
    again = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.tokens, first.tokens)


# ------------------------------------------------------------------------------------------------- splits
def test_group_split_keeps_clusters_whole_and_is_deterministic(dream: Dataset) -> None:
    train, val = split(dream, "group", (0.9, 0.1), seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(dream)
    assert len(np.intersect1d(dream.groups[train], dream.groups[val])) == 0
    assert abs(len(val) / len(dream) - 0.1) < 0.01
    again = split(dream, "group", (0.9, 0.1), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, [train, val], strict=True))
    assert not np.array_equal(split(dream, "group", (0.9, 0.1), seed=1)[1], val)
    three = split(dream, "group", (0.8, 0.1, 0.1), seed=3)
    assert sum(map(len, three)) == len(dream) and len(np.unique(np.concatenate(three))) == len(dream)
    owners = [set(dream.groups[p].tolist()) for p in three]
    assert not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])


def test_random_split_is_deterministic_and_exact() -> None:
    ds = load(DataSource(path="dream_random_library_7369.tsv", too_long="truncate"), base_dir=DATA)
    parts = split(ds, "random", (0.8, 0.2), seed=7)
    assert [len(p) for p in parts] == [5_895, 1_474]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(ds)))
    assert all(np.array_equal(a, b) for a, b in zip(split(ds, "random", (0.8, 0.2), seed=7), parts, strict=True))
    assert not np.array_equal(split(ds, "random", (0.8, 0.2), seed=8)[1], parts[1])
    val = ds.subset(parts[1])
    assert len(val) == 1_474 and val.content_hash != ds.content_hash
    np.testing.assert_array_equal(val.values, ds.values[parts[1]])


def test_split_errors() -> None:
    ds = load(DataSource(path="vaishnav_random_complex_2954.tsv"), base_dir=DATA)
    with pytest.raises(SpecError, match=r"^split.method: a group split needs groups, .*\(set group_column\)$"):
        split(ds, "group")
    with pytest.raises(SpecError, match=r"^split.fractions: need positive fractions that sum to 1"):
        split(ds, "random", (0.9, 0.2))
    with pytest.raises(SpecError, match=r"^split.method: no split method 'grup' \(did you mean 'group'\?\)$"):
        split(ds, "grup")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- encoding
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
