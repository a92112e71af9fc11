"""Confirming a search: its chosen trials as variants of an ablation study against canonical, on fresh seeds, with
the A/A control and calibrated verdicts, and each trial's search score set against its confirmed score."""

from crmlab.registry import lazy_exports

__all__ = [
    "DEFAULT_SEEDS",
    "Confirmation",
    "ConfirmedScore",
    "choose_trials",
    "confirmation_path",
    "confirmed_scores",
    "fresh_seeds",
    "prepare_confirmation",
    "ranked",
    "run_confirmation",
    "scores_markdown",
    "selection_seeds",
    "variant_name",
    "write_confirmation",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_SEEDS": "_study",
        "Confirmation": "_run",
        "ConfirmedScore": "_scores",
        "choose_trials": "_choose",
        "confirmation_path": "_study",
        "confirmed_scores": "_scores",
        "fresh_seeds": "_study",
        "prepare_confirmation": "_run",
        "ranked": "_choose",
        "run_confirmation": "_run",
        "scores_markdown": "_scores",
        "selection_seeds": "_study",
        "variant_name": "_study",
        "write_confirmation": "_study",
    },
)
