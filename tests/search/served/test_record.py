"""The set-ups a worker refuses at start, each in one line naming what to fix (no training, no database)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from crmlab.registry import CrmlabError
from crmlab.search.served import MARKER, Record, check_record, code_fingerprint
from crmlab.search.served._record import check_locking, file_hash, filesystem_type, runs_marker
from crmlab.search.storage import redact

BACKEND = "tensorflow"


@pytest.fixture
def record(tmp_path: Path) -> Record:
    study = tmp_path / "study.yaml"
    study.write_text("kind: ablation\n")
    runs = tmp_path / "runs"
    return Record(
        kind="ablation",
        name="tiny",
        study_path=str(study),
        study_hash=file_hash(study),
        overrides=[],
        parameters={"canonical": 10},
        runs_dir=str(runs),
        runs_id=runs_marker(runs, create=True),
        tracking_uri="http://127.0.0.1:5000",
        parent_run_id="abc",
        code=code_fingerprint(BACKEND),
        backend=BACKEND,
        driver_host=socket.gethostname(),
        storage_scheme="postgresql",
        heartbeat_interval=30,
    )


def _refusal(record: Record) -> str:
    with pytest.raises(CrmlabError) as info:
        check_record(record, "crmlab-ablation:k", BACKEND)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_drivers_own_set_up_is_accepted_and_the_marker_is_written_once(record: Record) -> None:
    check_record(record, "crmlab-ablation:k", BACKEND)
    assert runs_marker(Path(record.runs_dir), create=True) == record.runs_id
    assert (Path(record.runs_dir) / MARKER).read_text() == record.runs_id


def test_sqlite_stores_are_refused_on_another_host(record: Record) -> None:
    remote = dataclasses.replace(record, driver_host="elsewhere", storage_scheme="sqlite")
    assert "need a PostgreSQL storage" in _refusal(remote)
    local_mlflow = dataclasses.replace(record, driver_host="elsewhere", tracking_uri="sqlite:///mlflow.db")
    assert "need a tracking server" in _refusal(local_mlflow)
    check_record(dataclasses.replace(record, driver_host="elsewhere"), "s", BACKEND)  # PostgreSQL + server: fine


def test_another_runs_folder_is_refused(record: Record, tmp_path: Path) -> None:
    other = tmp_path / "other-runs"
    assert "has no marker" in _refusal(dataclasses.replace(record, runs_dir=str(other)))
    runs_marker(other, create=True)
    message = _refusal(dataclasses.replace(record, runs_dir=str(other)))
    assert "another folder" in message and "same path on every machine" in message


def test_other_code_and_a_changed_study_file_are_refused(record: Record) -> None:
    assert "differs from the driver's" in _refusal(dataclasses.replace(record, code="0" * 16))
    Path(record.study_path).write_text("kind: ablation\nname: changed\n")
    assert "changed (or is missing)" in _refusal(record)


def test_passwords_never_appear(record: Record) -> None:
    assert redact("postgresql+psycopg2://crm:s3cret@db.lab:5432/crmlab") == (
        "postgresql+psycopg2://crm:***@db.lab:5432/crmlab"
    )
    assert "s3cret" not in redact("http://user:s3cret@mlflow.lab:5000")


def test_a_runs_folder_without_working_locks_is_refused(record: Record, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def no_locks(fd: object, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    check_locking(Path(record.runs_dir))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert "flock fails on" in _refusal(record) and "not nolock" in _refusal(record)
    assert filesystem_type(Path("/")) != ""
