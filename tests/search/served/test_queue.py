"""``crmlab queue``: the served studies of a storage with their runs by state; draining and cancelling a study (an
SQLite storage stands for the shared one: no training, no server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from crmlab.cli import main
from crmlab.search.served import Record, cancel_study, drain_study, queue_rows, queue_text, serve

RECORD = Record(
    kind="ablation",
    name="tiny",
    study_path="/shared/tiny.yaml",
    study_hash="0" * 16,
    overrides=[],
    parameters={},
    runs_dir="/shared/runs",
    runs_id="x",
    tracking_uri=None,
    parent_run_id=None,
    code="0" * 16,
    backend="tensorflow",
    driver_host="driver",
    storage_scheme="sqlite",
    heartbeat_interval=30,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A storage with one served study: runs a (finished), b (running on gpu1), c and d (waiting), and a study that
    is not served."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(storage=url, study_name="crmlab-ablation:abc")
    study.set_user_attr("crmlab.served", dataclasses.asdict(RECORD))
    for key in "abcd":
        study.enqueue_trial({}, user_attrs={"crmlab.run_key": key, "crmlab.variant": "no_se", "crmlab.seed": 0})
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    storage.set_trial_state_values(trials[0]._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(trials[0]._trial_id, TrialState.COMPLETE, values=[0.5])
    storage.set_trial_state_values(trials[1]._trial_id, TrialState.RUNNING)
    storage.set_trial_user_attr(trials[1]._trial_id, "crmlab.host", "gpu1:42")
    optuna.create_study(storage=url, study_name="someone else's")
    return url


def test_the_queue_counts_each_served_studys_runs_by_state(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = queue_rows(url)
    assert (row.name, row.optuna_name, row.drained) == ("tiny", "crmlab-ablation:abc", False)
    assert dict(row.counts) == {"finished": 1, "running": 1, "waiting": 2}
    assert row.running[0].startswith("no_se seed=0 on gpu1:42 for ")
    assert main(["queue", "--storage", url]) == 0
    assert "| tiny | crmlab-ablation:abc | 2 | 1 | 1 | 0 |" in capsys.readouterr().out
    assert queue_text([]) == "no served studies in this storage"


def test_a_drained_study_is_not_served_and_a_cancelled_one_fails_its_waiting_runs(url: str) -> None:
    assert drain_study(url, "tiny") == "crmlab-ablation:abc"
    assert serve(url, exit_when_idle=0, log=lambda _: None) == 0  # nothing claimed: the study is drained
    (row,) = queue_rows(url)
    assert row.drained and row.counts["waiting"] == 2
    assert cancel_study(url, "crmlab-ablation:abc") == ("crmlab-ablation:abc", 2)
    (row,) = queue_rows(url)
    assert dict(row.counts) == {"finished": 1, "running": 1, "failed": 2}


def test_an_unknown_study_is_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "--storage", url, "--drain", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study 'nope': 0 served studies match" in err
