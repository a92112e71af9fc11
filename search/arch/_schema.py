"""The document of a search study (``kind: search``): its objective (or objectives, and cost constraints), trial
budget and backend options.

The space, the recipe and the patches are validated later, against the base spec (:mod:`crmlab.search.arch._study`).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field

from crmlab.registry import SpecError
from crmlab.runners.studyfile import MONITORS, Strict, StudyDoc
from crmlab.search.storage import Heartbeat

__all__ = [
    "COSTS",
    "MULTI_OBJECTIVE_SAMPLERS",
    "CostLimit",
    "Goal",
    "KerasTunerOptions",
    "Objective",
    "OptunaOptions",
    "SearchDoc",
]

COSTS = ("params", "flops", "step_time")
"""Costs a search may minimise or limit: ``params`` (exact parameter count), ``flops`` (per sequence, forward pass,
XLA's cost analysis) and ``step_time`` (a bare training step, as a ratio to canonical's measured beside it)."""
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random")
"""Samplers a multi-objective search may use (CMA-ES and grid are single-objective here)."""


class Objective(Strict):
    """What a trial is scored by: a validation metric of the last stage (best epoch)."""

    metric: str = "val_pearson_r"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """``minimize`` for the losses (``val_loss``, ``val_mse``), else ``maximize``."""
        return "minimize" if self.metric in ("val_loss", "val_mse") else "maximize"


class Goal(Strict):
    """One entry of ``objectives:``: a validation metric the runner logs, or a cost (:data:`COSTS`), and its
    direction (default: ``minimize`` for losses and costs, else ``maximize``)."""

    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @property
    def resolved(self) -> Literal["maximize", "minimize"]:
        """The direction, or the metric's default one."""
        if self.direction is not None:
            return self.direction
        return "minimize" if self.metric in ("val_loss", "val_mse", *COSTS) else "maximize"

    @property
    def is_cost(self) -> bool:
        """Whether the metric is a cost (:data:`COSTS`), known without training."""
        return self.metric in COSTS


class CostLimit(Strict):
    """A constraint on a cost: ``max`` (an architecture above it is infeasible, rejected before training)."""

    max: float


class OptunaOptions(Strict):
    """``optuna:`` options: sampler, pruner (on the last stage's epochs; default ``median`` with one objective,
    ``none`` with several) and heartbeats."""

    sampler: Literal["tpe", "nsga2", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "successive_halving", "hyperband", "none"] | None = None
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
    objectives: list[Goal] | None = Field(default=None, min_length=1)
    constraints: dict[Literal["params", "flops", "step_time"], CostLimit] = Field(default_factory=dict)
    optuna: OptunaOptions = OptunaOptions()
    keras_tuner: KerasTunerOptions = KerasTunerOptions()
    space: dict[str, Any]

    @classmethod
    def parse(cls, doc: dict[str, Any], file: str) -> Self:
        """Validate the document; the objective must be a validation metric the runner logs; ``objectives`` are
        validation metrics or costs, at least one a validation metric, none twice."""
        search = super().parse(doc, file)
        if search.objectives is not None:
            if "objective" in search.model_fields_set:
                raise SpecError(file, "objectives", "give objective or objectives, not both")
            seen: set[str] = set()
            for i, goal in enumerate(search.objectives):
                if goal.metric not in (*MONITORS, *COSTS):
                    raise SpecError(
                        file,
                        f"objectives.{i}.metric",
                        f"'{goal.metric}' is neither a validation metric ({', '.join(MONITORS)}) nor a cost"
                        f" ({', '.join(COSTS)})",
                    )
                if goal.metric in seen:
                    raise SpecError(file, f"objectives.{i}.metric", f"'{goal.metric}' is already an objective")
                seen.add(goal.metric)
            if all(g.is_cost for g in search.objectives):
                raise SpecError(file, "objectives", "at least one objective must be a validation metric")
        if search.objective.metric not in MONITORS:
            raise SpecError(
                file,
                "objective.metric",
                f"'{search.objective.metric}' is not a validation metric; use one of {', '.join(MONITORS)}",
            )
        return search

    @property
    def goals(self) -> list[Goal]:
        """The objectives in order: ``objectives``, or the single ``objective`` as a one-entry list."""
        if self.objectives is not None:
            return list(self.objectives)
        return [Goal(metric=self.objective.metric, direction=self.objective.direction)]
