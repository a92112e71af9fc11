"""Distributed and killed searches: a driver (``--jobs 0``) and ``crmlab worker`` processes on two "machines" on a
real PostgreSQL server with one worker SIGKILLed mid-trial, and a single-process search on the embedded SQLite store
SIGKILLed and run again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from crmlab.search.arch._optuna_budget import SURPLUS_ATTR, budget_used
from tests.pg import PostgresServer

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml"
TRIALS = 4  # enough for a kill, its retry on another worker and trials on both machines
RESUME_TRIALS = 2  # one process: the killed trial and one after it
# Fine-tuning only (3 epochs) over a space without ``pretraining``: what these tests check (workers, kills, resume)
# does not depend on a pretraining stage, which would double every trial's tracing. The continuous learning rate
# keeps the trials' run keys distinct.
SHORT = [
    "--set",
    "recipe.stages=[{name: finetune, data: random_library, epochs: 3}]",
    "--set",
    "space={transformer: {type: bool}, kernel_size: {type: int, low: 3, high: 7, step: 4}, "
    "recipe.schedule.peak: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}}",
]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "crmlab.cli", "search", str(TINY), *args]


def _schema_ready(db: Path) -> bool:
    """The search process has created the SQLite file's Optuna schema and its study (read-only: creates nothing)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT COUNT(*) FROM studies").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def _wait_for_running_trial(
    url: str, proc: subprocess.Popen, timeout: float = 300, runs: Path | None = None
) -> optuna.trial.FrozenTrial:
    """A running trial that has reported at least one fine-tuning epoch (so it is truly mid-trial); with ``runs``
    (a multi-objective search, which reports no epochs to Optuna), one running while a run besides canonical's has
    an epoch in its state."""
    deadline = time.monotonic() + timeout
    storage = None  # one connection pool for all the polling (a server allows only so many clients)
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            if url.startswith("sqlite:///") and not _schema_ready(Path(url.removeprefix("sqlite:///"))):
                time.sleep(0.5)  # opening RDBStorage while the search creates the schema races it (alembic_version)
                continue
            try:
                storage = storage or optuna.storages.RDBStorage(url)
            except sqlalchemy.exc.SQLAlchemyError:  # the search is creating the schema in this file right now
                time.sleep(0.5)
                continue
            try:
                study = optuna.load_study(study_name="tiny_search", storage=storage)
            except KeyError:  # not created yet
                time.sleep(0.5)
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.intermediate_values and "worker_pid" in t.user_attrs:
                    return t
                if runs is not None and "worker_pid" in t.user_attrs and _runs_with_epochs(runs) >= 2:
                    return t
            time.sleep(0.2)
    finally:
        if storage is not None:
            storage.engine.dispose()
    raise AssertionError("no trial reached its first fine-tuning epoch")


def _check_complete(url: str, killed: int, budget: int = TRIALS) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name="tiny_search", storage=storage).get_trials()
    storage.engine.dispose()
    assert [t.number for t in trials] == list(range(len(trials))), "trial numbers are not unique and contiguous"
    assert budget_used(trials) == budget
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget, [(t.number, t.state) for t in trials]
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and "fail_reason" not in dead.user_attrs
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS_ATTR)]
    assert len(failed) == 1  # nothing else lost (a surplus trial, started in a race for the last place, is no loss)
    return trials


def _runs_with_epochs(runs: Path) -> int:
    """Run folders whose state records at least one epoch (canonical's and any trial's)."""
    found = 0
    for state in runs.glob("*/state.json"):
        try:
            found += bool(json.loads(state.read_text()).get("history"))
        except (OSError, ValueError):  # being written
            continue
    return found


def _check_no_epoch_twice(runs: Path) -> None:
    for state in runs.glob("*/state.json"):
        history = json.loads(state.read_text())["history"]
        for stage in {h["stage"] for h in history}:
            epochs = [h["epoch"] for h in history if h["stage"] == stage and "reused" not in h]
            assert epochs == sorted(set(epochs)), f"{state}: {stage} epochs {epochs}"


def test_a_driven_search_is_served_by_workers_on_two_machines_and_survives_a_killed_one(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """``crmlab search --storage URL --jobs 0`` trains nothing; ``crmlab worker --jobs 2`` on one "machine" and
    ``crmlab worker`` on another (their own working and temporary folders) sample and train its trials. A worker
    process SIGKILLed mid-trial loses its lease: the trial is retried with the same parameters by another one, and
    the trial count is exact."""
    url = postgres_server.create_database("search_workers")
    runs, mlflow_db = tmp_path / "runs", tmp_path / "mlflow.db"
    args = ["--storage", url, "--jobs", "0", "--set", f"trials={TRIALS}", *SHORT]
    args += ["--runs-dir", str(runs), "--tracking-uri", f"sqlite:///{mlflow_db}"]
    driver = subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = []
    for i, jobs in enumerate(("2", "1")):
        home = tmp_path / f"machine{i}"
        (home / "tmp").mkdir(parents=True)
        env = {**os.environ, "TMPDIR": str(home / "tmp")}
        cmd = [sys.executable, "-m", "crmlab.cli", "worker", "--storage", url, "--jobs", jobs, "--exit-when-idle", "60"]
        workers.append(subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        victim = _wait_for_running_trial(url, driver)
        pid = victim.user_attrs["worker_pid"]
        assert pid not in (driver.pid, *(w.pid for w in workers[:1])), "a worker process trains, not a driver"
        os.kill(pid, signal.SIGKILL)
        out, _ = driver.communicate(timeout=900)
    finally:
        driver.kill()
        for w in workers:
            w.terminate()  # the study is done: each hands back nothing and leaves
        logs = [w.communicate(timeout=60)[0].decode() for w in workers]
    assert driver.returncode == 0, out + "\n".join(logs)
    assert "trial" in out and "canonical" in out
    trials = _check_complete(url, victim.number)
    pids = {t.user_attrs["worker_pid"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(pids) >= 2, "\n".join(logs)
    _check_no_epoch_twice(runs)
    client = MlflowClient(f"sqlite:///{mlflow_db}")
    exp = client.get_experiment_by_name("tiny_search")
    statuses = [r.info.status for r in client.search_runs([exp.experiment_id], max_results=1000)]
    assert "RUNNING" not in statuses


def test_a_killed_search_resumes_when_run_again(tmp_path: Path) -> None:
    """A multi-objective search (r against parameter count): the same resume as a single-objective one (the
    served-worker test above kills a single-objective search)."""
    runs, mlflow_db = tmp_path / "runs", tmp_path / "mlflow.db"
    storage = f"sqlite:///{runs / 'optuna.db'}"
    args = ["--set", f"trials={RESUME_TRIALS}", *SHORT, "--runs-dir", str(runs)]
    args += ["--set", "objectives=[{metric: val_pearson_r}, {metric: params}]"]
    args += ["--tracking-uri", f"sqlite:///{mlflow_db}", "-q"]
    proc = subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = _wait_for_running_trial(storage, proc, runs=runs)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    again = subprocess.run(_command(*args), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = _check_complete(storage, victim.number, RESUME_TRIALS)
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in trials if t.state == TrialState.COMPLETE)
    _check_no_epoch_twice(runs)
    client = MlflowClient(f"sqlite:///{mlflow_db}")
    exp = client.get_experiment_by_name("tiny_search")
    runs_logged = client.search_runs([exp.experiment_id], max_results=1000)
    assert "RUNNING" not in [r.info.status for r in runs_logged]
    parents = [r for r in runs_logged if r.data.tags.get("crmlab.kind") == "search"]
    assert len(parents) == 1  # the killed invocation's parent run was reopened, not duplicated
