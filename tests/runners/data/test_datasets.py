"""Training data sets: reading the shipped real data, ``where`` filters, groups, splits and subsets."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from crmlab.registry import SpecError
from crmlab.runners.data import Dataset, DataSource, RowView, load, split
from crmlab.runners.data._tokens import decode
from tests.runners.data_helpers import DATA, DREAM, real_lines

SHIPPED = {
    DREAM: 61_313,
    "dream_random_library_7369.tsv": 7_369,
    "vaishnav_random_complex_2954.tsv": 2_954,
    "vaishnav_native_complex_3929.tsv": 3_929,
}


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


def test_a_subset_maps_the_same_tokens_and_keeps_its_content_hash(dream: Dataset) -> None:
    rows = split(dream, "random", (0.9, 0.1), seed=0)[1]
    val = dream.subset(rows)
    assert isinstance(val.tokens, RowView) and val.tokens.array is dream.tokens  # not copied: still memory-mapped
    assert not dream.tokens.flags.writeable
    np.testing.assert_array_equal(val.tokens, dream.tokens[rows])
    np.testing.assert_array_equal(val.groups, dream.groups[rows])
    formula = hashlib.sha256(f"{dream.content_hash}:subset:".encode() + rows.astype("<i8").tobytes()).hexdigest()
    assert val.content_hash == formula  # part of run keys: never changes
    inner = val.subset(slice(10, 20))
    assert inner.tokens.array is dream.tokens
    np.testing.assert_array_equal(inner.tokens, dream.tokens[rows[10:20]])
    np.testing.assert_array_equal(inner.values, dream.values[rows[10:20]])


def test_split_errors() -> None:
    ds = load(DataSource(path="vaishnav_random_complex_2954.tsv"), base_dir=DATA)
    with pytest.raises(SpecError, match=r"^split.method: a group split needs groups, .*\(set group_column\)$"):
        split(ds, "group")
    with pytest.raises(SpecError, match=r"^split.fractions: need positive fractions that sum to 1"):
        split(ds, "random", (0.9, 0.2))
    with pytest.raises(SpecError, match=r"^split.method: no split method 'grup' \(did you mean 'group'\?\)$"):
        split(ds, "grup")  # type: ignore[arg-type]
