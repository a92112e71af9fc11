"""The leaderboard rows of an Optuna study's finished trials."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from crmlab.search.arch._leaderboard import TrialRow
from crmlab.search.arch._optuna_budget import SURPLUS_ATTR
from crmlab.search.arch._optuna_costs import COSTS_ATTR, OBJECTIVES_ATTR, REJECTED_ATTR
from crmlab.search.arch._pareto import mark_front
from crmlab.search.arch._study import Search

__all__ = ["trial_rows"]


def trial_rows(study: optuna.Study, search: Search | None = None) -> list[TrialRow]:
    """The leaderboard rows of the study's finished trials (surplus trials left out), with every objective's value
    (``values``, metric -> value; the metrics from ``search``, else the study's metric names or the trials' records),
    costs and feasibility; with ``search``, the Pareto-optimal rows are marked
    (:func:`~crmlab.search.arch._pareto.mark_front`).
    """
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or t.user_attrs.get(SURPLUS_ATTR):
            continue
        if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
            reason = "its worker stopped (no heartbeat); retried"
        else:
            reason = t.user_attrs.get("fail_reason", t.user_attrs.get(REJECTED_ATTR, ""))
        values: dict[str, float] = dict(t.user_attrs.get(OBJECTIVES_ATTR, {}))
        names = [g.metric for g in search.goals] if search is not None else study.metric_names
        if t.values is not None and names is not None:
            values = dict(zip(names, t.values, strict=True))
        rows.append(
            TrialRow(
                t.number,
                states[t.state],
                values.get(search.metric) if search is not None and values else (t.values[0] if t.values else None),
                dict(t.params),
                int(t.user_attrs.get("epochs", 0)),
                dict(t.user_attrs.get("deltas", {})),
                reason,
                values=values,
                costs=dict(t.user_attrs.get(COSTS_ATTR, {})),
                feasible=all(v <= 0 for v in t.constraints.values()),
                run_key=str(t.user_attrs.get("run_key", "")),
                mlflow_run_id=str(t.user_attrs.get("mlflow_run_id", "")),
            )
        )
    if search is not None:
        mark_front(rows, search.goals)
    return rows
