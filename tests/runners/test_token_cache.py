"""The token cache: a second load reads it, its key covers how the data is read, a corrupt file is re-made, and
the key (a data set's content hash, part of every run key) stays the same across releases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crmlab.runners.datasets import load
from crmlab.runners.sources import DataSource
from crmlab.runners.token_cache import default_cache_dir
from tests.runners.data_helpers import DATA, DREAM, real_lines, write


def test_second_load_is_a_cache_hit(tmp_path: Path) -> None:
    source = DataSource(path=DREAM, group_column="cluster")
    first = load(source, base_dir=DATA, cache_dir=tmp_path)
    cache_file = tmp_path / f"{first.content_hash}.npz"
    assert sorted(tmp_path.iterdir()) == [cache_file]  # no temporary files left
    second = load(source, base_dir=DATA, cache_dir=tmp_path)
    assert second.content_hash == first.content_hash
    for a, b in [(first.tokens, second.tokens), (first.values, second.values), (first.groups, second.groups)]:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.savez(cache_file, tokens=first.tokens, values=first.values + 1, groups=first.groups)
    np.testing.assert_array_equal(load(source, base_dir=DATA, cache_dir=tmp_path).values, first.values + 1)
    # the key covers the length and the source fields: either changed, the file is read again
    for other in (
        load(source, length=120, base_dir=DATA, cache_dir=tmp_path),
        load(source.model_copy(update={"unknown": "as_n"}), base_dir=DATA, cache_dir=tmp_path),
    ):
        assert other.content_hash != first.content_hash
        np.testing.assert_array_equal(other.values, first.values)
    assert len(list(tmp_path.iterdir())) == 3


def test_a_corrupt_cache_file_is_remade(tmp_path: Path) -> None:
    write(tmp_path / "x.tsv", real_lines())
    first = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "c" / f"{first.content_hash}.npz").write_bytes(b"garbage")
    again = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.tokens, first.tokens)


@pytest.mark.parametrize(
    ("source", "digest"),
    [
        (
            DataSource(path="vaishnav_native_complex_3929.tsv", where={"in_github_subset": 1}),
            "1b15d1871185f15c1e70d0b107c45179bd9cfca035f72ccf6848044311843944",
        ),
        (  # too_long: truncate is left out of the key
            DataSource(path="dream_random_library_7369.tsv", too_long="truncate"),
            "4e1bfcc2649e2cd89f3771f45631c2b7217ed36263af62256302156602d38580",
        ),
    ],
)
def test_the_content_hash_of_shipped_data_is_stable(source: DataSource, digest: str, tmp_path: Path) -> None:
    assert load(source, base_dir=DATA, cache_dir=tmp_path).content_hash == digest


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path / "tokens"))
    assert default_cache_dir() == tmp_path / "tokens"
    monkeypatch.delenv("CRMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "crmlab" / "tokens"
