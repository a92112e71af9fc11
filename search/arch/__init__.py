"""Architecture search: the search document and space, trials as patches of the base graph, the leaderboard, export,
and the Optuna and KerasTuner backends."""

from crmlab.registry import lazy_exports

__all__ = [
    "BACKENDS",
    "CANONICAL_ATTR",
    "PARENT_ATTR",
    "Search",
    "SearchOptions",
    "best_row",
    "budget_used",
    "check_export_path",
    "export_best_trial",
    "finished_trials",
    "load_search",
    "run_optuna",
    "serve_search",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BACKENDS": "backends",
        "CANONICAL_ATTR": "_optuna_study",
        "PARENT_ATTR": "_optuna_study",
        "Search": "_study",
        "SearchOptions": "backends._base",
        "best_row": "_leaderboard",
        "budget_used": "_optuna_budget",
        "check_export_path": "_export",
        "export_best_trial": "_export",
        "finished_trials": "_optuna_finished",
        "load_search": "_study",
        "run_optuna": "backends._optuna",
        "serve_search": "backends._optuna",
    },
)
