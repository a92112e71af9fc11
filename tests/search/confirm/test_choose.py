"""Which trials a confirmation takes (``--top K``, ``--trials N ...``), the confirmed study it writes, the seeds it
numbers past the selection seed, and the winner's curse column; no training."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crmlab.confirm_cmd import seeds_pair
from crmlab.registry import CrmlabError, yamlio
from crmlab.search.ablation import REFERENCE, all_seeds, load_ablation
from crmlab.search.arch import Goal, Pick, TrialRow, load_search, mark_front
from crmlab.search.confirm import (
    ConfirmedScore,
    choose_trials,
    confirmation_path,
    fresh_seeds,
    scores_markdown,
    write_confirmation,
)
from tests.search.conftest import ROOT

TINY_SEARCH = ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml"


def _search(direction: str = "maximize", *costs: str) -> Any:
    """A search's name and objectives: Pearson r in ``direction``, then the ``costs`` (minimised)."""
    goals = [Goal(metric="val_pearson_r", direction=direction), *(Goal(metric=c) for c in costs)]
    return SimpleNamespace(doc=SimpleNamespace(name="s"), goals=goals)


def _row(number: int, state: str, r: float | None, params: int = 0, key: str = "", feasible: bool = True) -> TrialRow:
    values = {"val_pearson_r": r, "params": float(params)} if state == "complete" and r is not None else {}
    costs = {"params": float(params)} if params else {}
    return TrialRow(number, state, r, {}, values=values, costs=costs, feasible=feasible, run_key=key or str(number))


ROWS = [
    _row(0, "complete", 0.50, 300),
    _row(1, "pruned", 0.90),
    _row(2, "complete", 0.70, 900, key="b"),
    _row(3, "complete", 0.70, 200),
    _row(4, "failed", None),
    _row(5, "complete", 0.70, 900, key="b"),  # trial 2's configuration again: the same run
    _row(6, "complete", 0.95, 5000, feasible=False),  # over a limit: never chosen
]


def test_top_ranks_complete_feasible_distinct_trials_by_the_first_objective_and_trials_keeps_the_order_given() -> None:
    assert [r.number for r in choose_trials(_search(), ROWS, top=3)] == [2, 3, 0]  # equal values: trial order
    assert [r.number for r in choose_trials(_search("minimize"), ROWS, top=1)] == [0]
    assert [r.number for r in choose_trials(_search(), ROWS, trials=[3, 0, 3])] == [3, 0]


def test_pick_ranks_the_trials_meeting_its_conditions_and_pareto_takes_the_front() -> None:
    cheap = Pick("max val_pearson_r where params <= 500", "max", "val_pearson_r", (("params", "<=", 500.0),))
    assert [r.number for r in choose_trials(_search(), ROWS, top=2, pick=cheap)] == [3, 0]
    smallest = Pick("min params", "min", "params")
    assert [r.number for r in choose_trials(_search(), ROWS, top=1, pick=smallest)] == [3]
    search = _search("maximize", "params")
    rows = [replace(r) for r in ROWS]
    mark_front(rows, search.goals)  # r up, params down: 3 (0.70, 200) dominates 0 and 2; 6 is infeasible
    assert [r.number for r in choose_trials(search, rows, pareto=True)] == [3]
    assert [r.number for r in choose_trials(search, rows, top=1)] == [2]  # the first objective; 2 before 5 (merged)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"top": 4}, "--top 4: search 's' has 3 distinct trial(s) complete and feasible; use --top 3"),
        (
            {
                "top": 1,
                "pick": Pick("max val_pearson_r where params < 1", "max", "val_pearson_r", (("params", "<", 1),)),
            },
            "--top 1: search 's' has 0 distinct trial(s) meeting 'max val_pearson_r where params < 1'",
        ),
        ({"trials": [0], "pick": Pick("min params", "min", "params")}, "--pick: ranks the trials --top takes"),
        ({"pareto": True}, "--pareto: search 's' has no complete, feasible trial"),  # the front was never marked
        ({"trials": [0, 7]}, "--trials 7: search 's' has no trial 7 (complete: 0, 2, 3, 5, 6)"),
        ({"trials": [1]}, "--trials 1: trial 1 is pruned, not complete (complete: 0, 2, 3, 5, 6)"),
        ({}, "crmlab confirm: give one of --top K, --pareto or --trials N"),
    ],
)
def test_an_impossible_choice_is_one_line(choice: dict, message: str) -> None:
    with pytest.raises(CrmlabError, match="^" + re.escape(message)):
        choose_trials(_search(), ROWS, **choice)


def test_seeds_take_initial_and_max() -> None:
    assert seeds_pair("3") == (3, 3) and seeds_pair("2:6") == (2, 6)
    for bad in ("1", "4:3", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            seeds_pair(bad)


@pytest.fixture(scope="module")
def tiny_search() -> Any:
    return load_search(TINY_SEARCH, assemble=False)


def test_the_confirmed_study_is_an_ablation_of_the_trials_patches_on_seeds_past_the_selection_seed(
    tiny_search: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search, runs = tiny_search, tmp_path / "runs"
    chosen = [
        SimpleNamespace(number=5, state="complete", value=0.6, params={"transformer": False, "kernel_size": 7}),
        SimpleNamespace(number=2, state="complete", value=0.5, params={"pretraining": False, "kernel_size": 3}),
    ]
    seeds = fresh_seeds(search, chosen, 2, 4)
    assert (seeds.first, all_seeds(seeds)) == (search.canonical[1].seed + 1, [1, 2, 3, 4])
    assert confirmation_path(search, runs) == TINY_SEARCH.with_name("tiny_search.confirm.yaml")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # the search's folder is not writable
    path = write_confirmation(search, chosen, seeds, runs)
    monkeypatch.undo()
    assert path == runs / "_confirm" / "tiny_search.confirm.yaml"
    doc = yamlio.load(path)
    assert doc["controls"] == {"replicate": True} and doc["seeds"] == {"initial": 2, "max": 4, "first": 1}
    ablation = load_ablation(path, assemble=False)  # its data and graph paths were made relative to its folder
    assert [v.name for v in ablation.variants] == [REFERENCE, "control", "trial_5", "trial_2"]
    for row in chosen:  # each variant trains exactly the trial's model and recipe (on its own seeds)
        trial, variant = search.variant(row.params), ablation.variant(f"trial_{row.number}")
        assert variant.graph.to_dict() == trial.graph.to_dict() and variant.recipe == trial.recipe


def test_the_winners_curse_is_how_much_the_search_score_flattered_the_trial() -> None:
    up = ConfirmedScore("trial_3", 3, 0.80, {1: 0.70, 2: 0.74}, {"native": "undecided"})
    down = ConfirmedScore("trial_4", 4, 0.20, {1: 0.30, 2: 0.26}, sign=-1.0)  # a minimised objective (a loss)
    assert up.curse == pytest.approx(0.08) and down.curse == pytest.approx(0.08)
    text = scores_markdown([up], "val_pearson_r", [0])
    assert "| trial_3 | 3 | 0.8000 | 0.7200 ± 0.0283 | 2 | 0.0800 | native: undecided |" in text
