"""A search's results as text and on its MLflow parent run: the leaderboard (also a table, ``leaderboard.json``), the
parameter importances and the summary metrics (canonical, best trial, trial counts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crmlab.runners.tracking import Tracker

__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCES",
    "TRIALS_PER_PARAMETER",
    "TrialRow",
    "best_row",
    "complete_trials",
    "importances_text",
    "leaderboard_columns",
    "leaderboard_text",
    "log_summary",
    "short_value",
    "too_few_trials_text",
    "trials_needed_for_importances",
]


@dataclass
class TrialRow:
    """One line of the leaderboard.

    ``value`` is the objective a single-objective leaderboard ranks by (the search's first validation-metric objective,
    :attr:`~crmlab.search.arch._study.Search.metric`); ``values`` every objective's (metric -> value, in the search's
    order; one entry for a single-objective search) of a complete trial; ``costs`` the costs measured before training;
    ``feasible`` whether the trial met every constraint; ``run_key`` and ``mlflow_run_id`` its run; ``pareto`` whether
    it is on the Pareto front (:func:`crmlab.search.arch._pareto.mark_front`); ``same`` the numbers of later trials
    merged into this row (the same run key).
    """

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int = 0
    deltas: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    values: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    feasible: bool = True
    run_key: str = ""
    mlflow_run_id: str = ""
    pareto: bool = False
    same: list[int] = field(default_factory=list)

    @property
    def measured(self) -> dict[str, float]:
        """Every number measured of the trial: its costs and its objective values (metric -> value)."""
        return {**self.costs, **self.values}


def best_row(rows: Sequence[TrialRow], direction: str) -> TrialRow | None:
    """The complete trial with the best objective in ``direction`` (the first of equals), or ``None``."""
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    if not done:
        return None
    sign = 1 if direction == "maximize" else -1
    return max(done, key=lambda r: sign * r.value)  # type: ignore[operator]


def short_value(value: Any) -> str:
    """A parameter value for a one-line listing: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def leaderboard_text(
    rows: Sequence[TrialRow], metric: str, direction: str, canonical: float | None, top: int = 10
) -> str:
    """The best ``top`` trials (complete first, by objective), with canonical's value for reference.

    A trial and canonical are trained with one seed each, so their difference carries no interval: the table says
    so instead of treating it as an effect (an ablation with seeds gives one, :mod:`crmlab.search.ablation._stats`).
    """
    scored = [r for r in rows if r.state == "complete" and r.value is not None]
    scored.sort(key=lambda r: r.value if direction == "minimize" else -r.value)  # type: ignore[operator]
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed")}
    lines = [
        f"trials: {len(rows)} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed)"
        + (f"; canonical {metric} = {canonical:.4f}" if canonical is not None else "")
    ]
    header = f"{'#':>4} {'trial':>6} {metric:>14} {'vs canonical':>13} {'epochs':>6}  params"
    lines.append(header)
    for i, r in enumerate(scored[:top], start=1):
        delta = f"{r.value - canonical:+.4f}" if canonical is not None and r.value is not None else ""
        params = ", ".join(f"{k}={short_value(v)}" for k, v in r.params.items())
        lines.append(f"{i:>4} {r.number:>6} {r.value:>14.4f} {delta:>13} {r.epochs:>6}  {params}")
    for r in rows:
        if r.state == "failed":
            lines.append(f"failed trial {r.number}: {r.reason}")
    if canonical is not None and scored:
        lines.append(
            "vs canonical: one seed each, so training noise is not estimated and no difference here is significant;"
            " confirm a trial against canonical with seeds in an ablation (crmlab ablate, its variants: a patch)"
        )
    return "\n".join(lines)


MIN_TRIALS_FOR_IMPORTANCES = 10
"""Fewest complete trials before parameter importances are printed, whatever the number of parameters."""
TRIALS_PER_PARAMETER = 3
"""Complete trials needed per searched parameter before importances are printed."""


def trials_needed_for_importances(parameters: int) -> int:
    """Complete trials needed before fANOVA importances over ``parameters`` searched parameters mean anything.

    fANOVA fits a random forest from the parameters to the objective and splits its variance by parameter. With a
    handful of trials the forest sees one or two values of each parameter, and trial-to-trial training noise (seed
    noise of the objective is of the same size as many parameter effects) decides which parameter gets the
    variance. The threshold, ``max(10, 3 x parameters)``, gives the forest at least three trials per parameter and
    ten in all, the fewest at which a parameter's effect can stand apart from one lucky trial; below it crmlab says
    there are too few instead of printing numbers.
    """
    return max(MIN_TRIALS_FOR_IMPORTANCES, TRIALS_PER_PARAMETER * parameters)


def complete_trials(rows: Sequence[TrialRow]) -> int:
    """How many trials finished with an objective value."""
    return sum(r.state == "complete" and r.value is not None for r in rows)


def importances_text(importances: Mapping[str, float]) -> str:
    """Parameter importances (fANOVA, summing to 1) as a bar per parameter."""
    if not importances:
        return "parameter importances: not enough complete trials with shared parameters"
    width = max(len(k) for k in importances)
    return "parameter importances (fANOVA):\n" + "\n".join(
        f"  {k:<{width}} {v:6.3f} {'#' * round(v * 40)}" for k, v in importances.items()
    )


def too_few_trials_text(complete: int, needed: int) -> str:
    """The line printed instead of importances when fewer than ``needed`` trials are complete."""
    return (
        f"parameter importances: too few complete trials to tell parameters apart ({complete}; at least {needed}:"
        f" max({MIN_TRIALS_FOR_IMPORTANCES}, {TRIALS_PER_PARAMETER} per searched parameter))"
    )


def leaderboard_columns(rows: Sequence[TrialRow]) -> dict[str, list[Any]]:
    """Every trial as a table row, in trial order: ``number``, ``state``, ``value`` (the objective; ``None`` when the
    trial has none), ``epochs``, then one column per searched parameter (``None`` where a trial has no value: an
    inactive parameter)."""
    ordered = sorted(rows, key=lambda r: r.number)
    names = list(dict.fromkeys(k for r in ordered for k in r.params))
    columns: dict[str, list[Any]] = {
        "number": [r.number for r in ordered],
        "state": [r.state for r in ordered],
        "value": [r.value for r in ordered],
        "epochs": [r.epochs for r in ordered],
    }
    for name in names:
        columns[name] = [r.params.get(name) for r in ordered]
    return columns


def log_summary(
    tracker: Tracker, metric: str, direction: str, rows: Sequence[TrialRow], canonical: Mapping[str, Any]
) -> None:
    """Log canonical's and the best trial's objective and the trial counts on the search's parent run, and the
    leaderboard as the table ``leaderboard.json`` (:func:`leaderboard_columns`); tag the best trial
    (``crmlab.best_trial``)."""
    metrics = {f"canonical.{metric}": canonical["value"]}
    best = best_row(rows, direction)
    if best is not None:
        metrics[f"best.{metric}"] = best.value
        tracker.set_tags({"crmlab.best_trial": str(best.number)})
    tracker.log_metrics(
        {**metrics, **{f"trials.{s}": sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed")}}
    )
    tracker.log_table(leaderboard_columns(rows), "leaderboard.json")
