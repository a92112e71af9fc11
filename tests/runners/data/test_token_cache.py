"""The token cache: a second load maps it, its key covers how the data is read, a broken folder is re-made, the
key (a data set's content hash, part of every run key) stays the same across releases, and a file seen before is
not hashed whole again."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from crmlab.runners.data import DataSource, default_cache_dir, load
from tests.runners.data_helpers import DATA, DREAM, real_lines, write


def test_second_load_maps_the_cache(tmp_path: Path) -> None:
    source = DataSource(path=DREAM, group_column="cluster")
    first = load(source, base_dir=DATA, cache_dir=tmp_path)
    folder = tmp_path / first.content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, "index"])  # no temporary files left
    assert sorted(p.name for p in folder.iterdir()) == ["groups.npy", "tokens.npy", "values.npy"]
    second = load(source, base_dir=DATA, cache_dir=tmp_path)
    assert second.content_hash == first.content_hash
    for a, b in [(first.tokens, second.tokens), (first.values, second.values), (first.groups, second.groups)]:
        assert a.dtype == b.dtype and not b.flags.writeable  # read-only: memory-mapped
        np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "v.npy", first.values + 1)
    os.replace(tmp_path / "v.npy", folder / "values.npy")
    np.testing.assert_array_equal(load(source, base_dir=DATA, cache_dir=tmp_path).values, first.values + 1)
    # the key covers the length and the source fields: either changed, the file is read again
    for other in (
        load(source, length=120, base_dir=DATA, cache_dir=tmp_path),
        load(source.model_copy(update={"unknown": "as_n"}), base_dir=DATA, cache_dir=tmp_path),
    ):
        assert other.content_hash != first.content_hash
        np.testing.assert_array_equal(other.values, first.values)
    assert len([p for p in tmp_path.iterdir() if p.name != "index"]) == 3


def test_a_broken_cache_folder_is_remade(tmp_path: Path) -> None:
    write(tmp_path / "x.tsv", real_lines())
    first = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    tokens = np.array(first.tokens)
    (tmp_path / "c" / first.content_hash / "tokens.npy").unlink()
    (tmp_path / "c" / first.content_hash / "tokens.npy").write_bytes(b"garbage")
    again = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.tokens, tokens)


def test_an_unwritable_cache_only_warns(tmp_path: Path) -> None:
    write(tmp_path / "x.tsv", real_lines())
    (tmp_path / "c").write_text("a file, not a folder")
    with pytest.warns(RuntimeWarning, match="cannot write the token cache"):
        ds = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    assert len(ds) == 6 and ds.tokens.shape == (6, 112)


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
    assert load(source, base_dir=DATA, cache_dir=tmp_path).content_hash == digest  # from the index


def test_a_known_file_is_not_hashed_again(tmp_path: Path) -> None:
    """The index files a key by path, size, modification time and the first and last MiB: a file changed in the
    middle behind the index's back keeps its key; a new modification time, or a change near an end, does not."""
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 110)) for _ in range(30_000)]  # about 3.5 MB
    lines = ["seq\texpression", *(f"{s}\t{i % 7}" for i, s in enumerate(seqs))]
    f = write(tmp_path / "x.tsv", lines)
    stat = f.stat()
    first = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    text = f.read_text()
    middle = text.index("A", len(text) // 2)  # a base more than 1 MiB from either end
    f.write_text(text[:middle] + "C" + text[middle + 1 :])
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (
        load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c").content_hash == first.content_hash
    )
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    moved = load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    assert moved.content_hash != first.content_hash
    f.write_text(text.replace("\t6\n", "\t5\n", 1))  # near the start: a new key whatever the time
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load(DataSource(path="x.tsv"), base_dir=tmp_path, cache_dir=tmp_path / "c").content_hash not in {
        first.content_hash,
        moved.content_hash,
    }


def test_gzip_is_hashed_as_stored(tmp_path: Path) -> None:
    lines = real_lines(n=20)
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress("".join(x + "\n" for x in lines).encode(), compresslevel=1))
    (tmp_path / "b.tsv.gz").write_bytes(gzip.compress("".join(x + "\n" for x in lines).encode(), compresslevel=9))
    a, b = (load(DataSource(path=n), base_dir=tmp_path, cache_dir=tmp_path / "c") for n in ("a.tsv.gz", "b.tsv.gz"))
    assert a.content_hash != b.content_hash
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path / "tokens"))
    assert default_cache_dir() == tmp_path / "tokens"
    monkeypatch.delenv("CRMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "crmlab" / "tokens"
