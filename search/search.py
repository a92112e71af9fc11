"""Search studies (``kind: search``): every trial is the base spec + a patch from the space, trained by the runner.

Flow: load and validate the study, its space against the base spec (each parameter's values applied, resolved and
assembled, before any trial runs) and the data; train canonical CRMnet (the base spec, unpatched) once; then the
backend (:mod:`crmlab.search.optuna_backend` or :mod:`crmlab.search.kt_backend`) samples trials. A trial is
:meth:`~crmlab.registry.space.Space.patch` -> :func:`~crmlab.registry.variants.apply_patch` ->
:func:`~crmlab.runners.train.train_run`,
exactly like an ablation variant, so a trial whose configuration was trained before (by an earlier trial, canonical,
or a killed process) is reused or resumed by its run key, not retrained.

The objective of a complete trial is ``objective.metric`` (a validation metric) of the model the trial exports,
on the recipe's last stage's validation split (:func:`crmlab.runners.train.final_validation`: the restored best epoch,
after any ``keep_previous`` mixing and strand averaging); while a trial runs, and for a run that predates that
record, it is the best value over the last stage's epochs. Only the last stage's epochs are reported to pruners
(step = epoch of that stage), so trials with and without pretraining are compared on the same scale.

MLflow: a parent run per search; a child run per trial (tags ``mlflow.parentRunId``, ``crmlab.trial``,
``crmlab.trial_state`` = complete / pruned / failed, params ``trial.KEY`` for the active sampled values only,
per-epoch metrics from the runner, and ``delta.TEST.METRIC`` against canonical).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmlab.registry import core, yamlio
from crmlab.registry.errors import CrmlabError, Issue, SpecError, SpecErrors
from crmlab.registry.space import MAX_TESTED_VALUES, FloatParam, IntParam, Param, Space, parent_values, parse_space
from crmlab.registry.spec import GraphSpec, parse_graph, pydantic_issues
from crmlab.registry.validate import resolve_graph
from crmlab.registry.variants import Patch, apply_patch
from crmlab.runners import data as data_mod
from crmlab.runners.data import DataSource
from crmlab.runners.recipe import MONITORS, Recipe, check_study_document, inline_recipe, parse_recipe, referenced_file
from crmlab.runners.study import apply_overrides, blame_overrides, check_assembles, check_splits
from crmlab.runners.train import RunResult, TrainingFailed, digest

CANONICAL = "canonical"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Objective(_Strict):
    """What a trial is scored by: a validation metric of the last stage (best epoch)."""

    metric: str = "val_pearson_r"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.metric in ("val_loss", "val_mse") else "maximize"


class Heartbeat(_Strict):
    """Optuna heartbeats: a running trial whose worker has been silent ``grace`` seconds is failed and retried."""

    interval: int = Field(default=30, ge=1)
    grace: int = Field(default=120, ge=2)
    max_retry: int = Field(default=3, ge=0)


class OptunaOptions(_Strict):
    """``optuna:`` options: sampler, pruner (on the last stage's epochs) and heartbeats."""

    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = Field(default=3, ge=0)
    warmup_epochs: int = Field(default=1, ge=0)
    heartbeat: Heartbeat = Heartbeat()


class KerasTunerOptions(_Strict):
    """``keras_tuner:`` options: the tuner (Hyperband's budget is epochs of the last stage)."""

    tuner: Literal["random", "bayesian", "hyperband"] = "random"
    factor: int = Field(default=3, ge=2)
    hyperband_iterations: int = Field(default=1, ge=1)


class SearchDoc(_Strict):
    """The shape of a search study document (the space, recipe and patches are validated separately)."""

    kind: Literal["search"] = "search"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    graph: str
    data: dict[str, DataSource]
    test_sets: dict[str, DataSource] = Field(min_length=1)
    recipe: dict[str, Any]
    backend: Literal["optuna", "keras_tuner"] = "optuna"
    trials: int = Field(default=20, ge=1)
    seed: int = 0
    objective: Objective = Objective()
    optuna: OptunaOptions = OptunaOptions()
    keras_tuner: KerasTunerOptions = KerasTunerOptions()
    space: dict[str, Any]


@dataclass(frozen=True)
class TrialSpec:
    """A trial's patch, the patched graph and recipe documents, and their validated forms."""

    graph: GraphSpec
    recipe: Recipe
    patch: Patch
    graph_doc: dict[str, Any]
    recipe_doc: dict[str, Any]


@dataclass
class Search:
    """A loaded, validated search study with its data."""

    path: Path
    overrides: list[str]
    doc: SearchDoc
    space: Space
    base_graph: dict[str, Any]
    graph_file: Path
    canonical: tuple[GraphSpec, Recipe]
    datasets: dict[str, data_mod.Dataset] = field(default_factory=dict)
    tests: dict[str, data_mod.Dataset] = field(default_factory=dict)
    canonical_parameters: int = 0

    @property
    def key(self) -> str:
        """What makes two invocations the same search (the trial budget and backend options may change)."""
        return digest(
            self.base_graph,
            self.doc.recipe,
            {k: v.model_dump(mode="json") for k, v in {**self.doc.data, **self.doc.test_sets}.items()},
            self.doc.space,
            self.doc.objective.model_dump(mode="json"),
        )

    def variant(self, values: Mapping[str, Any]) -> TrialSpec:
        """The trial of these sampled ``values`` (inactive ones ignored): the base spec and recipe, patched."""
        patch = self.space.patch(values)
        file = str(self.path)
        graph_doc, recipe_doc = apply_patch(self.base_graph, self.doc.recipe, patch, core.blocks(), file, "space")
        graph = resolve_graph(parse_graph(graph_doc, file))
        recipe = parse_recipe(recipe_doc, self.doc.data, file)
        return TrialSpec(graph, recipe, patch, graph_doc, recipe_doc)

    @property
    def metric(self) -> str:
        return self.doc.objective.metric


def load_search(path: str | Path, overrides: Sequence[str] = (), assemble: bool = True) -> Search:
    """Validate the study and its space against the base spec (and, with ``assemble``, build every distinct
    model the space's bounds and choices produce); load the data and check the splits. Nothing is written.

    Raises:
        SpecErrors: every problem, ``FILE: key.path: message`` (issues at ``--set`` keys name the flag).
    """
    try:
        return _load(Path(path), list(overrides), assemble)
    except SpecErrors as exc:
        raise blame_overrides(exc, overrides) from None


def _load(path: Path, overrides: list[str], assemble: bool) -> Search:
    file = str(path)
    raw = yamlio.load(path)
    check_study_document(raw, file)
    raw = apply_overrides(inline_recipe(raw, path.parent, file), overrides, file)
    try:
        doc = SearchDoc.model_validate(raw)
    except ValidationError as exc:
        raise SpecErrors(pydantic_issues(exc, file, SearchDoc)) from None
    if doc.objective.metric not in MONITORS:
        raise SpecError(
            file,
            "objective.metric",
            f"'{doc.objective.metric}' is not a validation metric; use one of {', '.join(MONITORS)}",
        )
    graph_file = referenced_file(path.parent, doc.graph, file, "graph")
    base_graph = yamlio.load(graph_file)
    if not isinstance(base_graph, dict):
        raise SpecError(str(graph_file), "", "a graph spec must be a mapping")
    canonical_graph = resolve_graph(parse_graph(base_graph, str(graph_file)))
    canonical_recipe = parse_recipe(doc.recipe, doc.data, file)
    template = base_graph.get("template")
    template_params = (template.get("params") or {}) if isinstance(template, dict) else None
    if isinstance(template, dict) and isinstance(template.get("name"), str):
        template_params = {**_template_defaults(template["name"]), **(template_params or {})}
    space = parse_space(doc.space, file, template_params)
    search = Search(path, overrides, doc, space, base_graph, graph_file, (canonical_graph, canonical_recipe))
    graphs = _check_space(search)
    _check_backend(search)
    if assemble:
        search.canonical_parameters = _assemble_all(search, graphs)
    length = canonical_graph.inputs[next(iter(canonical_graph.inputs))].shape[0]
    base = path.parent
    search.datasets = {
        n: data_mod.load(s, length=length, base_dir=base, name=n, key=f"data.{n}") for n, s in doc.data.items()
    }
    search.tests = {
        n: data_mod.load(s, length=length, base_dir=base, name=n, key=f"test_sets.{n}")
        for n, s in doc.test_sets.items()
    }
    check_splits(canonical_recipe, search.datasets, file, [canonical_recipe.seed])
    return search


def _template_defaults(name: str) -> dict[str, Any]:
    """The template's parameters (name -> default), so a space may vary one the base spec leaves at its default."""
    templates = core.templates()
    if name not in templates:
        return {}
    return {p.name: p.default for p in templates.get(name).params.values()}


def _check_space(search: Search) -> dict[str, tuple[str, GraphSpec]]:
    """Apply every parameter's representative values (with the parents that make it active) to the base spec and
    recipe; an impossible value is ``FILE: space.KEY: with KEY=VALUE: message``. Returns the distinct graphs."""
    file = str(search.path)
    issues: list[Issue] = []
    graphs: dict[str, tuple[str, GraphSpec]] = {}
    for param in search.space:
        for value in param.representative_values():
            values = {**parent_values(search.space, param), param.key: value}
            label = ", ".join(f"{k}={yamlio.dumps(v).strip().removesuffix('...').strip()}" for k, v in values.items())
            try:
                graph = search.variant(values).graph
            except SpecErrors as exc:
                issues.extend(
                    Issue(file, f"space.{param.key}", f"with {label}: {Issue('', i.path, i.message)}")
                    for i in exc.issues[:1]
                )
                break
            graphs.setdefault(digest(graph.to_dict()), (f"space.{param.key}: with {label}", graph))
    if issues:
        raise SpecErrors(issues)
    return graphs


def _check_backend(search: Search) -> None:
    file, doc = str(search.path), search.doc
    if doc.backend == "optuna" and doc.optuna.sampler == "grid":
        loose = [p.key for p in search.space if isinstance(p.spec, FloatParam) and p.spec.step is None]
        if loose:
            raise SpecError(
                file, "optuna.sampler", f"grid needs finite parameters; {loose[0]} is a continuous float (add step)"
            )

        def count(p: Param) -> float:  # without enumerating the range
            s = p.spec
            if isinstance(s, IntParam):
                return (s.high - s.low) // s.step + 1
            if isinstance(s, FloatParam) and s.step is not None:
                return (s.high - s.low) / s.step + 1
            return len(p.finite_values or [])

        wide = [p.key for p in search.space if count(p) > MAX_TESTED_VALUES]
        if wide:
            raise SpecError(
                file, "optuna.sampler", f"grid: {wide[0]} has more than {MAX_TESTED_VALUES:,} values; use a larger step"
            )
    if doc.backend == "optuna" and doc.optuna.heartbeat.grace < 2 * doc.optuna.heartbeat.interval:
        raise SpecError(file, "optuna.heartbeat.grace", "must be at least twice the interval")


def _assemble_all(search: Search, graphs: dict[str, tuple[str, GraphSpec]]) -> int:
    """Build canonical and every distinct graph of the space once; returns canonical's parameter count."""
    file = str(search.path)
    issues: list[Issue] = []
    canonical = 0
    todo = {digest(search.canonical[0].to_dict()): ("", search.canonical[0]), **graphs}
    for key, (where, graph) in todo.items():
        try:
            count = check_assembles(graph, search.canonical[1], file)
            if key == digest(search.canonical[0].to_dict()):
                canonical = count
        except SpecErrors as exc:
            if not where:
                raise
            prefix, label = where.split(": ", 1)
            issues.extend(Issue(file, prefix, f"{label}: {i}") for i in exc.issues[:1])
    if issues:
        raise SpecErrors(issues)
    return canonical


class StopTrial(Exception):
    """Raised by a backend's epoch callback to end a trial early: ``state`` is ``pruned`` (an Optuna pruner) or
    ``paused`` (a KerasTuner Hyperband budget; a later trial continues the same run from its checkpoint)."""

    mlflow_status = "KILLED"

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


@dataclass
class TrialOutcome:
    """What one trial gave: ``state`` complete / pruned / paused / failed, the objective (best last-stage value
    so far; ``None`` if no epoch of the last stage ran), the result (complete only) and the failure reason."""

    state: str
    value: float | None
    curve: list[tuple[int, float]]
    result: RunResult | None = None
    reason: str = ""
    mlflow_run_id: str | None = None
    deltas: dict[str, float] = field(default_factory=dict)


def best_value(curve: Sequence[tuple[int, float]], direction: str) -> float | None:
    values = [v for _, v in curve]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def last_stage_curve(history: Sequence[Mapping[str, Any]], stage: str, metric: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``metric`` over the epochs of ``stage`` in a run's history."""
    return [(int(h["epoch"]), float(h[metric])) for h in history if h.get("stage") == stage and metric in h]


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
    """Train one trial (or resume / reuse its run) and score it.

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
        canonical: canonical CRMnet's test metrics, for the ``delta.*`` metrics.

    Returns:
        The :class:`TrialOutcome`; a diverged run is ``failed`` with its reason, never an exception.
    """
    from crmlab.runners.tracking import Tracker
    from crmlab.runners.train import run_history, train_run

    spec = search.variant(values)
    graph, recipe = spec.graph, spec.recipe
    final = recipe.stages[-1].name
    last_epoch = recipe.stage_epochs(recipe.stages[-1])
    metric, direction = search.metric, search.doc.objective.direction
    curve: list[tuple[int, float]] = []

    def step(epoch: int, value: float) -> None:
        curve.append((epoch, value))
        if report is not None:
            report(epoch, value)
        if budget is not None and budget <= epoch < last_epoch:  # at the stage's last epoch the run is complete
            raise StopTrial("paused")

    earlier = run_history(graph, recipe, search.datasets, search.tests, runs_dir)
    tracker = None
    active = search.space.active(values)
    if parent_id is not None:
        tracker = Tracker(tracking_uri, search.doc.name)
    params_logged = False

    def hook(stage: str, epoch: int, logs: Mapping[str, float]) -> None:
        nonlocal params_logged
        if tracker is not None and not params_logged and tracker.run_id is not None:
            tracker.log_params({f"trial.{k}": v for k, v in active.items()})
            params_logged = True
        if stage == final and metric in logs:
            step(epoch, float(logs[metric]))

    run_tags = {"crmlab.trial": label, "crmlab.search": search.doc.name, **(tags or {})}
    if parent_id is not None:
        run_tags["mlflow.parentRunId"] = parent_id
    outcome: TrialOutcome
    try:
        for epoch, value in last_stage_curve(earlier, final, metric):
            step(epoch, value)
        result = train_run(
            graph,
            recipe,
            search.datasets,
            search.tests,
            runs_dir,
            tracker=tracker,
            run_name=label,
            tags=run_tags,
            epoch_hook=hook,
            verbose=0,
        )
        if not curve:  # finished before this trial saw it (an earlier identical trial): its whole curve
            for epoch, value in last_stage_curve(result.history, final, metric):
                step(epoch, value)
        value = result.validation.get(metric, best_value(curve, direction))
        outcome = TrialOutcome("complete", value, curve, result)
        if canonical is not None:
            outcome.deltas = {
                f"delta.{test}.{m}": result.test_metrics[test][m] - canonical[test][m]
                for test in result.test_metrics
                for m in result.test_metrics[test]
                if test in canonical and m in canonical[test]
            }
    except StopTrial as stop:
        outcome = TrialOutcome(stop.state, best_value(curve, direction), curve)
    except TrainingFailed as exc:
        outcome = TrialOutcome("failed", None, curve, reason=str(exc))
    if tracker is not None:
        if outcome.result is not None and tracker.run_id is None:
            # trained before (an identical earlier trial, or another tracking store): this trial gets its own run
            tracker.start(label, {**run_tags, "crmlab.reused_run": outcome.result.run_key})
            tracker.log_metrics(
                {f"test.{t}.{k}": v for t, m in outcome.result.test_metrics.items() for k, v in m.items()}
            )
            tracker.end("FINISHED")
        if tracker.run_id is not None:
            outcome.mlflow_run_id = tracker.run_id
            tracker.log_params({f"trial.{k}": v for k, v in active.items()})
            state = {"paused": "pruned"}.get(outcome.state, outcome.state)
            tags = {"crmlab.trial_state": state}
            if outcome.reason:
                tags["crmlab.fail_reason"] = outcome.reason
            tracker.set_tags(tags)
            if outcome.deltas:
                tracker.log_metrics(outcome.deltas)
            if outcome.value is not None:
                tracker.log_metrics({f"objective.{metric}": outcome.value})
    return outcome


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


def open_parent_run(search: Search, runs_dir: Path, tracking_uri: str | None, run_id: str | None) -> tuple[Any, str]:
    """The search's MLflow parent run: reopened by id (or, after a kill, by its tags), else created."""
    from crmlab.runners.tracking import Tracker, flatten

    tracker = Tracker(tracking_uri, search.doc.name)
    tags = {
        "crmlab.kind": "search",
        "crmlab.search_key": search.key,
        "crmlab.study": str(search.path),
        "crmlab.runs_dir": str(runs_dir.resolve()),
        "crmlab.backend_search": search.doc.backend,
    }
    reopen = run_id or tracker.unfinished_run({k: tags[k] for k in ("crmlab.search_key", "crmlab.runs_dir")})
    run_id = tracker.start(f"{search.doc.name} (search)", tags, reopen)
    tracker.log_params(flatten({"space": search.doc.space, "objective": search.doc.objective.model_dump()}))
    return tracker, run_id


@dataclass
class TrialRow:
    """One line of the leaderboard."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int = 0
    deltas: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def leaderboard_text(
    rows: Sequence[TrialRow], metric: str, direction: str, canonical: float | None, top: int = 10
) -> str:
    """The best ``top`` trials (complete first, by objective), with canonical's value for reference."""
    scored = [r for r in rows if r.state == "complete" and r.value is not None]
    scored.sort(key=lambda r: r.value if direction == "minimize" else -r.value)  # type: ignore[operator]
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed")}
    lines = [
        f"trials: {len(rows)} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed)"
        + (f"; canonical {metric} = {canonical:.4f}" if canonical is not None else "")
    ]
    header = f"{'#':>4} {'trial':>6} {metric:>14} {'vs canonical':>13} {'epochs':>6}  params"
    lines.append(header)
    for i, r in enumerate(scored[:top], start=1):
        delta = f"{r.value - canonical:+.4f}" if canonical is not None and r.value is not None else ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in r.params.items())
        lines.append(f"{i:>4} {r.number:>6} {r.value:>14.4f} {delta:>13} {r.epochs:>6}  {params}")
    for r in rows:
        if r.state == "failed":
            lines.append(f"failed trial {r.number}: {r.reason}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def importances_text(importances: Mapping[str, float]) -> str:
    if not importances:
        return "parameter importances: not enough complete trials with shared parameters"
    width = max(len(k) for k in importances)
    return "parameter importances (fANOVA):\n" + "\n".join(
        f"  {k:<{width}} {v:6.3f} {'#' * round(v * 40)}" for k, v in importances.items()
    )


def export_best(search: Search, values: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the trial of ``values`` as a ``kind: train`` study ``out`` with its graph spec beside it
    (``<stem>.graph.yaml``); data paths are rewritten relative to ``out``. ``crmlab train out`` trains it."""
    spec = search.variant(values)
    out = out.resolve()
    graph_file = out.with_name(f"{out.stem}.graph.yaml")
    base = search.path.parent.resolve()

    def source(s: DataSource) -> dict[str, Any]:
        doc = s.model_dump(mode="json", exclude_defaults=True)
        doc["path"] = os.path.relpath(base / s.path, out.parent)
        if s.values_file:
            doc["values_file"] = os.path.relpath(base / s.values_file, out.parent)
        return doc

    study = {
        "kind": "train",
        "name": f"{search.doc.name}_best",
        "description": f"best trial of search {search.doc.name}: "
        + ", ".join(f"{k}={_short(v)}" for k, v in search.space.active(values).items()),
        "graph": graph_file.name,
        "data": {n: source(s) for n, s in search.doc.data.items()},
        "test_sets": {n: source(s) for n, s in search.doc.test_sets.items()},
        "recipe": spec.recipe_doc,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    graph_file.write_text(yamlio.dumps(spec.graph_doc))
    out.write_text(yamlio.dumps(study))
    return out, graph_file


def check_export_path(arg: str | None) -> Path | None:
    """``--export``: a ``.yaml`` file whose folder exists or can be made (checked before anything runs)."""
    if arg is None:
        return None
    path = Path(arg)
    if path.suffix not in (".yaml", ".yml"):
        raise CrmlabError(f"--export: {arg}: write the study to a .yaml file")
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CrmlabError(f"--export: cannot write {arg} ({existing} is not a writable folder)")
    return path
