"""One search trial: the base spec patched by sampled values, trained (or resumed, or reused) by the runner and
scored.

The objective of a complete trial is ``objective.metric`` (a validation metric) of the model the trial exports,
on the recipe's last stage's validation split (:func:`crmlab.runners.training._evaluate.final_validation`: the restored
best epoch, after any ``keep_previous`` mixing and strand averaging); while a trial runs, and for a run that predates
that record, it is the best value over the last stage's epochs. Only the last stage's epochs are reported to pruners
(step = epoch of that stage), so trials with and without pretraining are compared on the same scale.

MLflow: a parent run per search (:func:`open_parent_run`); a child run per trial (tags ``mlflow.parentRunId``,
``crmlab.trial``, ``crmlab.trial_state`` = complete / pruned / failed, params ``trial.KEY`` for the active sampled
values only, per-epoch metrics from the runner, and ``delta.TEST.METRIC`` against canonical).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmlab.runners import tracking
from crmlab.runners.rundir import Owner, RunResult, TrainingFailed, data_hashes, run_history, run_key
from crmlab.runners.tracking import Tracker
from crmlab.runners.training import train_run
from crmlab.search.arch._study import CANONICAL, Search

__all__ = [
    "StopTrial",
    "TrialOutcome",
    "TrialRun",
    "best_value",
    "last_stage_curve",
    "open_parent_run",
    "run_trial",
    "train_canonical",
]


class StopTrial(Exception):
    """Raised by a backend's epoch callback to end a trial early: ``state`` is ``pruned`` (an Optuna pruner) or
    ``paused`` (a KerasTuner Hyperband budget; a later trial continues the same run from its checkpoint). A pruned
    trial never resumes: the runner drops its run's state (``drop_state``); a paused one keeps it."""

    mlflow_status = "KILLED"

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state
        self.drop_state = state == "pruned"


@dataclass
class TrialOutcome:
    """What one trial gave: ``state`` complete / pruned / paused / failed, the objective (best last-stage value
    so far; ``None`` if no epoch of the last stage ran), the result (complete only), the failure reason and the
    key of the trial's run."""

    state: str
    value: float | None
    curve: list[tuple[int, float]]
    result: RunResult | None = None
    reason: str = ""
    mlflow_run_id: str | None = None
    deltas: dict[str, float] = field(default_factory=dict)
    run_key: str = ""


def best_value(curve: Sequence[tuple[int, float]], direction: str) -> float | None:
    """The best value of a ``(epoch, value)`` curve in ``direction`` (``maximize`` or ``minimize``); ``None`` if
    the curve is empty."""
    values = [v for _, v in curve]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def last_stage_curve(history: Sequence[Mapping[str, Any]], stage: str, metric: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``metric`` over the epochs of ``stage`` in a run's history."""
    return [(int(h["epoch"]), float(h[metric])) for h in history if h.get("stage") == stage and metric in h]


class TrialRun:
    """One trial's training: follows the last stage's objective curve epoch by epoch and logs to MLflow.

    Args:
        search: the loaded search.
        values: sampled values (inactive ones are ignored).
        runs_dir: where run directories live.
        label: the trial's name (MLflow run name and ``crmlab.trial`` tag).
        tracking_uri: MLflow tracking URI.
        parent_id: the search's MLflow parent run (``None``: no MLflow logging).
        report: called with ``(epoch, value)`` for every epoch of the last stage, including epochs a resumed run
            trained before; may raise :class:`StopTrial`.
        budget: stop (``paused``) after this many epochs of the last stage.
        tags: extra MLflow tags of the trial's run.
    """

    def __init__(
        self,
        search: Search,
        values: Mapping[str, Any],
        runs_dir: Path,
        *,
        label: str,
        tracking_uri: str | None = None,
        parent_id: str | None = None,
        report: Callable[[int, float], None] | None = None,
        budget: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.search, self.runs_dir, self.label = search, runs_dir, label
        self.report, self.budget = report, budget
        self.spec = search.variant(values)
        recipe = self.spec.recipe
        self.final = recipe.stages[-1].name
        self.last_epoch = recipe.stage_epochs(recipe.stages[-1])
        self.active = search.space.active(values)
        self.curve: list[tuple[int, float]] = []
        self.tracker = Tracker(tracking_uri, search.doc.name) if parent_id is not None else None
        self.params_logged = False
        self.tags = {"crmlab.trial": label, "crmlab.search": search.doc.name, **(tags or {})}
        if parent_id is not None:
            self.tags["mlflow.parentRunId"] = parent_id

    def step(self, epoch: int, value: float) -> None:
        """Record one epoch of the last stage; report it; pause at the budget (unless it is the stage's last)."""
        self.curve.append((epoch, value))
        if self.report is not None:
            self.report(epoch, value)
        if self.budget is not None and self.budget <= epoch < self.last_epoch:
            raise StopTrial("paused")

    def on_epoch(self, stage: str, epoch: int, logs: Mapping[str, float]) -> None:
        """The runner's epoch hook: log the trial's parameters once its MLflow run exists; follow the objective."""
        tracker = self.tracker
        if tracker is not None and not self.params_logged and tracker.run_id is not None:
            tracker.log_params({f"trial.{k}": v for k, v in self.active.items()})
            self.params_logged = True
        if stage == self.final and self.search.metric in logs:
            self.step(epoch, float(logs[self.search.metric]))

    def run(self, canonical: Mapping[str, Mapping[str, float]] | None = None) -> TrialOutcome:
        """Train (or resume / reuse) the trial and score it; ``canonical`` (canonical CRMnet's test metrics) gives
        the ``delta.*`` metrics. A diverged run is ``failed`` with its reason, never an exception."""
        search, spec, metric = self.search, self.spec, self.search.metric
        direction = search.direction
        earlier = run_history(spec.graph, spec.recipe, search.datasets, search.tests, self.runs_dir)
        outcome: TrialOutcome
        try:
            for epoch, value in last_stage_curve(earlier, self.final, metric):
                self.step(epoch, value)
            result = train_run(
                spec.graph,
                spec.recipe,
                search.datasets,
                search.tests,
                self.runs_dir,
                tracker=self.tracker,
                run_name=self.label,
                tags=self.tags,
                epoch_hook=self.on_epoch,
                verbose=0,
                owner=Owner(search.doc.name, "search", search.key, self.label),
            )
            if not self.curve:  # finished before this trial saw it (an earlier identical trial): its whole curve
                for epoch, value in last_stage_curve(result.history, self.final, metric):
                    self.step(epoch, value)
            value = result.validation.get(metric, best_value(self.curve, direction))
            outcome = TrialOutcome("complete", value, self.curve, result)
            if canonical is not None:
                outcome.deltas = {
                    f"delta.{test}.{m}": result.test_metrics[test][m] - canonical[test][m]
                    for test in result.test_metrics
                    for m in result.test_metrics[test]
                    if test in canonical and m in canonical[test]
                }
        except StopTrial as stop:
            outcome = TrialOutcome(stop.state, best_value(self.curve, direction), self.curve)
        except TrainingFailed as exc:
            outcome = TrialOutcome("failed", None, self.curve, reason=str(exc))
        outcome.run_key = run_key(spec.graph, spec.recipe, data_hashes(search.datasets, search.tests))
        if self.tracker is not None:
            self._log(self.tracker, outcome)
        return outcome

    def _log(self, tracker: Tracker, outcome: TrialOutcome) -> None:
        """The trial's MLflow run: its own run for a reused result, parameters, state, deltas and objective."""
        if outcome.result is not None and tracker.run_id is None:
            # trained before (an identical earlier trial, or another tracking store): this trial gets its own run
            tracker.start(self.label, {**self.tags, "crmlab.reused_run": outcome.result.run_key})
            tracker.log_metrics(
                {f"test.{t}.{k}": v for t, m in outcome.result.test_metrics.items() for k, v in m.items()}
            )
            tracker.end("FINISHED")
        if tracker.run_id is None:
            return
        outcome.mlflow_run_id = tracker.run_id
        tracker.log_params({f"trial.{k}": v for k, v in self.active.items()})
        state = {"paused": "pruned"}.get(outcome.state, outcome.state)
        tags = {"crmlab.trial_state": state}
        if outcome.reason:
            tags["crmlab.fail_reason"] = outcome.reason
        tracker.set_tags(tags)
        if outcome.deltas:
            tracker.log_metrics(outcome.deltas)
        if outcome.value is not None:
            tracker.log_metrics({f"objective.{self.search.metric}": outcome.value})


def run_trial(
    search: Search,
    values: Mapping[str, Any],
    runs_dir: Path,
    *,
    label: str,
    tracking_uri: str | None = None,
    parent_id: str | None = None,
    report: Callable[[int, float], None] | None = None,
    budget: int | None = None,
    tags: Mapping[str, str] | None = None,
    canonical: Mapping[str, Mapping[str, float]] | None = None,
) -> TrialOutcome:
    """Train one trial (or resume / reuse its run) and score it: :class:`TrialRun` with these arguments, run with
    ``canonical`` (canonical CRMnet's test metrics, for the ``delta.*`` metrics).

    Returns:
        The :class:`TrialOutcome`; a diverged run is ``failed`` with its reason, never an exception.
    """
    trial = TrialRun(
        search,
        values,
        runs_dir,
        label=label,
        tracking_uri=tracking_uri,
        parent_id=parent_id,
        report=report,
        budget=budget,
        tags=tags,
    )
    return trial.run(canonical)


def train_canonical(
    search: Search, runs_dir: Path, tracking_uri: str | None, parent_id: str | None
) -> tuple[RunResult, float]:
    """Train (or reuse) canonical CRMnet, the unpatched base spec; returns its result and objective value.

    Raises:
        TrainingFailed: canonical diverged (nothing to compare the trials against).
    """
    outcome = run_trial(search, {}, runs_dir, label=CANONICAL, tracking_uri=tracking_uri, parent_id=parent_id)
    if outcome.state != "complete" or outcome.result is None or outcome.value is None:
        raise TrainingFailed(f"{search.path}: {CANONICAL} failed, nothing to compare against: {outcome.reason}")
    return outcome.result, outcome.value


def open_parent_run(
    search: Search, runs_dir: Path, tracking_uri: str | None, run_id: str | None
) -> tuple[Tracker, str]:
    """The search's MLflow parent run: reopened by id (or, after a kill, by its tags), else created
    (:func:`crmlab.runners.tracking._tracker.open_parent_run`); its parameters are the space and the objective."""
    tags = {
        "crmlab.kind": "search",
        "crmlab.search_key": search.key,
        "crmlab.study": str(search.path),
        "crmlab.backend_search": search.doc.backend,
    }
    return tracking.open_parent_run(
        tracking_uri,
        search.doc.name,
        f"{search.doc.name} (search)",
        runs_dir,
        tags,
        "crmlab.search_key",
        run_id,
        {"space": search.doc.space, "objective": search.doc.objective.model_dump()}
        | ({"objectives": [g.model_dump() for g in search.goals]} if search.doc.objectives is not None else {}),
    )
