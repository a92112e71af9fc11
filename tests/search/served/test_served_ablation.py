"""An adaptive ablation served to two machines on one CPU: a driver with ``--jobs 0`` and two ``crmlab worker``
processes with their own working and temporary folders, on the session's real PostgreSQL server, a real ``mlflow
server`` and a shared runs folder.

The runs folder is a copy of the suite's trained tiny ablation with two seed-1 runs (and their cached pretraining
stages) removed, and the study (canonical and no_transformer) is made adaptive (``seeds: {initial: 2, max: 3}``)
under another name (a new MLflow experiment and parent run): the workers train the two removed runs of the first
look, the driver decides, and the undecided variant gets seed 2, with canonical, in a second look. On one CPU a
run's result is a function of its run key, so the first look's runs must equal the one-process study's to the last
digit, and the study run locally with ``--jobs 2`` afterwards gives the same runs and verdict table. On the way the
first worker is SIGKILLed after its run's first checkpoint, PostgreSQL is restarted, and the
driver is SIGKILLed and started again: the other worker resumes the killed run from its checkpoint once its lease
runs out, and nothing is trained twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from crmlab.runners.rundir import stage_keys
from crmlab.search.ablation import load_ablation
from crmlab.search.served import ablation_run_key, study_name
from tests.mlflow_server import MlflowServer
from tests.pg import PostgresServer
from tests.search.conftest import TINY_ABLATION, TrainedAblation

pytestmark = pytest.mark.xdist_group("tiny_ablation")

REMOVED = [("no_transformer", 1), ("canonical", 1)]
STUDY = ["variants={}", "leave_one_out=[transformer]", "seeds={initial: 2, max: 3}", "name=tiny_served"]
"""Canonical and no_transformer (two of the trained tiny ablation's graphs), adaptive, under a name of its own."""
LIMIT_S = 300
HEARTBEAT_S = 2  # a worker silent for 4 heartbeats (8 s) loses its run


def _crmlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "crmlab.cli", *args]


def _machine(folder: Path) -> dict[str, object]:
    """``Popen`` arguments of a process on its own "machine": its own working and temporary folders."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMLAB_")}
    env.update(TMPDIR=str(folder / "tmp"), CRMLAB_CACHE=str(folder / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    return {"cwd": folder, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}


def _until(what: str, check: Callable[[], object], procs: list[subprocess.Popen[str]]) -> object:
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"a process ended while waiting for {what}: {p.args}\n{p.communicate()[0]}"
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception:  # the server is restarting
        return []
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    except Exception:
        return []
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_two_workers_train_a_driven_adaptive_ablation_through_kills_and_a_database_restart(
    tiny_ablation: TrainedAblation, postgres_server: PostgresServer, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("served_ablation")
    runs = tmp_path / "runs"
    shutil.copytree(tiny_ablation.runs, runs)
    ablation = load_ablation(TINY_ABLATION, STUDY, assemble=False)
    keys = {}
    for name, seed in REMOVED:
        keys[(name, seed)] = ablation_run_key(ablation, name, seed)
        shutil.rmtree(runs / keys[(name, seed)])
        v = ablation.variant(name)
        pretrain = stage_keys(v.graph, ablation.run_recipe(name, seed), ablation.datasets, 1)[0]
        shutil.rmtree(runs / "_stages" / pretrain, ignore_errors=True)  # the run trains 2 stages: a checkpoint between
    sets = [a for o in STUDY for a in ("--set", o)]
    drive = _crmlab(
        "ablate", str(TINY_ABLATION), *sets, "--storage", url, "--jobs", "0", "--runs-dir", str(runs),
        "--tracking-uri", mlflow_server.url, "--heartbeat", str(HEARTBEAT_S),
    )  # fmt: skip
    serve = _crmlab("worker", "--storage", url, "--exit-when-idle", "60")
    study = study_name(ablation)
    started = time.monotonic()
    driver = subprocess.Popen(drive, **_machine(tmp_path / "driver"))
    first = subprocess.Popen(serve, **_machine(tmp_path / "machine0"))
    procs = [driver, first]
    try:
        claimed = _until(
            "the first worker's claim",
            lambda: [t for t in _trials(url, study) if f":{first.pid}" in t.user_attrs.get("crmlab.host", "")],
            procs,
        )
        second = subprocess.Popen(serve, **_machine(tmp_path / "machine1"))
        procs.append(second)
        killed_key = claimed[0].user_attrs["crmlab.run_key"]
        state = runs / killed_key / "state.json"
        _until("the first checkpoint", lambda: state.exists() and json.loads(state.read_text())["stage"] >= 1, procs)
        first.send_signal(signal.SIGKILL)
        first.wait()
        postgres_server.restart()
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        driver = subprocess.Popen(drive, **_machine(tmp_path / "driver"))
        procs = [driver, second]
        out, _ = driver.communicate(timeout=LIMIT_S)
        took = time.monotonic() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        logs = [p.communicate(timeout=60)[0] or "" for p in procs if p is not driver]
    assert driver.returncode == 0, out + "\n".join(logs)
    assert "look 2: undecided variants get another seed" in out, out
    print(f"two workers, two looks, a kill, a database restart, a driver restart: {took:.1f} s")

    trials = _trials(url, study)
    look = {n: [t for t in trials if t.user_attrs["crmlab.look"] == n] for n in (1, 2)}
    complete = sorted(t.user_attrs["crmlab.run_key"] for t in look[1] if t.state == TrialState.COMPLETE)
    assert complete == sorted(keys.values()), [(t.number, t.state, t.user_attrs) for t in trials]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["crmlab.run_key"] for t in failed] == [killed_key], "only the killed run failed, once"
    (retried,) = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["crmlab.run_key"] == killed_key]
    assert retried.user_attrs["crmlab.resumed_from"].startswith("stage 1"), retried.user_attrs
    assert f":{second.pid}" in retried.user_attrs["crmlab.host"]
    second_look = {(t.user_attrs["crmlab.variant"], t.user_attrs["crmlab.seed"]) for t in look[2]}
    assert second_look and all(seed == 2 for _, seed in second_look) and ("canonical", 2) in second_look
    assert all(t.state == TrialState.COMPLETE for t in look[2])
    decided = max(t.datetime_complete for t in look[1])
    assert min(t.number for t in look[2]) > max(t.number for t in look[1])
    assert all(t.datetime_start >= decided for t in look[2]), "the second look was enqueued before the first ended"
    assert len({t.user_attrs["crmlab.run_key"] for t in trials}) == len(trials) - 1, "no run trained twice"

    for (name, seed), key in keys.items():  # the first look: the one-process study's runs, to the last digit
        result = json.loads((runs / key / "result.json").read_text())
        assert result["test_metrics"] == tiny_ablation.results[(name, seed)].test_metrics, (name, seed)
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("tiny_served")
    children = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''", max_results=100)
    trained = sorted((r.data.tags["crmlab.variant"], int(r.data.tags["crmlab.seed"])) for r in children)
    assert trained == sorted([*keys, *second_look]), "one MLflow run per trained run key"
    assert {r.info.status for r in children} == {"FINISHED"}

    again = subprocess.run(drive, **{**_machine(tmp_path / "driver"), "timeout": LIMIT_S})
    assert again.returncode == 0, again.stdout
    assert "in the queue" not in again.stdout, "a finished study enqueues nothing"
    assert len(_trials(url, study)) == len(trials)

    # the same study run locally with --jobs 2 (its first look is the trained tiny ablation's): the same run keys,
    # each run's results to the last digit, and the same verdict table
    local = tmp_path / "local"
    shutil.copytree(tiny_ablation.runs, local)
    alone = _crmlab("ablate", str(TINY_ABLATION), *sets, "--jobs", "2", "--runs-dir", str(local), "--no-mlflow")
    done = subprocess.run(alone, **{**_machine(tmp_path / "alone"), "timeout": LIMIT_S})
    assert done.returncode == 0, done.stdout
    served_keys = {t.user_attrs["crmlab.run_key"] for t in trials} | {
        ablation_run_key(ablation, name, seed) for name in ("canonical", "no_transformer") for seed in (0, 1)
    }
    for key in served_keys:
        ours, theirs = (json.loads((folder / key / "result.json").read_text()) for folder in (runs, local))
        assert ours["test_metrics"] == theirs["test_metrics"] and ours["validation"] == theirs["validation"], key
    (table,) = (runs / "_studies").glob("tiny_served-*/verdicts.csv")
    assert table.read_text() == (local / "_studies" / table.parent.name / "verdicts.csv").read_text()
