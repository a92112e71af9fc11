"""Search studies (``kind: search``): every trial is the base spec + a patch from the space, trained by the runner.

Flow: load and validate the study (:mod:`crmlab.search.arch._schema`), its space against the base spec (each parameter's
values applied, resolved and assembled, before any trial runs) and the data; train canonical CRMnet (the base spec,
unpatched) once; then a backend (:data:`crmlab.search.arch.backends.BACKENDS`: Optuna or KerasTuner) samples trials. A
trial is :meth:`~crmlab.registry.space.Space.patch` -> :func:`~crmlab.registry.variants.apply_patch` ->
:func:`~crmlab.runners.training._train.train_run` (:mod:`crmlab.search.arch._trial`), exactly like an ablation variant,
so a trial whose configuration was trained before (by an earlier trial, canonical, or a killed process) is reused or
resumed by its run key, not retrained.

This module holds the loaded search (:class:`Search`) and its loader, :func:`load_search`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from crmlab.registry import (
    MAX_TESTED_VALUES,
    FloatParam,
    GraphSpec,
    IntParam,
    Issue,
    Param,
    Patch,
    Space,
    SpecError,
    SpecErrors,
    apply_patch,
    core,
    parent_values,
    parse_graph,
    parse_space,
    resolve_graph,
    yamlio,
)
from crmlab.runners.data import Dataset
from crmlab.runners.rundir import digest
from crmlab.runners.studyfile import (
    Recipe,
    check_assembles,
    check_splits,
    load_study_data,
    load_study_file,
    parse_recipe,
)
from crmlab.search.arch._schema import MULTI_OBJECTIVE_SAMPLERS, Goal, SearchDoc

__all__ = ["CANONICAL", "Search", "TrialSpec", "assemble_space", "load_search"]

CANONICAL = "canonical"
"""The label of the unpatched base spec's run, which every trial is compared against."""


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
    datasets: dict[str, Dataset] = field(default_factory=dict)
    tests: dict[str, Dataset] = field(default_factory=dict)
    canonical_parameters: int = 0

    @property
    def key(self) -> str:
        """What makes two invocations the same search (the trial budget and backend options may change).

        A search with a single ``objective:`` and no constraints hashes as it always did; ``objectives:`` (their
        metrics and resolved directions) and ``constraints:`` are hashed when given, so changing them changes the key.
        """
        parts: list[Any] = [
            self.base_graph,
            self.doc.recipe,
            {k: v.model_dump(mode="json") for k, v in {**self.doc.data, **self.doc.test_sets}.items()},
            self.doc.space,
            self.doc.objective.model_dump(mode="json"),
        ]
        if self.doc.objectives is not None or self.doc.constraints:
            parts[-1] = {
                "objectives": [[g.metric, g.resolved] for g in self.doc.goals],
                "constraints": {k: v.max for k, v in sorted(self.doc.constraints.items())},
            }
        return digest(*parts)

    def variant(self, values: Mapping[str, Any]) -> TrialSpec:
        """The trial of these sampled ``values`` (inactive ones ignored): the base spec and recipe, patched."""
        patch = self.space.patch(values)
        file = str(self.path)
        graph_doc, recipe_doc = apply_patch(self.base_graph, self.doc.recipe, patch, core.blocks(), file, "space")
        graph = resolve_graph(parse_graph(graph_doc, file))
        recipe = parse_recipe(recipe_doc, self.doc.data, file)
        return TrialSpec(graph, recipe, patch, graph_doc, recipe_doc)

    @property
    def goals(self) -> list[Goal]:
        """The objectives in order (one for a single-objective search)."""
        return self.doc.goals

    @property
    def multi(self) -> bool:
        """Whether the search has several objectives (a Pareto front, no epoch pruning)."""
        return len(self.doc.goals) > 1

    @property
    def metric(self) -> str:
        """The validation metric that a trial's epochs follow: the first objective that is not a cost."""
        return next(g.metric for g in self.doc.goals if not g.is_cost)

    @property
    def direction(self) -> str:
        """The direction of :attr:`metric`."""
        return next(g.resolved for g in self.doc.goals if g.metric == self.metric)

    @property
    def costs(self) -> list[str]:
        """The costs a trial needs measured before training: its cost objectives and constrained costs."""
        return list(dict.fromkeys([*(g.metric for g in self.doc.goals if g.is_cost), *self.doc.constraints]))


def load_search(path: str | Path, overrides: Sequence[str] = (), assemble: bool = True) -> Search:
    """Validate the study and its space against the base spec; load the data and check the splits; with
    ``assemble``, build every distinct model the space's bounds and choices produce (:func:`assemble_space`)
    (:func:`~crmlab.runners.studyfile._loader.load_study_file`). Nothing is written.

    Raises:
        SpecErrors: every problem, ``FILE: key.path: message`` (issues at ``--set`` keys name the flag).
    """
    return load_study_file(path, overrides, SearchDoc, partial(_load, assemble=assemble))


def _load(
    path: Path, overrides: list[str], doc: SearchDoc, graph_file: Path, base_graph: dict[str, Any], assemble: bool
) -> Search:
    file = str(path)
    canonical_graph = resolve_graph(parse_graph(base_graph, str(graph_file)))
    canonical_recipe = parse_recipe(doc.recipe, doc.data, file)
    template = base_graph.get("template")
    template_params = (template.get("params") or {}) if isinstance(template, dict) else None
    if isinstance(template, dict) and isinstance(template.get("name"), str):
        template_params = {**_template_defaults(template["name"]), **(template_params or {})}
    space = parse_space(doc.space, file, template_params)
    search = Search(path, overrides, doc, space, base_graph, graph_file, (canonical_graph, canonical_recipe))
    _check_space(search)
    _check_backend(search)
    search.datasets, search.tests = load_study_data(doc, canonical_graph, path)
    check_splits(canonical_recipe, search.datasets, file, [canonical_recipe.seed])
    if assemble:
        assemble_space(search)
    return search


def assemble_space(search: Search) -> None:
    """Build canonical and every distinct model the space's bounds and choices produce, once, and record
    canonical's parameter count (``search.canonical_parameters``): what :func:`load_search` does last with
    ``assemble``. A command loads with ``assemble=False``, checks its flags, then calls this (seconds per model), so
    a bad flag is reported at once. The space's graphs are applied again (milliseconds) to find the distinct ones.

    Raises:
        SpecErrors: ``FILE: space.KEY: with KEY=VALUE: message`` for a value whose model cannot be built.
    """
    search.canonical_parameters = _assemble_all(search, _check_space(search))


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
    _check_objectives(search)
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


def _check_objectives(search: Search) -> None:
    """Refuse what a multi-objective or constrained search cannot do on its backend, sampler or pruner."""
    file, doc = str(search.path), search.doc
    if doc.backend == "keras_tuner" and (search.multi or search.costs):
        what = "several objectives" if search.multi else "costs and constraints"
        raise SpecError(
            file, "backend", f"keras_tuner sums objectives and has no Pareto front; {what} need backend: optuna"
        )
    if not search.multi or doc.backend != "optuna":
        return
    if doc.optuna.sampler not in MULTI_OBJECTIVE_SAMPLERS:
        raise SpecError(
            file,
            "optuna.sampler",
            f"{doc.optuna.sampler} does not support several objectives; use {', '.join(MULTI_OBJECTIVE_SAMPLERS)}",
        )
    if doc.optuna.pruner not in (None, "none"):
        raise SpecError(
            file,
            "optuna.pruner",
            f"{doc.optuna.pruner}: epoch pruning is single-objective in Optuna (trial.report and should_prune refuse"
            " several objectives); a multi-objective search rejects over-budget architectures with constraints",
        )


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
