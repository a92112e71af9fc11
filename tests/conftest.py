"""Shared fixtures: real sequences from the shipped data (see data/MANIFEST.md)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from tests.mlflow_server import MlflowServer
    from tests.pg import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def read_rows(name: str, n: int) -> list[dict[str, str]]:
    """The first ``n`` rows of a shipped TSV file."""
    with open(DATA / name, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        return [row for _, row in zip(range(n), reader, strict=False)]


JAX_CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
"""JAX caches every compiled program, not only those that took over a second to compile."""
_JAX_CACHE = pytest.StashKey[str]()
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config: pytest.Config) -> None:
    """In the process that starts the suite: one XLA compilation cache (JAX's persistent cache) for every process of
    this run, the test processes and the ``crmlab`` commands and workers they start, which inherit the environment.

    Most JAX processes of the suite compile the same small programs (the tiny CRMnet's initialisers and steps); each
    compiled them anew, and a JAX worker spent more time compiling than training. A cached program is XLA's own
    output for the same computation, so what a test checks is unchanged. A cache set by the user is kept.

    XLA compiles without its CPU optimisations (:data:`XLA_TEST_FLAGS`, unless ``XLA_FLAGS`` is set), as
    ``bench/device_check.py --quick`` does: a third less time for the tiny graphs' compiles. Every process of the run
    compiles alike, so results compared across processes still compare equal; no test checks XLA's speed."""
    if getattr(config, "workerinput", None) is not None:
        return
    os.environ.setdefault("XLA_FLAGS", XLA_TEST_FLAGS)
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="crmlab-tests-xla-")
    config.stash[_JAX_CACHE] = folder
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, **JAX_CACHE_ENV)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's compilation cache."""
    folder = config.stash.get(_JAX_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker under ``--dist loadgroup``: stop if the tests marked ``xdist_group`` were not renamed into
    their group (a pytest / pytest-xdist mismatch), which would train the runs they share once per worker."""
    if getattr(config, "workerinput", None) is None or not config.getvalue("loadgroup"):
        return
    ungrouped = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {ungrouped[0]} (--dist loadgroup): this pytest and pytest-xdist do not work"
            " together; install the versions pyproject.toml's dev extra allows"
        )


@pytest.fixture(scope="session")
def real_sequences() -> list[str]:
    """12 measured native and random yeast promoter sequences (Vaishnav et al. 2022 test sets)."""
    rows = read_rows("vaishnav_native_complex_3929.tsv", 6) + read_rows("vaishnav_random_complex_2954.tsv", 6)
    return [r["seq"] for r in rows]


@pytest.fixture(scope="session")
def real_tokens(real_sequences: list[str]) -> np.ndarray:
    """The real sequences as ``(12, 112)`` uint8 tokens."""
    from crmlab.runners.data import encode

    return encode(real_sequences)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 (free port) for the whole session; see tests/pg.py.

    Fails, never skips, when the server binaries are missing: CI must exercise it (the ``dev`` extra installs them).
    """
    from tests.pg import PostgresNotFoundError, PostgresServer

    try:
        server = PostgresServer(dbname="crmlab").start()
    except PostgresNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy/Optuna URL of the session's database: ``postgresql+psycopg2://postgres@127.0.0.1:PORT/crmlab``."""
    return postgres_server.url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 (free port, SQLite store, proxied artifacts) for the whole session (per
    xdist worker); see tests/mlflow_server.py. Fails, never skips: CI must exercise it."""
    from tests.mlflow_server import MlflowServer

    try:
        server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
