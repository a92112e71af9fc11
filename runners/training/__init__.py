"""The training loop: one run's stages from a recipe, compiled once per graph, with its batches, epoch control,
schedule, metrics and evaluation."""

from crmlab.registry import lazy_exports

__all__ = ["SCHEDULE_VARIABLE", "Batches", "compile_for_training", "regression_metrics", "seed_run", "train_run"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Batches": "_batches",
        "SCHEDULE_VARIABLE": "_schedule",
        "compile_for_training": "_compile",
        "regression_metrics": "_metrics",
        "seed_run": "_seeding",
        "train_run": "_train",
    },
)
