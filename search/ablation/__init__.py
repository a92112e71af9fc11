"""Ablation studies: the study document, its runs over adaptive seeds, paired per-seed statistics, calibrated verdicts
and the report."""

from crmlab.registry import lazy_exports

__all__ = [
    "REFERENCE",
    "all_seeds",
    "collect",
    "compare",
    "explain_study",
    "load_ablation",
    "run_ablation",
    "seeds_text",
    "table_text",
    "write_all",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "REFERENCE": "_comparison",
        "all_seeds": "_seeds",
        "collect": "_study",
        "compare": "_comparison",
        "explain_study": "_explain",
        "load_ablation": "_study",
        "run_ablation": "_runs",
        "seeds_text": "_seeds",
        "table_text": "_table",
        "write_all": "_report",
    },
)
