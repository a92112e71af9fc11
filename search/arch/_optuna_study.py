"""Opening the Optuna study of a search, and the crmlab attributes it keeps (the search's key, canonical's record,
the MLflow parent run).

The rest of the Optuna side is beside it: the sampler and pruner (:mod:`crmlab.search.arch._optuna_algorithms`), the
space as distributions (:mod:`~crmlab.search.arch._optuna_space`), the trial budget
(:mod:`~crmlab.search.arch._optuna_budget`), leaderboard rows (:mod:`~crmlab.search.arch._optuna_rows`) and importances
(:mod:`~crmlab.search.arch._optuna_importances`).
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import RDBStorage

from crmlab.registry import CrmlabError
from crmlab.search.arch._optuna_algorithms import make_pruner, make_sampler
from crmlab.search.arch._study import Search

__all__ = ["CANONICAL_ATTR", "KEY_ATTR", "PARENT_ATTR", "open_study"]

KEY_ATTR = "crmlab.search_key"
"""Study attribute: the key of the search that made the study (another search under its name is refused)."""
CANONICAL_ATTR = "crmlab.canonical"
"""Study attribute: canonical's record (objective value, test metrics, run key), trained once per study."""
PARENT_ATTR = "crmlab.mlflow_parent_run"
"""Study attribute: the MLflow parent run every worker and resume logs its trials under."""


def open_study(search: Search, storage: RDBStorage, worker: int = 0) -> optuna.Study:
    """Create or load the study named after the search; one made from a different search is an error."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=search.doc.name,
            storage=storage,
            sampler=make_sampler(search, worker),
            pruner=make_pruner(search),
            directions=[g.resolved for g in search.goals],
            load_if_exists=True,
        )
        if search.multi and study.metric_names is None:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([g.metric for g in search.goals])  # optuna-dashboard's Pareto-front axes
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
