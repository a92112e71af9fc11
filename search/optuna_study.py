"""The Optuna study of a search: samplers, pruners, the space as distributions, opening a study, its budget and
its leaderboard rows and importances.

Used by the Optuna backend (:mod:`crmlab.search.optuna_backend`) and, for distributions and importances, by the
KerasTuner backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from crmlab.registry.errors import CrmlabError
from crmlab.registry.space import BoolParam, ChoiceParam, FloatParam, IntParam, Space
from crmlab.search.leaderboard import TrialRow
from crmlab.search.search import Search

__all__ = [
    "CANONICAL_ATTR",
    "KEY_ATTR",
    "PARENT_ATTR",
    "SURPLUS_ATTR",
    "budget_used",
    "distributions",
    "importances",
    "make_pruner",
    "make_sampler",
    "open_study",
    "suggest",
    "trial_rows",
]

KEY_ATTR = "crmlab.search_key"
CANONICAL_ATTR = "crmlab.canonical"
PARENT_ATTR = "crmlab.mlflow_parent_run"
SURPLUS_ATTR = "surplus"
"""User attribute of a trial started when the budget was already taken (a race between workers): it is failed
before sampling, and counted nowhere."""


def make_sampler(search: Search, worker: int) -> optuna.samplers.BaseSampler:
    """The ``optuna.sampler`` of the study, seeded per worker."""
    o, seed = search.doc.optuna, search.doc.seed + 1000 * worker
    if o.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if o.sampler == "grid":
        grid = {p.key: p.finite_values for p in search.space}
        return optuna.samplers.GridSampler(grid, seed=seed)  # type: ignore[arg-type]
    if o.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=o.startup_trials, warn_independent_sampling=False
        )
    with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental" since Optuna 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=o.startup_trials, multivariate=True, group=True, constant_liar=True
        )


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    """The ``optuna.pruner`` of the study, on the epochs of the recipe's last stage."""
    o = search.doc.optuna
    last = search.canonical[1].stages[-1]
    epochs = search.canonical[1].stage_epochs(last)
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.startup_trials, n_warmup_steps=o.warmup_epochs)
    if o.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(o.warmup_epochs, 1), reduction_factor=3)
    if o.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(o.warmup_epochs, 1), max_resource=max(epochs, 2))
    return optuna.pruners.NopPruner()


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


def open_study(search: Search, storage: RDBStorage, worker: int = 0) -> optuna.Study:
    """Create or load the study named after the search; one made from a different search is an error."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=search.doc.name,
            storage=storage,
            sampler=make_sampler(search, worker),
            pruner=make_pruner(search),
            direction=search.doc.objective.direction,
            load_if_exists=True,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"--storage: cannot open study '{search.doc.name}' in {storage.url}: {first}") from None
    key = study.user_attrs.get(KEY_ATTR)
    if key is None and study.trials:
        key = "(not made by crmlab search)"
    if key is not None and key != search.key:
        raise CrmlabError(
            f"{search.path}: name: study '{search.doc.name}' in {storage.url} holds a different search (its graph, "
            "recipe, data, space or objective changed); give this one another name or use another --storage"
        )
    if key is None:
        study.set_user_attr(KEY_ATTR, search.key)
    return study


def budget_used(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials that count against ``trials``: done (complete, pruned, failed for a reason) or under way.

    A trial failed by the heartbeat check (its worker died) does not count: its retry, a waiting trial, does; nor
    does a surplus trial (see :data:`SURPLUS_ATTR`), which has no ``fail_reason``.
    """
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(t.state in counted or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs) for t in trials)


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


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the complete trials (parameters present in all of them), or ``{}``."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}
    try:
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        )
    except (ValueError, RuntimeError):
        return {}
