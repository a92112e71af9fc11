"""The Optuna sampler and pruner that a search's ``optuna:`` settings name."""

from __future__ import annotations

import warnings

import optuna

from crmlab.search.arch._study import Search

__all__ = ["make_pruner", "make_sampler"]


def make_sampler(search: Search, worker: int) -> optuna.samplers.BaseSampler:
    """The ``optuna.sampler`` of the study, seeded per worker."""
    o, seed = search.doc.optuna, search.doc.seed + 1000 * worker
    if o.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if o.sampler == "grid":
        grid = {p.key: p.finite_values for p in search.space}
        return optuna.samplers.GridSampler(grid, seed=seed)  # type: ignore[arg-type]
    if o.sampler == "nsga2":  # a generation of a quarter of the trials (4 to 50), so the budget holds several
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, search.doc.trials // 4)))
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
    """The ``optuna.pruner`` of the study, on the epochs of the recipe's last stage (unset: ``median`` with one
    objective, none with several)."""
    o = search.doc.optuna
    pruner = o.pruner or ("none" if search.multi else "median")
    last = search.canonical[1].stages[-1]
    epochs = search.canonical[1].stage_epochs(last)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.startup_trials, n_warmup_steps=o.warmup_epochs)
    if pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(o.warmup_epochs, 1), reduction_factor=3)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(o.warmup_epochs, 1), max_resource=max(epochs, 2))
    return optuna.pruners.NopPruner()
