"""A study's trial budget: which of its trials count against ``trials``."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

__all__ = ["SURPLUS_ATTR", "budget_used"]

SURPLUS_ATTR = "surplus"
"""User attribute of a trial started when the budget was already taken (a race between workers): it is failed
before sampling, and counted nowhere."""


def budget_used(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials that count against ``trials``: done (complete, pruned, failed for a reason) or under way.

    A trial failed by the heartbeat check (its worker died) does not count: its retry, a waiting trial, does; nor
    does a surplus trial (see :data:`SURPLUS_ATTR`), which has no ``fail_reason``.
    """
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(t.state in counted or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs) for t in trials)
