"""The Pareto front of a multi-objective search: which trials are on it, the leaderboard with every objective, and
the front on the search's MLflow parent run (``pareto_front.json``, ``pareto_front.png``).

A trial is on the front when it is complete, feasible (every constraint met) and no other such trial is at least as
good in every objective and better in one: Optuna's ``study.best_trials``. Trials with the same run key (the same
configuration, trained once) are one row: the first trial's, naming the others.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from crmlab.runners.tracking import Tracker
from crmlab.search.arch._leaderboard import TrialRow, short_value
from crmlab.search.arch._schema import Goal

__all__ = ["front_columns", "front_plot", "log_front", "mark_front", "merged_rows", "pareto_text"]


def _signed(row: TrialRow, goals: Sequence[Goal]) -> list[float]:
    """The row's objective values, negated where maximised (so smaller is better everywhere)."""
    return [row.values[g.metric] * (-1 if g.resolved == "maximize" else 1) for g in goals]


def mark_front(rows: Sequence[TrialRow], goals: Sequence[Goal]) -> list[TrialRow]:
    """Set ``pareto`` on every row: True for the complete, feasible rows that no other such row dominates.

    Returns:
        The rows on the front, in trial order.
    """
    scored = [r for r in rows if r.state == "complete" and r.feasible and all(g.metric in r.values for g in goals)]
    points = {r.number: _signed(r, goals) for r in scored}
    for r in rows:
        mine = points.get(r.number)
        r.pareto = mine is not None and not any(
            all(a <= b for a, b in zip(other, mine, strict=True))
            and any(a < b for a, b in zip(other, mine, strict=True))
            for n, other in points.items()
            if n != r.number
        )
    return sorted((r for r in rows if r.pareto), key=lambda r: r.number)


def merged_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """The rows with trials of the same configuration merged into the first one (its ``same``: the others' numbers),
    in trial order: the same run key, or (trials that never trained, such as those rejected before training) the
    same sampled parameters and state. Failed trials are kept apart."""
    kept: dict[str, TrialRow] = {}
    out: list[TrialRow] = []
    for r in sorted(rows, key=lambda r: r.number):
        key = r.run_key or f"{r.state}:{json.dumps(r.params, sort_keys=True, default=str)}"
        first = kept.get(key) if r.state != "failed" else None
        if first is not None and r.state == first.state:
            first.same.append(r.number)
            continue
        r = replace(r, same=[])
        kept.setdefault(key, r)
        out.append(r)
    return out


def pareto_text(rows: Sequence[TrialRow], goals: Sequence[Goal], canonical: float | None, top: int = 20) -> str:
    """The leaderboard of a multi-objective search: one column per objective, ``*`` on the Pareto-optimal trials
    (front first, then the other complete trials by the first objective), same-run trials merged; the trials
    rejected before training and the failed ones listed after it."""
    rows = merged_rows(rows)
    done = [r for r in rows if r.state == "complete" and r.values]
    first = goals[0]
    done.sort(key=lambda r: (not r.pareto, r.values.get(first.metric, 0) * (-1 if first.resolved == "maximize" else 1)))
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed")}
    front = sum(r.pareto for r in rows)
    axes = ", ".join(f"{g.metric} {g.resolved[:3]}" for g in goals)
    lines = [
        f"trials: {sum(1 + len(r.same) for r in rows)} ({counts['complete']} complete, {counts['pruned']} pruned,"
        f" {counts['failed']} failed); Pareto front: {front} ({axes})"
    ]
    header = f"{'':1} {'trial':>9} " + " ".join(f"{g.metric:>14}" for g in goals) + f" {'epochs':>6}  params"
    lines.append(header)
    for r in done[:top]:
        number = ",".join(map(str, [r.number, *r.same]))
        cells = " ".join(
            f"{short_value(r.values[g.metric]) if g.is_cost else f'{r.values[g.metric]:.4f}':>14}" for g in goals
        )
        params = ", ".join(f"{k}={short_value(v)}" for k, v in r.params.items())
        lines.append(f"{'*' if r.pareto else ' ':1} {number:>9} {cells} {r.epochs:>6}  {params}")
    lines.append("* Pareto-optimal (complete, feasible, no other trial at least as good in every objective)")
    if canonical is not None:
        lines.append(f"canonical (unpatched base spec): first validation objective = {canonical:.4f}")
    for r in rows:
        if r.state == "failed" or (r.state == "pruned" and r.reason):
            lines.append(f"{r.state} trial {r.number}: {r.reason}")
    return "\n".join(lines)


def front_columns(rows: Sequence[TrialRow], goals: Sequence[Goal]) -> dict[str, list]:
    """Every complete or rejected trial as a table row, in trial order: ``trial``, one column per objective,
    ``feasible``, ``pareto``, ``same_run`` (merged trial numbers), ``run_id`` (its MLflow run)."""
    ordered = [r for r in merged_rows(rows) if r.state == "complete" or not r.feasible]
    columns: dict[str, list] = {"trial": [r.number for r in ordered]}
    for g in goals:
        columns[g.metric] = [r.values.get(g.metric, r.costs.get(g.metric)) for r in ordered]
    columns["feasible"] = [r.feasible for r in ordered]
    columns["pareto"] = [r.pareto for r in ordered]
    columns["same_run"] = [",".join(map(str, r.same)) for r in ordered]
    columns["run_id"] = [r.mlflow_run_id for r in ordered]
    return columns


def front_plot(rows: Sequence[TrialRow], goals: Sequence[Goal], out: Path) -> Path:
    """The first two objectives of every complete trial as a scatter plot, the front joined and marked; saved as
    ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = goals[0].metric, goals[1].metric
    done = [r for r in merged_rows(rows) if r.state == "complete" and x in r.values and y in r.values]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    others = [r for r in done if not r.pareto]
    front = sorted((r for r in done if r.pareto), key=lambda r: r.values[x])
    ax.scatter([r.values[x] for r in others], [r.values[y] for r in others], c="0.6", label="trials")
    ax.plot([r.values[x] for r in front], [r.values[y] for r in front], "o-", c="C3", label="Pareto front")
    for r in front:
        ax.annotate(str(r.number), (r.values[x], r.values[y]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(f"{x} ({goals[0].resolved})")
    ax.set_ylabel(f"{y} ({goals[1].resolved})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def log_front(tracker: Tracker, rows: Sequence[TrialRow], goals: Sequence[Goal]) -> None:
    """Log ``pareto_front.json`` (:func:`front_columns`) and ``pareto_front.png`` (:func:`front_plot`) on the
    search's parent run, and tag it with the front's trial numbers (``crmlab.pareto_front``)."""
    tracker.log_table(front_columns(rows, goals), "pareto_front.json")
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact(front_plot(rows, goals, Path(tmp) / "pareto_front.png"))
    tracker.set_tags({"crmlab.pareto_front": ",".join(str(r.number) for r in merged_rows(rows) if r.pareto)})
