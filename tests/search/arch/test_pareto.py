"""Multi-objective searches: objectives and constraints in the study key, refusals at load, the Pareto front against
Optuna's ``best_trials``, over-budget architectures rejected with zero epochs, ``--pick`` / ``--trial``, export and
register, the front on MLflow. The end-to-end searches reuse the runs of conftest.py's trained tiny search (same
sampler seed, same trials), so they train almost nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from crmlab.cli import main
from crmlab.registry import CrmlabError, SpecErrors
from crmlab.runners.rundir import digest
from crmlab.runners.studyfile import check_assembles, load_train_study
from crmlab.search.arch import (
    STEP_TIME_LOCK,
    Goal,
    TrialRow,
    check_choice,
    choose_trial,
    flops_per_sequence,
    load_search,
    mark_front,
    measure_costs,
    merged_rows,
    parse_pick,
    step_time_answer,
    trial_rows,
)

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml"
TWO = "objectives=[{metric: val_pearson_r}, {metric: params}]"
THREE = "objectives=[{metric: val_pearson_r}, {metric: params}, {metric: val_mse}]"

pytestmark = pytest.mark.xdist_group("tiny_search")


def _one_line(overrides: list[str]) -> str:
    with pytest.raises((CrmlabError, SpecErrors)) as error:
        load_search(TINY, overrides, assemble=False)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_single_objective_keeps_its_key_and_objectives_or_constraints_change_it() -> None:
    one = load_search(TINY, [], assemble=False)
    doc = one.doc
    data = {k: v.model_dump(mode="json") for k, v in {**doc.data, **doc.test_sets}.items()}
    assert one.key == digest(one.base_graph, doc.recipe, data, doc.space, {"metric": "val_pearson_r"})
    two = load_search(TINY, [TWO], assemble=False)
    keys = {
        one.key,
        two.key,
        load_search(TINY, [THREE], assemble=False).key,
        load_search(TINY, [TWO, "constraints.params.max=1000"], assemble=False).key,
        load_search(TINY, [TWO, "constraints.params.max=2000"], assemble=False).key,
    }
    assert len(keys) == 5
    assert two.multi and two.costs == ["params"] and two.metric == "val_pearson_r"
    assert [g.resolved for g in two.goals] == ["maximize", "minimize"]


def test_what_a_multi_objective_search_cannot_do_is_refused_in_one_line_at_load() -> None:
    assert "epoch pruning is single-objective" in _one_line([TWO, "optuna.pruner=median"])
    assert "cmaes does not support several objectives" in _one_line([TWO, "optuna.sampler=cmaes"])
    assert "keras_tuner sums objectives and has no Pareto front" in _one_line([TWO, "backend=keras_tuner"])
    assert "at least one objective must be a validation metric" in _one_line(["objectives=[{metric: params}]"])
    assert "is neither a validation metric" in _one_line(["objectives=[{metric: val_r}]"])
    search = load_search(TINY, [TWO, "optuna.sampler=nsga2"], assemble=False)
    assert search.doc.optuna.sampler == "nsga2"


def _study(directions: list[str], points: list[tuple[list[float], str]]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    study.set_metric_names(["val_pearson_r", "params", "val_mse"][: len(directions)])
    for values, key in points:
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"run_key": key}))
    return study


@pytest.mark.parametrize(
    ("directions", "points"),
    [
        (
            ["maximize", "minimize"],
            [([0.5, 100], "a"), ([0.6, 200], "b"), ([0.5, 100], "a"), ([0.4, 300], "c"), ([0.7, 200], "d")],
        ),
        (
            ["maximize", "minimize", "minimize"],
            [([0.5, 100, 1.0], "a"), ([0.6, 200, 0.5], "b"), ([0.6, 200, 0.5], "b"), ([0.4, 300, 2.0], "c")],
        ),
    ],
)
def test_the_front_is_optunas_best_trials_with_same_run_trials_merged(
    directions: list[str], points: list[tuple[list[float], str]]
) -> None:
    study = _study(directions, points)
    metrics = ["val_pearson_r", "params", "val_mse"][: len(directions)]
    goals = [Goal(metric=m, direction=d) for m, d in zip(metrics, directions, strict=True)]
    rows = trial_rows(study)
    front = mark_front(rows, goals)
    assert {r.number for r in front} == {t.number for t in study.best_trials}
    merged = [r for r in merged_rows(rows) if r.pareto]
    first_of_key = {}
    for t in sorted(study.best_trials, key=lambda t: t.number):
        first_of_key.setdefault(t.user_attrs["run_key"], t.number)
    assert [r.number for r in merged] == sorted(first_of_key.values())
    assert any(r.same for r in merged)  # a duplicate was merged into its first trial


def _rows() -> list[TrialRow]:
    return [
        TrialRow(0, "complete", 0.5, {}, values={"val_pearson_r": 0.5, "params": 900.0}, costs={"params": 900.0}),
        TrialRow(1, "complete", 0.7, {}, values={"val_pearson_r": 0.7, "params": 2000.0}, costs={"params": 2000.0}),
        TrialRow(2, "complete", 0.6, {}, values={"val_pearson_r": 0.6, "params": 1000.0}, costs={"params": 1000.0}),
        TrialRow(3, "pruned", None, {}, costs={"params": 5000.0}, feasible=False),
    ]


def test_pick_chooses_the_right_trial_and_nothing_feasible_is_one_line() -> None:
    search = load_search(TINY, [TWO, "constraints.params.max=3000"], assemble=False)
    rows = _rows()
    assert choose_trial(search, rows, parse_pick("max val_pearson_r where params <= 1e3", search), None).number == 2
    assert choose_trial(search, rows, parse_pick("max val_pearson_r", search), None).number == 1
    assert choose_trial(search, rows, parse_pick("min params where val_pearson_r > 0.55", search), None).number == 2
    assert choose_trial(search, rows, None, 0).number == 0
    for pick, trial, message in [
        ("max val_pearson_r where params <= 10", None, "^--pick: no complete, feasible trial of tiny_search meets"),
        (None, 3, "^--trial: trial 3 of tiny_search is pruned; choose a complete trial$"),
    ]:
        with pytest.raises(CrmlabError, match=message):
            choose_trial(search, rows, parse_pick(pick, search) if pick else None, trial)
    for bad, message in [
        ("best val_pearson_r", "^--pick: 'best val_pearson_r': write e.g."),
        ("max val_r2", "^--pick: 'val_r2' is not an objective or cost of tiny_search"),
        ("max params where params ~ 3", "^--pick: 'params ~ 3' is not METRIC OP NUMBER"),
    ]:
        with pytest.raises(CrmlabError, match=message):
            parse_pick(bad, search)
    with pytest.raises(CrmlabError, match=r"2 objectives have no single best trial; choose one .* --pick"):
        check_choice(search, None, None, wanted=True)


def test_params_are_exact_and_flops_grow_with_width() -> None:
    search = load_search(TINY, [TWO, "objectives=[{metric: val_pearson_r}, {metric: flops}]"], assemble=False)
    narrow = search.variant({"transformer": False, "kernel_size": 3, "pretraining": False})
    wide = search.variant({"transformer": False, "kernel_size": 7, "pretraining": False})
    import keras

    from crmlab.blocks.assemble import assemble

    exact = int(sum(keras.ops.size(w) for w in assemble(narrow.graph).weights))
    assert measure_costs(search, narrow, ["params"]).values["params"] == exact
    (small, large), counter = flops_per_sequence([narrow.graph_doc, wide.graph_doc])  # one JAX child process
    assert 0 < small < large
    assert counter.startswith("xla cost_analysis (jax ")


class _Stepper:
    """A model whose training steps take given durations on a fake clock."""

    def __init__(self, clock: list[float], durations: list[float]) -> None:
        self.clock, self.durations = clock, iter(durations)

    def train_on_batch(self, x: object, y: object) -> None:
        self.clock[0] += next(self.durations)


def test_step_time_is_the_median_of_timed_steps_as_a_ratio_to_canonical_with_the_load() -> None:
    clock = [0.0]
    warm = [9.0, 9.0]  # warm-up steps (compilation) are not timed
    trial = _Stepper(clock, [*warm, 0.3, 0.1, 0.2, 5.0, 0.2])
    canonical = _Stepper(clock, [*warm, 0.1, 0.1, 0.1, 0.1, 0.1])
    answer = step_time_answer([trial, canonical], (None, None), steps=5, warmup=2, clock=lambda: clock[0])
    assert answer["seconds"] == pytest.approx(0.2) and answer["canonical_seconds"] == pytest.approx(0.1)
    assert answer["ratio"] == pytest.approx(2.0) and answer["steps"] == 5 and answer["warmup"] == 2
    assert isinstance(answer["load"], float) and answer["pid"] == os.getpid()


@pytest.mark.slow  # a TensorFlow child process compiling two models: about 100 s on a loaded 2-core machine
def test_step_time_is_measured_in_a_separate_process_against_canonical(tmp_path: Path) -> None:
    search = load_search(TINY, ["objectives=[{metric: val_pearson_r}, {metric: step_time}]"], assemble=False)
    spec = search.variant({"transformer": False, "kernel_size": 3, "pretraining": False})
    costs = measure_costs(search, spec, ["step_time"], lock=tmp_path / "step.lock")
    info = costs.info
    assert info["step_time_pid"] != os.getpid() and (tmp_path / "step.lock").exists()
    assert costs.values["step_time"] == pytest.approx(info["step_seconds"] / info["canonical_step_seconds"])
    assert info["step_time_load"] >= 0 and STEP_TIME_LOCK.name == "crmlab-step-time.lock"


@pytest.fixture(scope="module")
def pareto(runs: Path, optuna_search: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """val_pearson_r against params on the tiny space, the largest trained architecture over budget: 3 trials, then
    resumed to 4 (the 4th repeats trial 0's configuration), exported and registered by --pick."""
    assert optuna_search["code"] == 0
    search = load_search(TINY, [TWO], assemble=False)
    trained = optuna.load_study(study_name="tiny_search", storage=f"sqlite:///{optuna_search['tmp'] / 'optuna.db'}")
    sizes = [check_assembles(search.variant(t.params).graph) for t in trained.trials[:3]]
    limit = max(sizes) - 1
    tmp = tmp_path_factory.mktemp("pareto")
    args = [
        "search",
        str(TINY),
        "--runs-dir",
        str(runs),
        "--storage",
        f"sqlite:///{tmp / 'optuna.db'}",
        "--tracking-uri",  # the trained search's store: its runs, reused here, hold the models to register
        f"sqlite:///{optuna_search['tmp'] / 'mlflow.db'}",
        "--set",
        "name=tiny_pareto",
        "--set",
        TWO,
        "--set",
        f"constraints.params.max={limit}",
    ]
    pick = f"max val_pearson_r where params <= {limit}"
    out = tmp / "out" / "best.yaml"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        first = main([*args, "--set", "trials=3"])
        more = ["--set", "trials=4", "--export", str(out), "--pick", pick, "--register", "tiny_pareto_best"]
        code = main([*args, *more])
    study = optuna.load_study(study_name="tiny_pareto", storage=f"sqlite:///{tmp / 'optuna.db'}")
    return {
        "tmp": tmp,
        "codes": (first, code),
        "limit": limit,
        "study": study,
        "out": out,
        "printed": printed.getvalue(),
        "uri": f"sqlite:///{optuna_search['tmp'] / 'mlflow.db'}",
    }


def test_an_over_budget_architecture_is_pruned_with_zero_epochs_and_never_on_the_front(
    pareto: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pareto["codes"] == (0, 0), pareto["printed"]
    study = pareto["study"]
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    assert rejected and all(t.state == TrialState.PRUNED and t.user_attrs["epochs"] == 0 for t in rejected)
    assert all(t.constraints["params"] > 0 and t.user_attrs["costs"]["params"] > pareto["limit"] for t in rejected)
    assert not {t.number for t in rejected} & {t.number for t in study.best_trials}
    assert all(t.system_attrs["constraints"] == [t.constraints["params"]] for t in rejected)  # optuna-dashboard 0.21
    assert len(study.trials) == 4 and study.metric_names == ["val_pearson_r", "params"]
    for t in rejected:  # the progress line says why
        assert f"trial {t.number}: pruned, params=" in pareto["printed"]
    assert f"> max {pareto['limit']:,}: rejected before training (0 epochs)" in pareto["printed"]


def test_the_printed_front_is_optunas_and_the_pick_is_exported_and_registered(pareto: dict) -> None:
    study = pareto["study"]
    search = load_search(TINY, [TWO, f"constraints.params.max={pareto['limit']}", "name=tiny_pareto"], assemble=False)
    rows = trial_rows(study, search)
    assert {r.number for r in rows if r.pareto} == {t.number for t in study.best_trials}
    # the 4th trial repeats trial 0's configuration (the resumed random sampler starts again): one merged row
    assert study.trials[3].params == study.trials[0].params
    merged = merged_rows(rows)
    assert 3 not in {r.number for r in merged} and next(r for r in merged if r.number == 0).same == [3]
    chosen = choose_trial(
        search, rows, parse_pick(f"max val_pearson_r where params <= {pareto['limit']}", search), None
    )
    feasible = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert chosen.values["val_pearson_r"] == max(t.values[0] for t in feasible)
    exported = load_train_study(pareto["out"])
    assert check_assembles(exported.graph) == chosen.costs["params"] == chosen.values["params"]
    client = MlflowClient(pareto["uri"])
    version = client.get_model_version("tiny_pareto_best", "1")
    assert version.tags["crmlab.trial"] == str(chosen.number) and version.tags["crmlab.pareto"] == "true"
    assert float(version.tags["objective.params"]) == chosen.values["params"]
    assert float(version.tags["objective.val_pearson_r"]) == pytest.approx(chosen.values["val_pearson_r"], rel=1e-5)
    exp = client.get_experiment_by_name("tiny_pareto")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("crmlab.kind") == "search")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "pareto_front.png"} <= names
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto_front.json")).read_text())
    columns = table["columns"]
    assert {"trial", "val_pearson_r", "params", "feasible", "pareto", "run_id"} <= set(columns)


def test_three_objectives_front_is_best_trials_and_the_same_seed_gives_the_same_front(
    runs: Path, pareto: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fronts = []
    for name in ("tiny_pareto3", "tiny_pareto3_again"):
        db = tmp_path / f"{name}.db"
        args = ["search", str(TINY), "--runs-dir", str(runs), "--storage", f"sqlite:///{db}", "--no-mlflow"]
        overrides = ["--set", f"name={name}", "--set", THREE, "--set", "trials=3", "--set", "optuna.pruner=null"]
        assert main([*args, *overrides]) == 0
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        search = load_search(TINY, [THREE, f"name={name}"], assemble=False)
        rows = trial_rows(study, search)
        assert {r.number for r in rows if r.pareto} == {t.number for t in study.best_trials}
        fronts.append(sorted((r.number, tuple(r.values.values())) for r in rows if r.pareto))
    assert fronts[0] == fronts[1]
    out = capsys.readouterr().out
    assert "3 objectives: no epoch pruning" in out and "Pareto front:" in out and "* Pareto-optimal" in out


def test_the_shipped_quick_pareto_study_loads_as_a_constrained_two_objective_search() -> None:
    search = load_search(ROOT / "studies" / "quick_pareto.yaml", assemble=False)
    assert [(g.metric, g.resolved) for g in search.goals] == [("val_pearson_r", "maximize"), ("params", "minimize")]
    assert search.multi and search.doc.optuna.sampler == "tpe" and search.doc.constraints["params"].max == 5.0e5
