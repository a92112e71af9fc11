"""The search backends by the name a study's ``backend:`` key gives."""

from __future__ import annotations

from crmlab.search.backend import SearchBackend
from crmlab.search.kt_backend import KerasTunerBackend
from crmlab.search.optuna_backend import OptunaBackend

__all__ = ["BACKENDS"]

BACKENDS: dict[str, type[SearchBackend]] = {"optuna": OptunaBackend, "keras_tuner": KerasTunerBackend}
"""Backend class by name; every name that ``backend:`` accepts (:class:`crmlab.search.schema.SearchDoc`)."""
