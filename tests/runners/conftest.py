"""Fixtures of the runners tests: an isolated token cache and the shipped DREAM test-derived data set."""

from __future__ import annotations

import pytest

from crmlab.runners.data import Dataset, DataSource, load
from tests.runners.data_helpers import DATA, DREAM


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache: the default cache is a per-session temporary folder."""
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path_factory.getbasetemp() / "token-cache"))


@pytest.fixture(scope="module")
def dream() -> Dataset:
    return load(DataSource(path=DREAM, group_column="cluster"), base_dir=DATA)
