"""The leaderboard rows of an Optuna study's finished trials."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from crmlab.search.arch._leaderboard import TrialRow
from crmlab.search.arch._optuna_budget import SURPLUS_ATTR

__all__ = ["trial_rows"]


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """The leaderboard rows of the study's finished trials (surplus trials left out)."""
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or t.user_attrs.get(SURPLUS_ATTR):
            continue
        if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
            reason = "its worker stopped (no heartbeat); retried"
        else:
            reason = t.user_attrs.get("fail_reason", "")
        rows.append(
            TrialRow(
                t.number,
                states[t.state],
                t.value,
                dict(t.params),
                int(t.user_attrs.get("epochs", 0)),
                dict(t.user_attrs.get("deltas", {})),
                reason,
            )
        )
    return rows
