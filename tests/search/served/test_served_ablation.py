"""An ablation served to two machines on one CPU: a driver with ``--jobs 0`` and two ``crmlab worker`` processes with
their own working and temporary folders, on the session's real PostgreSQL server and a shared runs folder.

The runs folder is a copy of the suite's trained tiny ablation with two runs removed, so the workers train just those
two (one each) and the comparison can be checked against the one trained in one process: on one CPU a run's result
is a function of its run key, so the table must be the same to the last digit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from crmlab.search.ablation import load_ablation, table_text
from crmlab.search.served import ablation_run_key, study_name
from tests.pg import PostgresServer
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES, TrainedAblation

pytestmark = pytest.mark.xdist_group("tiny_ablation")

REMOVED = [("no_transformer", 1), ("no_pretraining", 1)]
LIMIT_S = 300


def _crmlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "crmlab.cli", *args]


def _env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMLAB_")}
    env.update(TMPDIR=str(home), CRMLAB_CACHE=str(home / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _env_home(folder: Path) -> Path:
    """A machine's own working folder (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_two_workers_train_a_driven_ablation_to_the_local_result(
    tiny_ablation: TrainedAblation, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("served_ablation")
    runs = tmp_path / "runs"
    shutil.copytree(tiny_ablation.runs, runs)
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES, assemble=False)
    keys = {}
    for name, seed in REMOVED:
        keys[(name, seed)] = ablation_run_key(ablation, name, seed)
        shutil.rmtree(runs / keys[(name, seed)])
    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    driver = subprocess.Popen(
        _crmlab(
            "ablate",
            str(TINY_ABLATION),
            *sets,
            "--storage",
            url,
            "--jobs",
            "0",
            "--runs-dir",
            str(runs),
            "--no-mlflow",
            "--heartbeat",
            "1",
        ),
        cwd=tmp_path,
        env=_env(tmp_path / "driver"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers = [
        subprocess.Popen(
            _crmlab("worker", "--storage", url, "--exit-when-idle", "20"),
            cwd=_env_home(tmp_path / f"machine{i}"),
            env=_env(tmp_path / f"machine{i}" / "tmp"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        out, _ = driver.communicate(timeout=LIMIT_S)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        logs = [w.communicate(timeout=60)[0] for w in workers]
    assert driver.returncode == 0, out + "\n".join(logs)
    assert table_text(tiny_ablation.rows) in out, out

    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=study_name(ablation), storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["crmlab.run_key"] for t in trials) == sorted(keys.values())
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    hosts = {t.user_attrs["crmlab.host"] for t in trials}
    assert len(hosts) == 2, f"both workers should have trained one run each: {hosts}\n" + "\n".join(logs)
    for key in keys.values():
        assert (runs / key / "state.json").exists()
    storage.remove_session()

    again = subprocess.run(
        _crmlab(
            "ablate", str(TINY_ABLATION), *sets, "--storage", url, "--jobs", "0", "--runs-dir", str(runs), "--no-mlflow"
        ),
        cwd=tmp_path,
        env=_env(tmp_path / "driver"),
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert again.returncode == 0, again.stderr
    assert "in the queue" not in again.stdout, "a finished study enqueues nothing"
    assert len(optuna.load_study(study_name=study_name(ablation), storage=url).trials) == 2
