"""The document of a search study (``kind: search``): its objective, trial budget and backend options.

The space, the recipe and the patches are validated later, against the base spec (:mod:`crmlab.search.arch._study`).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field

from crmlab.registry import SpecError
from crmlab.runners.studyfile import MONITORS, Strict, StudyDoc
from crmlab.search.storage import Heartbeat

__all__ = ["KerasTunerOptions", "Objective", "OptunaOptions", "SearchDoc"]


class Objective(Strict):
    """What a trial is scored by: a validation metric of the last stage (best epoch)."""

    metric: str = "val_pearson_r"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """``minimize`` for the losses (``val_loss``, ``val_mse``), else ``maximize``."""
        return "minimize" if self.metric in ("val_loss", "val_mse") else "maximize"


class OptunaOptions(Strict):
    """``optuna:`` options: sampler, pruner (on the last stage's epochs) and heartbeats."""

    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = Field(default=3, ge=0)
    warmup_epochs: int = Field(default=1, ge=0)
    heartbeat: Heartbeat = Heartbeat()


class KerasTunerOptions(Strict):
    """``keras_tuner:`` options: the tuner (Hyperband's budget is epochs of the last stage)."""

    tuner: Literal["random", "bayesian", "hyperband"] = "random"
    factor: int = Field(default=3, ge=2)
    hyperband_iterations: int = Field(default=1, ge=1)


class SearchDoc(StudyDoc):
    """The shape of a search study document (the space, recipe and patches are validated separately)."""

    kind: Literal["search"] = "search"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    backend: Literal["optuna", "keras_tuner"] = "optuna"
    trials: int = Field(default=20, ge=1)
    seed: int = 0
    objective: Objective = Objective()
    optuna: OptunaOptions = OptunaOptions()
    keras_tuner: KerasTunerOptions = KerasTunerOptions()
    space: dict[str, Any]

    @classmethod
    def parse(cls, doc: dict[str, Any], file: str) -> Self:
        """Validate the document; the objective must be a validation metric the runner logs."""
        search = super().parse(doc, file)
        if search.objective.metric not in MONITORS:
            raise SpecError(
                file,
                "objective.metric",
                f"'{search.objective.metric}' is not a validation metric; use one of {', '.join(MONITORS)}",
            )
        return search
