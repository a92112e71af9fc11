"""``crmlab search`` end to end on tiny real data: Optuna and KerasTuner on one space, MLflow layout, pruning,
failed trials, resume, export, bad storage; the multi-worker PostgreSQL test is in test_search_postgres.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from crmlab.cli import main
from crmlab.runners.rundir import data_hashes, run_key
from crmlab.runners.studyfile import load_train_study
from crmlab.search.arch import _optuna_space as optuna_space
from crmlab.search.arch import _optuna_study as optuna_study
from crmlab.search.arch import load_search
from crmlab.search.arch._trial import run_trial
from crmlab.search.arch.backends import _optuna as optuna_backend

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml"

# One pytest-xdist process runs this module and test_pareto.py, so the trained search (conftest.py: optuna_search)
# is trained once.
pytestmark = pytest.mark.xdist_group("tiny_search")


def _child_runs(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tiny_search")
    return client.search_runs([exp.experiment_id], max_results=1000)


def _study(storage: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny_search", storage=f"sqlite:///{storage}")


def test_optuna_search_runs_every_trial_once_and_reports(
    optuna_search: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert optuna_search["code"] == 0
    study = _study(optuna_search["tmp"] / "optuna.db")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        # inactive parameters are not sampled: num_heads exists exactly when the transformer is on
        assert ("num_heads" in t.params) == t.params["transformer"]
        assert len(t.intermediate_values) == t.user_attrs["epochs"] == 2  # every fine-tuning epoch reported
        # the exported model's validation r: the restored best epoch's, recomputed in float64
        assert t.value == pytest.approx(max(t.intermediate_values.values()), abs=1e-4)
        assert set(t.user_attrs["deltas"]) >= {"delta.native.pearson_r", "delta.native.r2"}
    canonical = study.user_attrs[optuna_study.CANONICAL_ATTR]
    assert set(canonical["tests"]["native"]) >= {"pearson_r", "spearman_rho", "r2", "mse"}


def test_mlflow_has_a_parent_run_and_a_child_per_trial_with_active_params_and_deltas(optuna_search: dict) -> None:
    tmp = optuna_search["tmp"]
    runs = _child_runs(tmp / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("crmlab.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    children = {r.data.tags["crmlab.trial"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert set(children) == {"canonical", "trial 0", "trial 1", "trial 2", "trial 3"}
    study = _study(tmp / "optuna.db")
    for t in study.get_trials():
        run = children[f"trial {t.number}"]
        assert run.info.status == "FINISHED" and run.data.tags["crmlab.trial_state"] == "complete"
        logged = {k.removeprefix("trial."): v for k, v in run.data.params.items() if k.startswith("trial.")}
        assert logged == {k: str(v) for k, v in t.params.items()}
        deltas = t.user_attrs["deltas"]
        assert run.data.metrics["delta.native.pearson_r"] == pytest.approx(deltas["delta.native.pearson_r"])
    assert parents[0].data.metrics["best.val_pearson_r"] == pytest.approx(study.best_value)


def test_export_writes_a_train_study_with_the_best_trials_run_key(optuna_search: dict) -> None:
    tmp = optuna_search["tmp"]
    study = _study(tmp / "optuna.db")
    exported = tmp / "out" / "best.yaml"
    assert exported.exists() and (tmp / "out" / "best.graph.yaml").exists()
    loaded = load_train_study(exported)
    hashes = {k: d.content_hash for k, d in sorted({**loaded.datasets, **loaded.tests}.items())}
    assert run_key(loaded.graph, loaded.study.recipe, hashes) == study.best_trial.user_attrs["run_key"]


def test_register_puts_the_best_trials_model_in_the_registry_and_the_parent_run_has_the_leaderboard_table(
    optuna_search: dict, runs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    tmp = optuna_search["tmp"]
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    study = _study(tmp / "optuna.db")
    best = study.best_trial
    key = best.user_attrs["run_key"]
    version = MlflowClient(uri).get_model_version("tiny_best", "1")
    assert version.tags["crmlab.kind"] == "search" and version.tags["crmlab.study"] == "tiny_search"
    assert version.tags["crmlab.trial"] == str(best.number) and version.tags["crmlab.run_key"] == key
    assert version.run_id == json.loads((runs / key / "result.json").read_text())["mlflow_run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/tiny_best/1")  # read back from the registry, scores sequences
    sequences = pd.read_csv(ROOT / "tests" / "fixtures" / "data" / "native_head200.tsv", sep="\t")["seq"][:8]
    got = model.predict(pd.DataFrame({"sequence": sequences}))
    np.testing.assert_allclose(got, np.load(runs / key / "predictions_native.npy")[:8], rtol=1e-5, atol=0)

    (parent,) = [r for r in _child_runs(tmp / "mlflow.db") if r.data.tags.get("crmlab.kind") == "search"]
    assert parent.data.tags["crmlab.best_trial"] == str(best.number)
    logged = MlflowClient(uri).download_artifacts(parent.info.run_id, "leaderboard.json", str(tmp_path))
    doc = json.loads(Path(logged).read_text())  # MLflow's table format: columns and rows
    table = pd.DataFrame(doc["data"], columns=doc["columns"])
    trials = {t.number: t for t in study.get_trials()}
    assert table["number"].tolist() == sorted(trials) and set(table["state"]) == {"complete"}
    assert table["value"].tolist() == pytest.approx([trials[n].value for n in table["number"]])
    assert table["kernel_size"].tolist() == [trials[n].params["kernel_size"] for n in table["number"]]


def test_rerun_resumes_the_study_and_trains_only_new_trials(optuna_search: dict, runs: Path) -> None:
    mtimes = {p: p.stat().st_mtime for p in runs.glob("*/result.json")}
    assert main([*optuna_search["args"], "--set", "trials=5"]) == 0
    study = _study(optuna_search["tmp"] / "optuna.db")
    assert [t.number for t in study.get_trials()] == [0, 1, 2, 3, 4]
    assert {p: p.stat().st_mtime for p in runs.glob("*/result.json") if p in mtimes} == mtimes


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = "space={recipe.schedule.peak: {type: choice, values: [0.001, 1.0e+9]}}"
    storage = tmp_path / "optuna.db"
    args = ["search", str(TINY), "--set", space, "--set", "trials=2", "--set", "optuna.sampler=grid"]
    args += ["--runs-dir", str(runs), "--storage", f"sqlite:///{storage}", "--no-mlflow"]
    assert main(args) == 0
    trials = {t.params["recipe.schedule.peak"]: t for t in _study(storage).get_trials()}
    assert trials[0.001].state == TrialState.COMPLETE
    assert trials[1e9].state == TrialState.FAIL
    assert "diverged" in trials[1e9].user_attrs["fail_reason"] or "not finite" in trials[1e9].user_attrs["fail_reason"]
    out = capsys.readouterr().out
    assert "1 complete, 0 pruned, 1 failed" in out and f"failed trial {trials[1e9].number}:" in out


def test_a_pruned_trial_is_recorded_pruned_with_its_partial_curve(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = load_search(TINY, ["trials=2", "optuna.sampler=random", "recipe.stages.1.epochs=3"], assemble=False)
    # a pruner that stops every trial after its first fine-tuning epoch (r is never above 2)
    monkeypatch.setattr(optuna_study, "make_pruner", lambda _: optuna.pruners.ThresholdPruner(lower=2.0))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study, rows, _ = optuna_backend.run_optuna(search, runs, storage, uri, progress=lambda _: None)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(list(t.intermediate_values) == [1] for t in trials)
    assert [r.state for r in rows] == ["pruned", "pruned"]
    children = [
        r for r in _child_runs(tmp_path / "mlflow.db") if r.data.tags.get("crmlab.trial", "").startswith("trial")
    ]
    assert len(children) == 2
    for run in children:
        assert run.info.status == "KILLED" and run.data.tags["crmlab.trial_state"] == "pruned"
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "finetune.val_pearson_r")
        assert len(history) == 1  # the partial curve: one fine-tuning epoch

    # a pruned trial never resumes: its state is dropped at once; the same configuration sampled again starts over
    values = dict(trials[0].params)
    spec = search.variant(values)
    run = runs / run_key(spec.graph, spec.recipe, data_hashes(search.datasets, search.tests))
    state = json.loads((run / "state.json").read_text())
    assert state["pruned"] and state["history"] == [] and not list(run.glob("ckpt-*"))
    again = run_trial(search, values, runs, label="resampled")
    assert again.state == "complete" and again.result is not None
    assert [h["epoch"] for h in again.result.history if h["stage"] == "finetune"] == [1, 2, 3]


def test_keras_tuner_runs_the_same_space(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", str(TINY), "--set", "backend=keras_tuner", "--set", "trials=2", "--runs-dir", str(runs)]
    args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trials: 2 (2 complete, 0 pruned, 0 failed)" in out
    search = load_search(TINY, ["backend=keras_tuner", "trials=2"], assemble=False)
    outcomes = next(runs.glob("_keras_tuner/tiny_search-*/crmlab_outcomes.json"))
    recorded = json.loads(outcomes.read_text())
    assert len(recorded) == 2
    for o in recorded.values():
        assert o["state"] == "complete" and o["epochs"] == 2
        assert ("num_heads" in o["params"]) == o["params"]["transformer"]
        assert set(o["params"]) <= {p.key for p in search.space}
    children = [
        r for r in _child_runs(tmp_path / "mlflow.db") if r.data.tags.get("crmlab.trial", "").startswith("trial")
    ]
    assert len(children) == 2 and all(r.data.tags["crmlab.trial_state"] == "complete" for r in children)


def test_keras_tuner_hyperband_pauses_and_continues_runs(tmp_path: Path) -> None:
    space = "space={transformer: {type: bool}, kernel_size: {type: int, low: 3, high: 7, step: 4}}"  # 4 graphs
    args = ["search", str(TINY), "--set", "backend=keras_tuner", "--set", "keras_tuner.tuner=hyperband"]
    # fine-tuning only (3 epochs): the pretraining stage adds nothing to what Hyperband's pausing is tested for
    args += ["--set", "recipe.stages=[{name: finetune, data: random_library, epochs: 3}]", "--set", space]
    args += ["--runs-dir", str(tmp_path / "runs"), "--no-mlflow", "-q"]
    assert main(args) == 0
    recorded = json.loads(next((tmp_path / "runs").glob("_keras_tuner/*/crmlab_outcomes.json")).read_text())
    paused = [o for o in recorded.values() if o["state"] == "pruned"]
    complete = [o for o in recorded.values() if o["state"] == "complete"]
    assert paused and complete  # budget-limited rounds, then full runs
    assert any(p["params"] == c["params"] for p in paused for c in complete), "no paused trial was continued"
    for path in (tmp_path / "runs").glob("*/state.json"):
        state = json.loads(path.read_text())
        epochs = [h["epoch"] for h in state["history"] if h["stage"] == "finetune"]
        assert epochs == list(range(1, len(epochs) + 1))  # continued runs resume their checkpoint: no epoch twice
        assert state["finished"] or state["pruned"], "a paused run the tuner did not continue is dropped at its end"
        assert not list(path.parent.glob("ckpt-*"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--storage", "nosuchdb://x"], "--storage: 'nosuchdb://x': use sqlite:///PATH"),
        (["--storage", "sqlite:////nonexistent/dir/optuna.db"], "--storage: cannot use sqlite:////nonexistent"),
        (["--export", "best.txt"], "--export: best.txt: write the study to a .yaml file"),
        (["--set", "space.kernel_size.low=9"], "--set: space.kernel_size: high (7) is below low (9)"),
        (["--set", "backend=keras_tuner", "--jobs", "2"], "--jobs: only with backend: optuna"),
    ],
)
def test_bad_flags_are_one_line_errors_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str
) -> None:
    def built(*args: object) -> None:
        raise AssertionError("a model was built before the flags were checked")

    monkeypatch.setattr("crmlab.search.arch._study._assemble_all", built)  # flags first: building takes seconds
    runs = tmp_path / "runs"
    args = ["search", str(TINY), "--runs-dir", str(runs), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not runs.exists() and not (tmp_path / "m.db").exists()


def test_a_changed_search_under_the_same_name_is_refused(
    optuna_search: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*optuna_search["args"], "--set", "space={kernel_size: {type: int, low: 3, high: 7}}", "--no-mlflow"]
    assert main(args) == 2
    assert "holds a different search" in capsys.readouterr().err


def test_the_shipped_quick_study_declares_its_space_on_both_backends() -> None:
    from crmlab.search.arch.backends._kerastuner import declare

    search = load_search(ROOT / "studies" / "quick_search.yaml", ["trials=1"], assemble=False)
    keys = [p.key for p in search.space]
    assert set(optuna_space.distributions(search.space)) == set(keys)
    assert {h.name for h in declare(search.space).space} == set(keys)  # every parameter declared on KerasTuner too


@pytest.mark.slow
def test_the_shipped_quick_study_runs_on_both_backends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """studies/quick_search.yaml itself (real data, crmnet_small), cut to one short trial per backend (7 min)."""
    study = ROOT / "studies" / "quick_search.yaml"
    short = ["--set", "trials=1", "--set", "recipe.stages.0.epochs=1", "--set", "recipe.stages.1.epochs=1"]
    common = [*short, "--runs-dir", str(tmp_path / "runs"), "--no-mlflow", "-q"]
    keys = [p.key for p in load_search(study, ["trials=1"], assemble=False).space]
    for backend in ("optuna", "keras_tuner"):
        assert main(["search", str(study), "--set", f"backend={backend}", *common]) == 0
        assert "trials: 1 (1 complete, 0 pruned, 0 failed)" in capsys.readouterr().out
    trial = _study_at(tmp_path / "runs" / "optuna.db", "quick_search").get_trials()[0]
    assert set(trial.params) <= set(keys) and ("num_heads" in trial.params) == trial.params["transformer"]
    recorded = json.loads(next((tmp_path / "runs").glob("_keras_tuner/*/crmlab_outcomes.json")).read_text())
    (kt,) = recorded.values()
    assert set(kt["params"]) <= set(keys) and ("num_heads" in kt["params"]) == kt["params"]["transformer"]


def _study_at(storage: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_crmlab_dashboard_serves_the_study_history_and_pruning_values(optuna_search: dict) -> None:
    """``crmlab dashboard`` in a subprocess: optuna-dashboard's HTTP API on loopback lists the search and its trials,
    each with the per-epoch intermediate values that pruning used."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    storage = f"sqlite:///{optuna_search['tmp'] / 'optuna.db'}"
    cmd = [sys.executable, "-m", "crmlab.cli", "dashboard", str(TINY), "--storage", storage, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, studies = time.monotonic() + 120, None
        while studies is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard never answered"
        (found,) = [s for s in studies if s["study_name"] == "tiny_search"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{found['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    trials = detail["trials"]  # 4, or 5 once the module's rerun test has added one
    expected = _study(optuna_search["tmp"] / "optuna.db").get_trials()
    assert [t["number"] for t in trials] == [t.number for t in expected] and len(trials) >= 4
    assert {t["state"] for t in trials} == {"Complete"}
    assert all(len(t["intermediate_values"]) == 2 for t in trials), "one value per fine-tuning epoch"


def test_crmlab_dashboard_points_keras_tuner_searches_to_mlflow(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(TINY), "--set", "backend=keras_tuner", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "keeps no Optuna storage for optuna-dashboard" in err and "mlflow ui" in err and "\n" not in err
