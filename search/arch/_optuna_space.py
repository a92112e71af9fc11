"""A search space in Optuna's terms: a trial's parameters sampled from it, and each parameter's distribution."""

from __future__ import annotations

from typing import Any

import optuna

from crmlab.registry import BoolParam, ChoiceParam, FloatParam, IntParam, Space

__all__ = ["distributions", "suggest"]


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample the active parameters of ``space`` in order (an inactive one is not suggested, so not recorded)."""
    values: dict[str, Any] = {}
    for p in space:
        if not space.is_active(p, values):
            continue
        s = p.spec
        if isinstance(s, ChoiceParam):
            values[p.key] = trial.suggest_categorical(p.key, s.values)
        elif isinstance(s, BoolParam):
            values[p.key] = trial.suggest_categorical(p.key, [True, False])
        elif isinstance(s, IntParam):
            values[p.key] = trial.suggest_int(p.key, s.low, s.high, step=s.step, log=s.log)
        elif isinstance(s, FloatParam):
            values[p.key] = trial.suggest_float(p.key, s.low, s.high, step=s.step, log=s.log)
    return values


def distributions(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter's Optuna distribution (as :func:`suggest` samples it)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in space:
        s = p.spec
        if isinstance(s, ChoiceParam):
            out[p.key] = optuna.distributions.CategoricalDistribution(s.values)
        elif isinstance(s, BoolParam):
            out[p.key] = optuna.distributions.CategoricalDistribution([True, False])
        elif isinstance(s, IntParam):
            out[p.key] = optuna.distributions.IntDistribution(s.low, s.high, log=s.log, step=s.step)
        elif isinstance(s, FloatParam):
            out[p.key] = optuna.distributions.FloatDistribution(s.low, s.high, log=s.log, step=s.step)
    return out
