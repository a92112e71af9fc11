"""The driver's side of a served ablation without training: its record, what a second driver with other settings
is told while runs are waiting, and the run keys it enqueues (an SQLite storage stands for the shared one)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from crmlab.registry import CrmlabError
from crmlab.search.ablation import Ablation, load_ablation
from crmlab.search.served import QueueDriver, Record, study_name
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES


@pytest.fixture(scope="module")
def ablation() -> Ablation:
    """The tiny ablation, loaded (not assembled) once for the module."""
    return load_ablation(TINY_ABLATION, TINY_OVERRIDES, assemble=False)


def test_a_second_driver_with_other_settings_is_refused_while_runs_wait(ablation: Ablation, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    first = QueueDriver(url, ablation, tmp_path / "runs", None, heartbeat=5)
    study = first.study(parent_id=None)
    record = Record.from_attr(study.user_attrs["crmlab.served"])
    assert (record.kind, record.name, record.runs_dir) == ("ablation", ablation.doc.name, str(tmp_path / "runs"))
    assert study.study_name == study_name(ablation) and (tmp_path / "runs" / ".crmlab-runs-id").exists()

    again = QueueDriver(url, ablation, tmp_path / "runs", None, heartbeat=5)
    assert again.study(parent_id=None).study_name == study.study_name  # the same set-up picks the study up

    study.enqueue_trial({}, user_attrs={"crmlab.run_key": "k", "crmlab.variant": "canonical", "crmlab.seed": 0})
    other = QueueDriver(url, ablation, tmp_path / "other-runs", None, heartbeat=5)
    with pytest.raises(CrmlabError) as info:
        other.study(parent_id=None)
    message = str(info.value)
    assert "served with other settings (runs_dir, runs_id)" in message and "1 waiting or running" in message
    assert "\n" not in message
    assert len(optuna.load_study(study_name=study.study_name, storage=url).trials) == 1
