"""Measuring speed: the bare training step, the runner's overhead and input-pipeline throughput, and their tables."""

from crmlab.registry import lazy_exports

__all__ = [
    "TABLE_COLUMNS",
    "bench_recipe",
    "compiled_model",
    "interleaved_steps",
    "measure",
    "pipeline_throughput",
    "random_batch",
    "run_step_time",
    "text_table",
    "time_steps",
    "write_csv",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TABLE_COLUMNS": "_report",
        "bench_recipe": "_step_time",
        "compiled_model": "_step_time",
        "interleaved_steps": "_interleaved",
        "measure": "_step_time",
        "pipeline_throughput": "_pipeline",
        "random_batch": "_step_time",
        "run_step_time": "_report",
        "text_table": "_report",
        "time_steps": "_step_time",
        "write_csv": "_report",
    },
)
