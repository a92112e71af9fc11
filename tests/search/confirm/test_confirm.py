"""``crmlab confirm`` on a finished tiny search (2 trials): the top 2 trials against canonical with the A/A control on
fresh seeds; a second confirmation trains nothing; the report sets search score against confirmed score.

The search is the tiny ablation's model, data and recipe with the space ``{transformer, pretraining}`` (each a bool),
run in a copy of the shared tiny ablation's runs folder (``tests/search/conftest.py``: canonical, the A/A control,
no_transformer and no_pretraining under seeds 0 and 1). Runs are keyed by what they train, so the search and the
confirmation reuse those that match and train only the others: the scenario stays cheap while every rule is checked
on real runs.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

import crmlab.runners.training._train
from crmlab.cli import main
from crmlab.registry import yamlio
from crmlab.search.ablation import all_seeds, collect, load_ablation
from tests.search.conftest import TINY_ABLATION, TrainedAblation

# One pytest-xdist process runs this module and the tiny ablation's other users, which train it once.
pytestmark = pytest.mark.xdist_group("tiny_ablation")


def _run_keys(runs: Path) -> set[str]:
    """The finished run folders of a runs folder."""
    return {p.parent.name for p in runs.glob("*/result.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_ablation: TrainedAblation) -> dict:
    """The search, 2 grid trials of ``{transformer, pretraining}`` on the tiny ablation's base, run through the CLI
    from a writable folder (so the confirmed study is written beside it) in a copy of the tiny ablation's runs."""
    tmp = tmp_path_factory.mktemp("confirm")
    base = yamlio.load(TINY_ABLATION)
    doc = {
        "kind": "search",
        "name": "tiny_confirm",
        "graph": str(TINY_ABLATION.with_name(base["graph"])),
        "data": base["data"],
        "test_sets": base["test_sets"],
        "recipe": base["recipe"],
        "trials": 2,
        "optuna": {"sampler": "grid", "pruner": "none"},
        "space": {"transformer": {"type": "bool"}, "pretraining": {"type": "bool"}},
    }
    for source in [*doc["data"].values(), *doc["test_sets"].values()]:
        source["path"] = str((TINY_ABLATION.parent / source["path"]).resolve())
    study = tmp / "studies" / "tiny_confirm.yaml"
    study.parent.mkdir()
    study.write_text(yamlio.dumps(doc))
    runs = tmp / "runs"
    shutil.copytree(tiny_ablation.runs, runs)
    assert main(["search", str(study), "--runs-dir", str(runs), "--no-mlflow", "-q"]) == 0
    optuna_study = optuna.load_study(study_name="tiny_confirm", storage=f"sqlite:///{runs / 'optuna.db'}")
    return {"study": study, "runs": runs, "optuna": optuna_study, "uri": tiny_ablation.uri}


def _confirm(finished: dict, *extra: str) -> int:
    args = ["confirm", str(finished["study"]), "--runs-dir", str(finished["runs"]), "--tracking-uri", finished["uri"]]
    return main([*args, "--top", "2", "--seeds", "2", *extra])


def test_confirm_trains_fresh_seeds_once_and_reports_search_against_confirmed_score(
    finished: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, study = finished["runs"], finished["optuna"]
    before = _run_keys(runs)
    assert _confirm(finished) == 0
    out = capsys.readouterr().out
    confirmed = finished["study"].with_name("tiny_confirm.confirm.yaml")
    ablation = load_ablation(confirmed, assemble=False)  # a normal ablation study, as crmlab ablate runs it
    names = [v.name for v in ablation.variants]
    trials = sorted(study.trials, key=lambda t: (-t.value, t.number))
    assert names == ["canonical", "control", *(f"trial_{t.number}" for t in trials)]

    # fresh seeds: the search selected on recipe.seed 0; the confirmation's runs are seeds 1 and 2, none a search run
    assert all_seeds(ablation.doc.seeds) == [1, 2] and ablation.doc.controls.replicate
    results, missing = collect(ablation, runs)
    assert not missing and {s for _, s in results} == {1, 2}
    used = {r.run_key for r in results.values()}
    selection = {t.user_attrs["run_key"] for t in trials} | {study.user_attrs["crmlab.canonical"]["run_key"]}
    assert not used & selection
    assert _run_keys(runs) - before <= used  # whatever trained is a confirmation run

    # one verdict per confirmed trial (and the control) and test set
    report = Path(out.split("report: ")[1].split()[0])
    with open(report.with_name("verdicts.csv")) as fh:
        verdicts = [(r["variant"], r["test_set"]) for r in csv.DictReader(fh)]
    assert sorted(verdicts) == sorted((n, "native") for n in names[1:])

    # search score (Optuna's value: the selection seed) against confirmed score (mean validation over fresh seeds)
    with open(report.with_name("confirmation.csv")) as fh:
        scores = {r["variant"]: r for r in csv.DictReader(fh)}
    assert list(scores) == ["canonical", *names[2:]]
    for t in trials:
        row = scores[f"trial_{t.number}"]
        fresh = [results[(f"trial_{t.number}", s)].validation["val_pearson_r"] for s in (1, 2)]
        assert float(row["search"]) == pytest.approx(t.value) and row["seeds"] == "2"
        assert float(row["confirmed_mean"]) == pytest.approx(sum(fresh) / 2)
        assert float(row["winners_curse"]) == pytest.approx(t.value - sum(fresh) / 2)
    text = report.read_text()
    assert "## Search score against confirmed score (the winner's curse)" in text
    assert f"| trial_{trials[0].number} | {trials[0].number} | {trials[0].value:.4f} |" in text
    assert "winner's curse" in out and f"confirmed study: {confirmed}" in out

    # MLflow: the ablation's parent run, with its verdicts and each trial's search and confirmed scores
    client = MlflowClient(finished["uri"])
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("tiny_confirm_confirm").experiment_id], "tags.`crmlab.kind` = 'ablation'"
    )
    for t in trials:
        assert parent.data.tags[f"crmlab.verdict.trial_{t.number}.native"] in (
            "helps",
            "hurts",
            "equivalent",
            "undecided",
        )
        curse = parent.data.metrics[f"trial_{t.number}.winners_curse"]
        assert curse == pytest.approx(float(scores[f"trial_{t.number}"]["winners_curse"]))

    # run again: every run is finished, nothing trains
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a confirmation run was trained again")

    monkeypatch.setattr(crmlab.runners.training._train, "_train_stages", no_training)
    finished_runs = _run_keys(runs)
    assert _confirm(finished) == 0
    assert _run_keys(runs) == finished_runs
    # the front of a single-objective search is its best trial, confirmed above: nothing trains either
    best = trials[0]
    args = ["confirm", str(finished["study"]), "--runs-dir", str(runs), "--pareto", "--seeds", "2", "--no-mlflow"]
    assert main(args) == 0
    assert _run_keys(runs) == finished_runs
    assert list(yamlio.load(confirmed)["variants"]) == [f"trial_{best.number}"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top", "5"], "--top 5: search 'tiny_confirm' has 2 distinct trial(s) complete and feasible; use --top 2"),
        (
            ["--trials", "0", "--pick", "min val_pearson_r"],
            "--pick: ranks the trials --top takes; with --trials, leave it out",
        ),
        (
            ["--top", "1", "--pick", "max params"],
            "--pick: 'params' is not an objective or cost of tiny_confirm (val_pearson_r)",
        ),
        (["--trials", "0", "9"], "--trials 9: search 'tiny_confirm' has no trial 9 (complete: 0, 1)"),
    ],
)
def test_an_impossible_choice_is_one_line_before_anything_trains(
    finished: dict, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["confirm", str(finished["study"]), "--runs-dir", str(finished["runs"]), "--no-mlflow", *extra]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("recipe.batch_size=32", "study 'tiny_confirm' in sqlite:///"),
        ("backend=keras_tuner", "backend: keras_tuner: only Optuna searches keep their trials in a storage"),
    ],
)
def test_another_search_under_the_name_or_a_keras_tuner_search_is_one_line(
    finished: dict, override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["confirm", str(finished["study"]), "--runs-dir", str(finished["runs"]), "--set", override, "--top", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_search_that_never_ran_is_one_line(
    finished: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["confirm", str(finished["study"]), "--runs-dir", str(tmp_path / "runs"), "--top", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has not run with sqlite:///" in err and "run crmlab search" in err
    assert not (tmp_path / "runs" / "optuna.db").exists()
