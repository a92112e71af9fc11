"""Ablation studies (``kind: ablation``): every variant is the base spec + a patch, trained by the same runner.

This module loads a study: validate it; apply each variant's patch to the base graph and recipe; validate *and
assemble* every variant before any training (a broken variant stops everything with
``FILE: variants.NAME.key: message``); and :func:`collect` its finished runs. Training the variants x seeds
(canonical always included) and comparing against canonical is :mod:`crmlab.search.ablation._runs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from crmlab.registry import (
    GraphSpec,
    Issue,
    Patch,
    SpecErrors,
    apply_patch,
    check_leave_one_out,
    core,
    parse_graph,
    parse_patch,
    resolve_graph,
)
from crmlab.runners.data import Dataset
from crmlab.runners.rundir import RunResult, digest
from crmlab.runners.studyfile import (
    Recipe,
    Strict,
    StudyDoc,
    check_assembles,
    check_splits,
    load_study_data,
    load_study_file,
    parse_recipe,
)
from crmlab.search.ablation._comparison import CONTROL, REFERENCE
from crmlab.search.ablation._seeds import SeedsField, all_seeds, plan_seeds

__all__ = [
    "ANALYSIS_FIELDS",
    "CONTROL",
    "CONTROL_SEED_OFFSET",
    "REFERENCE",
    "Ablation",
    "AblationDoc",
    "Controls",
    "Variant",
    "collect",
    "load_ablation",
    "state_path",
]


CONTROL_SEED_OFFSET = 1_000_000
"""The control's run for study seed ``s`` initialises its weights and dropout from ``CONTROL_SEED_OFFSET + s``."""


class Controls(Strict):
    """Built-in controls of an ablation study.

    ``replicate: true`` adds the A/A control, a variant named ``control`` that is canonical again (same spec, same
    recipe) whose run for study seed ``s`` has ``recipe.init_seed = 1_000_000 + s``: it shares canonical's data
    split and batch order for that seed (both follow ``recipe.seed = s``) and differs only in weight initialisation
    and dropout streams, so it is paired with canonical exactly as a variant is. Its delta is the study's noise floor;
    a ``helps`` or ``hurts`` verdict for it marks the study as miscalibrated.
    """

    replicate: bool = False


class AblationDoc(StudyDoc):
    """The shape of an ablation study document (the recipe and patches are validated per variant)."""

    kind: Literal["ablation"] = "ablation"
    seeds: SeedsField = Field(default_factory=lambda: [0])
    """The seeds every variant trains with, or adaptive seeds (:mod:`crmlab.search.ablation._seeds`)."""
    leave_one_out: list[str] = Field(default_factory=list)
    variants: dict[str, Any] = Field(default_factory=dict)
    controls: Controls = Field(default_factory=lambda: Controls())
    metric: Literal["pearson_r", "spearman_rho", "r2"] = "pearson_r"
    """The primary metric: verdicts are read from the delta of this metric."""
    min_effect: float = Field(0.01, gt=0, lt=1)
    """The smallest delta of the primary metric worth reporting; ``equivalent`` means inside +-min_effect."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Family-wise error rate of the verdicts of each test set (Holm across variants)."""


#: Fields of the study document that only change how finished runs are compared, not which runs exist: they stay out
#: of the study key, so changing them re-reads the same parent MLflow run and runs.
ANALYSIS_FIELDS = frozenset({"metric", "min_effect", "alpha"})


@dataclass
class Variant:
    """A resolved variant: its patch, validated graph and recipe (seed set per run), and parameter count."""

    name: str
    patch: Patch
    graph: GraphSpec
    recipe: Recipe
    parameters: int = 0


@dataclass
class Ablation:
    """A loaded study: variants (reference first), data, and where it came from."""

    path: Path
    overrides: list[str]
    doc: AblationDoc
    variants: list[Variant]
    datasets: dict[str, Dataset] = field(default_factory=dict)
    tests: dict[str, Dataset] = field(default_factory=dict)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    """Runs that failed (diverged) in :func:`run_ablation`, by (variant, seed), with the reason."""

    @property
    def key(self) -> str:
        unset = {"controls"} if self.doc.controls == Controls() else set()  # keeps the keys of studies without it
        return digest(self.doc.model_dump(mode="json", exclude=set(ANALYSIS_FIELDS) | unset))

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def run_recipe(self, name: str, seed: int) -> Recipe:
        """The recipe of variant ``name``'s run with study seed ``seed`` (the control's own ``init_seed`` set)."""
        update: dict[str, Any] = {"seed": seed}
        if name == CONTROL:
            update["init_seed"] = CONTROL_SEED_OFFSET + seed
        return self.variant(name).recipe.model_copy(update=update)


def _patches(doc: AblationDoc, file: str) -> dict[str, Patch]:
    check_leave_one_out(doc.leave_one_out, file, "leave_one_out")
    patches: dict[str, Patch] = {REFERENCE: Patch()}
    if doc.controls.replicate:
        patches[CONTROL] = Patch()
        too_large = [s for s in all_seeds(doc.seeds) if s >= CONTROL_SEED_OFFSET]
        if too_large:
            message = f"seed {too_large[0]} collides with the control's seeds (>= {CONTROL_SEED_OFFSET:,})"
            raise SpecErrors([Issue(file, "seeds", f"{message}; use smaller seeds or controls.replicate: false")])
    for shortcut in doc.leave_one_out:
        patches[f"no_{shortcut}"] = Patch(**{shortcut: False})
    issues = []
    for name, raw in doc.variants.items():
        if name in patches:
            issues.append(
                Issue(file, f"variants.{name}", f"variant name '{name}' is taken (canonical, control or leave_one_out)")
            )
            continue
        try:
            patches[name] = parse_patch(raw, file, f"variants.{name}")
        except SpecErrors as exc:
            issues.extend(exc.issues)
    if issues:
        raise SpecErrors(issues)
    return patches


def _in_variant(issue: Issue, file: str, name: str) -> Issue:
    """Re-home an issue of variant ``name``'s patched graph or recipe to the study's ``variants.NAME`` key."""
    if name == REFERENCE:
        return issue
    return Issue(file, f"variants.{name}.{issue.path}" if issue.path else f"variants.{name}", issue.message)


def load_ablation(path: str | Path, overrides: Sequence[str] = (), assemble: bool = True) -> Ablation:
    """Validate the study and every variant; load the data and check every stage's split for every seed
    (:func:`~crmlab.runners.studyfile._loader.load_study_file`); with ``assemble``, build each model once (last, as
    it takes seconds per model). Issues at keys that ``overrides`` set are reported against ``--set``."""
    return load_study_file(path, overrides, AblationDoc, partial(_load_ablation, assemble=assemble))


def _load_ablation(
    path: Path, overrides: list[str], doc: AblationDoc, graph_path: Path, base_graph: dict[str, Any], assemble: bool
) -> Ablation:
    file = str(path)
    parse_graph(base_graph, str(graph_path))  # the shape of the document, before patches walk its nodes
    blocks = core.blocks()
    variants, issues = [], []
    for name, patch in _patches(doc, file).items():
        try:
            graph_doc, recipe_doc = apply_patch(base_graph, doc.recipe, patch, blocks, file, f"variants.{name}")
        except SpecErrors as exc:
            issues.extend(exc.issues)
            continue
        try:
            graph = resolve_graph(parse_graph(graph_doc, str(graph_path) if name == REFERENCE else file), blocks)
            recipe = parse_recipe(recipe_doc, doc.data, file)
            variants.append(Variant(name, patch, graph, recipe))
        except SpecErrors as exc:
            issues.extend(_in_variant(i, file, name) for i in exc.issues)
    if issues:
        raise SpecErrors(issues)
    datasets, tests = load_study_data(doc, variants[0].graph, path)
    for v in variants:
        try:
            check_splits(v.recipe, datasets, file, all_seeds(doc.seeds))
        except SpecErrors as exc:
            raise SpecErrors(_in_variant(i, file, v.name) for i in exc.issues) from None
    if assemble:  # last: seconds per model, after the cheaper checks of the data
        _assemble_all(variants, file)
    return Ablation(path, overrides, doc, variants, datasets, tests)


def _assemble_all(variants: list[Variant], file: str) -> None:
    """Build every variant's model once (catches shape errors before training) and record parameter counts."""
    issues = []
    for v in variants:
        if v.name == CONTROL:  # canonical's spec and recipe: same model, same count
            v.parameters = next(c.parameters for c in variants if c.name == REFERENCE)
            continue
        try:
            v.parameters = check_assembles(v.graph, v.recipe, file)
        except SpecErrors as exc:
            issues.extend(_in_variant(i, file, v.name) for i in exc.issues)
    if issues:
        raise SpecErrors(issues)


def state_path(runs_dir: Path, ablation: Ablation) -> Path:
    """The study's state file (its MLflow parent run id) under ``RUNS_DIR/_studies``."""
    return runs_dir / "_studies" / f"{ablation.doc.name}-{ablation.key}.json"


def collect(ablation: Ablation, runs_dir: Path) -> tuple[dict[tuple[str, int], RunResult], list[str]]:
    """Finished results of the study (nothing is trained) and the names of the runs still missing.

    With adaptive seeds the looks are replayed over the finished runs
    (:func:`~crmlab.search.ablation._seeds.plan_seeds`):
    the seeds added for undecided variants are found, and the runs the next look needs are missing.
    """
    from crmlab.runners.rundir import finished_result

    results = {}
    for seed in all_seeds(ablation.doc.seeds):
        for v in ablation.variants:
            recipe = ablation.run_recipe(v.name, seed)
            found = finished_result(v.graph, recipe, ablation.datasets, ablation.tests, runs_dir)
            if found is not None:
                results[(v.name, seed)] = found
    plan = plan_seeds(ablation, results)
    used = {(n, s) for n, seeds in plan.seeds.items() for s in seeds}
    return {k: r for k, r in results.items() if k in used}, [f"{n} seed={s}" for n, s in plan.needed]
