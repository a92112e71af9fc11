"""Ablation studies: the study document, its runs over adaptive seeds, paired per-seed statistics, calibrated verdicts
and the report."""

from crmlab.registry import lazy_exports

__all__ = [
    "REFERENCE",
    "Ablation",
    "AdaptiveSeeds",
    "SeedPlan",
    "StudyProgress",
    "all_seeds",
    "collect",
    "compare",
    "detectable_effect",
    "explain_study",
    "load_ablation",
    "plan_seeds",
    "rejection_power",
    "run_ablation",
    "run_task",
    "seed_delta",
    "seed_delta_from",
    "seeds_text",
    "seeds_to_decide",
    "study_decisions",
    "table_text",
    "undecided_lines",
    "write_all",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "REFERENCE": "_comparison",
        "Ablation": "_study",
        "AdaptiveSeeds": "_seeds",
        "SeedPlan": "_seeds",
        "StudyProgress": "_progress",
        "all_seeds": "_seeds",
        "collect": "_study",
        "compare": "_comparison",
        "explain_study": "_explain",
        "detectable_effect": "_planning",
        "load_ablation": "_study",
        "plan_seeds": "_seeds",
        "rejection_power": "_planning",
        "seed_delta": "_stats",
        "seed_delta_from": "_stats",
        "seeds_to_decide": "_planning",
        "study_decisions": "_seeds",
        "run_ablation": "_runs",
        "run_task": "_runs",
        "seeds_text": "_seeds",
        "table_text": "_table",
        "undecided_lines": "_table",
        "write_all": "_report",
    },
)
