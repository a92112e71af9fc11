"""An Optuna trial's costs and objective values: costs measured before training and recorded on the trial, over-budget
architectures rejected with zero epochs, and the values a complete trial returns (one per objective).

A rejected trial gets its constraints (``Trial.set_constraint``, value > 0: infeasible; also the list
``system_attrs["constraints"]`` that optuna-dashboard 0.21 reads) and is then pruned: a pruned trial never enters
``study.best_trials``, and it trained no epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from crmlab.search.arch._costs import TrialCosts, broken_constraints, measure_costs
from crmlab.search.arch._study import Search
from crmlab.search.arch._trial import TrialOutcome, best_value, last_stage_curve

__all__ = ["COSTS_ATTR", "OBJECTIVES_ATTR", "REJECTED_ATTR", "objective_values", "trial_costs"]

COSTS_ATTR = "costs"
"""Trial user attribute: the measured costs (cost -> value)."""
OBJECTIVES_ATTR = "objectives"
"""Trial user attribute: a complete trial's objective values (metric -> value, in the search's order)."""
REJECTED_ATTR = "rejected"
"""Trial user attribute: why the trial was rejected before training (a broken constraint)."""

_BEFORE = ("params", "flops")
"""Costs measured first: cheap and exact, so an over-budget architecture is rejected before its step is timed."""


def trial_costs(search: Search, trial: optuna.Trial, values: Mapping[str, Any]) -> TrialCosts:
    """Measure the costs the search needs (:attr:`~crmlab.search.arch._study.Search.costs`) of the trial of
    ``values`` and record them; a broken constraint rejects the trial.

    Raises:
        optuna.TrialPruned: a constraint is broken (the trial records its constraints and why, and 0 epochs).
    """
    costs = TrialCosts()
    if not search.costs:
        return costs
    spec = search.variant(values)
    for group in ([c for c in search.costs if c in _BEFORE], [c for c in search.costs if c not in _BEFORE]):
        if not group:
            continue
        measured = measure_costs(search, spec, group)
        costs.values.update(measured.values)
        costs.info.update(measured.info)
        trial.set_user_attr(COSTS_ATTR, costs.values)
        for key, value in measured.info.items():
            trial.set_user_attr(key, value)
        broken = {k: v for k, v in broken_constraints(search, costs.values).items() if v > 0}
        if broken:
            _set_constraints(search, trial, costs.values)
            reason = "; ".join(
                f"{k}={_fmt(costs.values[k])} > max {_fmt(search.doc.constraints[k].max)}" for k in broken
            )
            trial.set_user_attr(REJECTED_ATTR, f"{reason}: rejected before training")
            trial.set_user_attr("epochs", 0)
            raise optuna.TrialPruned(reason)
    _set_constraints(search, trial, costs.values)
    return costs


def _set_constraints(search: Search, trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """Every constraint's violation on the trial: ``set_constraint`` (Optuna 5) and the list optuna-dashboard reads."""
    violations = broken_constraints(search, values)
    if not violations:
        return
    for key, value in violations.items():
        trial.set_constraint(key, value)
    trial.storage.set_trial_system_attr(trial._trial_id, "constraints", list(violations.values()))


def objective_values(search: Search, outcome: TrialOutcome, costs: TrialCosts) -> list[float]:
    """A complete trial's value of every objective, in order: a validation metric from the exported model's
    validation (or the best of its last-stage curve), a cost as measured."""
    assert outcome.result is not None
    final = search.canonical[1].stages[-1].name
    values = []
    for goal in search.goals:
        if goal.is_cost:
            values.append(costs.values[goal.metric])
        elif goal.metric == search.metric and outcome.value is not None:
            values.append(outcome.value)
        else:
            curve = last_stage_curve(outcome.result.history, final, goal.metric)
            value = outcome.result.validation.get(goal.metric, best_value(curve, goal.resolved))
            if value is None:
                raise ValueError(f"trial has no {goal.metric}")
            values.append(float(value))
    return values


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 and float(value).is_integer() else f"{value:.4g}"
