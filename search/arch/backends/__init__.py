"""Search backends: the interface every backend implements, and Optuna and KerasTuner by the name a study's
``backend:`` key gives."""

from __future__ import annotations

from crmlab.search.arch.backends._base import SearchBackend, SearchOptions, SearchRun
from crmlab.search.arch.backends._kerastuner import KerasTunerBackend
from crmlab.search.arch.backends._optuna import OptunaBackend, run_optuna

__all__ = [
    "BACKENDS",
    "KerasTunerBackend",
    "OptunaBackend",
    "SearchBackend",
    "SearchOptions",
    "SearchRun",
    "run_optuna",
]

BACKENDS: dict[str, type[SearchBackend]] = {"optuna": OptunaBackend, "keras_tuner": KerasTunerBackend}
"""Backend class by name; every name that ``backend:`` accepts (:class:`crmlab.search.arch._schema.SearchDoc`)."""
