"""The search epilogue: parameter importances only once enough trials are complete; the leaderboard as a table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crmlab.search.arch import SearchOptions
from crmlab.search.arch._leaderboard import TrialRow, leaderboard_columns, trials_needed_for_importances
from crmlab.search.arch.backends import SearchBackend, SearchRun


class Weighing(SearchBackend):
    """A backend that only weighs: every parameter gets the same importance, and counts how often it was asked."""

    asked = 0

    def check_options(self, options: SearchOptions) -> None:
        pass

    def connect(self, search: Any, runs_dir: Path, options: SearchOptions) -> None:
        pass

    def run(self, search: Any, runs_dir: Path, options: SearchOptions) -> SearchRun:
        raise NotImplementedError

    def importances(self, search: Any, run: SearchRun) -> dict[str, float]:
        self.asked += 1
        return {"depth": 0.5, "filters": 0.5}


def summary(complete: int, parameters: int) -> tuple[str, int]:
    rows = [TrialRow(i, "complete", 0.5 + i / 100, {"depth": i}) for i in range(complete)]
    rows += [TrialRow(complete, "pruned", None, {}), TrialRow(complete + 1, "failed", None, {})]
    objective = SimpleNamespace(metric="val_pearson_r", direction="maximize")
    search = SimpleNamespace(
        doc=SimpleNamespace(objective=objective),
        space=list(range(parameters)),
        multi=False,
        metric=objective.metric,
        direction=objective.direction,
    )
    backend = Weighing()
    text = backend.summary(search, SearchRun(rows, {"value": 0.5}, None))  # type: ignore[arg-type]
    return text, backend.asked


@pytest.mark.parametrize(("parameters", "needed"), [(1, 10), (3, 10), (4, 12), (8, 24)])
def test_trials_needed_grow_with_the_parameters(parameters: int, needed: int) -> None:
    assert trials_needed_for_importances(parameters) == needed


def test_too_few_trials_print_no_importances() -> None:
    text, asked = summary(complete=4, parameters=2)
    assert asked == 0 and "fANOVA" not in text
    assert text.splitlines()[-1] == (
        "parameter importances: too few complete trials to tell parameters apart (4; at least 10: max(10, 3 per"
        " searched parameter))"
    )


def test_enough_trials_print_importances() -> None:
    text, asked = summary(complete=12, parameters=4)
    assert asked == 1 and "parameter importances (fANOVA):" in text and "depth" in text.split("fANOVA")[1]


def test_the_leaderboard_table_has_a_row_per_trial_in_trial_order_and_a_column_per_parameter() -> None:
    rows = [
        TrialRow(2, "failed", None, {"transformer": False}, reason="diverged"),
        TrialRow(0, "complete", 0.5, {"transformer": True, "num_heads": 2}, epochs=2),
        TrialRow(1, "pruned", 0.25, {"transformer": False}, epochs=1),
    ]
    assert leaderboard_columns(rows) == {
        "number": [0, 1, 2],
        "state": ["complete", "pruned", "failed"],
        "value": [0.5, 0.25, None],
        "epochs": [2, 1, 0],
        "transformer": [True, False, False],
        "num_heads": [2, None, None],
    }
