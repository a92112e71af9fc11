"""Which trials a confirmation takes (``--top K``, ``--trials N ...``), the confirmed study it writes, the seeds it
numbers past the selection seed, and the winner's curse column; no training."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crmlab.confirm_cmd import seeds_pair
from crmlab.registry import CrmlabError, yamlio
from crmlab.search.ablation import REFERENCE, all_seeds, load_ablation
from crmlab.search.arch import load_search
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


def _search(direction: str = "maximize") -> Any:
    return SimpleNamespace(doc=SimpleNamespace(name="s", objective=SimpleNamespace(direction=direction)))


ROWS = [
    SimpleNamespace(number=0, state="complete", value=0.50, params={}),
    SimpleNamespace(number=1, state="pruned", value=0.90, params={}),
    SimpleNamespace(number=2, state="complete", value=0.70, params={}),
    SimpleNamespace(number=3, state="complete", value=0.70, params={}),
    SimpleNamespace(number=4, state="failed", value=None, params={}),
]


def test_top_ranks_complete_trials_by_the_objective_and_trials_keeps_the_order_given() -> None:
    assert [r.number for r in choose_trials(_search(), ROWS, top=3)] == [2, 3, 0]  # equal values: trial order
    assert [r.number for r in choose_trials(_search("minimize"), ROWS, top=1)] == [0]
    assert [r.number for r in choose_trials(_search(), ROWS, trials=[3, 0, 3])] == [3, 0]


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"top": 4}, "--top 4: search 's' has 3 complete trial(s); use --top 3"),
        ({"trials": [0, 7]}, "--trials 7: search 's' has no trial 7 (complete: 0, 2, 3)"),
        ({"trials": [1]}, "--trials 1: trial 1 is pruned, not complete (complete: 0, 2, 3)"),
        ({}, "crmlab confirm: give --top K or --trials N"),
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
