"""Every malformed input in :mod:`tests.reliability.cases` fails through the CLI with one line, exit code 2 and no
traceback, before anything is created: no run folder in ``--runs-dir``, no MLflow run in ``--tracking-uri`` and no
Optuna storage (``optuna.db``) anywhere in the workspace. Rows with a ``known_bug`` are strict ``xfail``s."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from crmlab.cli import main
from crmlab.search.served import MARKER
from tests.reliability.cases import CASES, SERVED, Case
from tests.reliability.workspace import (
    check_one_line_error,
    crmlab_command,
    edit_yaml,
    make_workspace,
    mlflow_runs,
    publish_served,
    run_dirs,
    write_files,
)

IN_SUBPROCESS = ("data-non-acgtn", "runs-dir-is-a-file", "verbose-out-of-range", "search-storage-unknown-scheme")
PARAMS = [
    pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)] if c.known_bug else [])
    for c in CASES
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CRMLAB_RUNS", raising=False)
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    return make_workspace(tmp_path)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case that gets as far as training has slipped through validation: fail at once instead of training."""
    import keras

    def fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation let this input through: training started")

    monkeypatch.setattr(keras.Model, "fit", fit)


def prepare(case: Case, root: Path) -> list[str]:
    """Break the workspace as the case says; return the CLI arguments (writing to ``root/runs``, ``root/mlflow.db``)."""
    write_files(root, case.files)
    if case.command == "worker":
        return _prepare_worker(case, root)
    if case.edits:
        edit_yaml(root / case.target, case.edits)
    args = [case.command, str(root / case.target)]
    if case.command != "build":
        if "--runs-dir" not in case.flags:
            args += ["--runs-dir", str(root / "runs")]
        if "--tracking-uri" not in case.flags and case.command != "compare":
            args += ["--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    if case.command == "train":
        args += ["--verbose", "0"]
    return args + list(case.flags)


def _prepare_worker(case: Case, root: Path) -> list[str]:
    """``crmlab worker`` on an SQLite storage where a driver of ``studies/ablation.yaml`` published the served study
    (its record replaced as the case says), with the study file edited afterwards as the case says."""
    args = ["worker", "--exit-when-idle", "0", *case.flags]
    if "--storage" not in case.flags:
        url = f"sqlite:///{root / 'served.db'}"
        publish_served(root, url, SERVED, **case.served)
        args += ["--storage", url]
    if case.edits:
        edit_yaml(root / case.target, case.edits)
    return args


def expected_prefix(case: Case, root: Path) -> str:
    if case.command == "worker" or case.where.startswith(("--", "crmlab ")):
        return case.where
    return f"{root}/{case.where}"


def check_nothing_written(root: Path) -> None:
    for runs in (root / "runs", root / "runsfile"):
        assert not [p for p in run_dirs(runs) if runs.is_dir()], f"written under {runs}: {run_dirs(runs)}"
    shared = root / "shared_runs"  # a served study's runs folder: the driver's marker only
    assert [p.name for p in run_dirs(shared)] in ([], [MARKER]), f"written under {shared}: {run_dirs(shared)}"
    assert not mlflow_runs(root / "mlflow.db"), "an MLflow run was created"
    assert not list(root.rglob("optuna.db")), f"an Optuna storage was created: {list(root.rglob('optuna.db'))}"


def test_catalogue_is_large_and_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert {c.command for c in CASES} >= {"train", "ablate", "compare", "build", "search", "worker"}
    assert sum(c.command == "search" for c in CASES) >= 15
    assert set(IN_SUBPROCESS) <= set(names)
    assert not any(CASES[names.index(n)].known_bug for n in IN_SUBPROCESS)


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: Case, workspace: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = prepare(case, workspace)
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse
        rc = exc.code
    except Exception as exc:  # an escaping exception is what this catalogue exists to catch
        pytest.fail(f"crmlab {case.command} raised {type(exc).__name__}: {exc}")
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}; stderr:\n{err[-3000:]}"
    assert "Traceback" not in out
    check_one_line_error(err, expected_prefix(case, workspace), case.message)
    check_nothing_written(workspace)


@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_bad_input_in_a_real_process(name: str, workspace: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    args = prepare(case, workspace)
    proc = subprocess.run([*crmlab_command(), *args], cwd=workspace, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stdout
    check_one_line_error(proc.stderr, expected_prefix(case, workspace), case.message)
    check_nothing_written(workspace)
