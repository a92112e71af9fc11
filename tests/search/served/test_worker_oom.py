"""A served run that runs out of GPU memory goes back to the queue marked exclusive: a worker sharing its GPU
leaves it to one that has its GPU alone, which trains it; a second out-of-memory failure is the run's failure."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from crmlab.search.ablation import load_ablation
from crmlab.search.served import Record, ablation_run_key, code_fingerprint, serve
from crmlab.search.served._record import file_hash, runs_marker
from crmlab.search.served._worker import EXCLUSIVE_ATTR
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES

OOM = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"


@pytest.fixture
def queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An SQLite storage with a served tiny ablation and one run enqueued; training it runs out of memory."""
    import crmlab.search.ablation as ablation_package

    def out_of_memory(args: tuple[object, ...]) -> None:
        raise RuntimeError(OOM)

    monkeypatch.setattr(ablation_package, "run_task", out_of_memory)
    runs = tmp_path / "runs"
    backend = "tensorflow"
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES, assemble=False)
    record = Record(
        kind="ablation",
        name="tiny_ablation",
        study_path=str(TINY_ABLATION),
        study_hash=file_hash(TINY_ABLATION),
        overrides=TINY_OVERRIDES,
        parameters={v.name: 0 for v in ablation.variants},
        runs_dir=str(runs),
        runs_id=runs_marker(runs, create=True),
        tracking_uri=None,
        parent_run_id=None,
        code=code_fingerprint(backend),
        backend=backend,
        driver_host=socket.gethostname(),
        storage_scheme="sqlite",
        heartbeat_interval=30,
    )
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(storage=url, study_name="crmlab-ablation:tiny")
    study.set_user_attr("crmlab.served", dataclasses.asdict(record))
    key = ablation_run_key(ablation, "no_transformer", 0)
    attrs = {"crmlab.run_key": key, "crmlab.variant": "no_transformer", "crmlab.seed": 0, "crmlab.look": 1}
    study.enqueue_trial({}, user_attrs=attrs)
    monkeypatch.setenv("KERAS_BACKEND", backend)
    return url


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="crmlab-ablation:tiny", storage=url).get_trials()


def test_a_worker_sharing_its_gpu_leaves_an_out_of_memory_run_to_another(
    queued: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMLAB_PLACEMENT", json.dumps({"index": 0, "gpus": ["0"], "share": 2}))
    assert serve(queued, exit_when_idle=0, log=lambda _: None) == 0
    first, again = _trials(queued)
    assert first.state == TrialState.FAIL and first.user_attrs["crmlab.error"] == f"out of memory: {OOM}"
    assert again.state == TrialState.WAITING and again.user_attrs[EXCLUSIVE_ATTR] is True
    assert again.user_attrs["crmlab.run_key"] == first.user_attrs["crmlab.run_key"]


def test_a_worker_with_its_gpu_alone_takes_it_and_a_second_failure_is_final(
    queued: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRMLAB_PLACEMENT", raising=False)
    assert serve(queued, exit_when_idle=0, log=lambda _: None) == 1
    first, again = _trials(queued)
    assert [first.state, again.state] == [TrialState.FAIL, TrialState.FAIL]
    assert again.user_attrs[EXCLUSIVE_ATTR] is True and again.user_attrs["crmlab.error"] == OOM
