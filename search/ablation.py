"""Ablation studies (``kind: ablation``): every variant is the base spec + a patch, trained by the same runner.

Flow: load and validate the study; apply each variant's patch to the base graph and recipe; validate *and
assemble* every variant before any training (a broken variant stops everything with
``FILE: variants.NAME.key: message``); train variants x seeds (canonical always included) with
:func:`crmlab.runners.train.train_run`, whose run keys make a re-run skip finished runs and resume the unfinished one;
compare against canonical (:mod:`crmlab.search.report`).

MLflow: one parent run per study (its id is kept beside the runs so a re-run reuses it), one child run per
variant x seed linked by the ``mlflow.parentRunId`` tag and tagged with variant, seed, patch and parameter delta.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from crmlab.registry import core, yamlio
from crmlab.registry.errors import Issue, SpecErrors
from crmlab.registry.spec import GraphSpec, parse_graph
from crmlab.registry.validate import resolve_graph
from crmlab.registry.variants import Patch, apply_patch, check_leave_one_out, parse_patch
from crmlab.runners.datasets import Dataset
from crmlab.runners.outputs import RunResult, TrainingFailed
from crmlab.runners.recipe import Recipe, Strict, StudyDoc, parse_recipe
from crmlab.runners.runkey import digest
from crmlab.runners.study import (
    blame_overrides,
    check_assembles,
    check_splits,
    graph_document,
    input_length,
    load_data,
    read_study,
)
from crmlab.search.report import CONTROL, REFERENCE, compare, log_comparison, write_all
from crmlab.search.seeds import SeedPlan, SeedsField, all_seeds, plan_seeds

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
    "parent_run",
    "run_ablation",
    "run_one",
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
    """The seeds every variant trains with, or adaptive seeds (:mod:`crmlab.search.seeds`)."""
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
    """Validate the study and every variant (and, with ``assemble``, build each model once); load the data and
    check every stage's split for every seed. Issues at keys that ``overrides`` set are reported against ``--set``."""
    try:
        return _load_ablation(Path(path), list(overrides), assemble)
    except SpecErrors as exc:
        raise blame_overrides(exc, overrides) from None


def _load_ablation(path: Path, overrides: list[str], assemble: bool) -> Ablation:
    file = str(path)
    doc = read_study(path, overrides, AblationDoc)
    graph_path, base_graph = graph_document(doc, path)
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
    if assemble:
        _assemble_all(variants, file)
    datasets, tests = load_data(doc, input_length(variants[0].graph), path.parent)
    for v in variants:
        try:
            check_splits(v.recipe, datasets, file, all_seeds(doc.seeds))
        except SpecErrors as exc:
            raise SpecErrors(_in_variant(i, file, v.name) for i in exc.issues) from None
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


def parent_run(ablation: Ablation, runs_dir: Path, tracking_uri: str | None) -> tuple[Any, str]:
    """The study's MLflow parent run (created once, reopened by later invocations)."""
    from crmlab.runners.tracking import Tracker, flatten

    state_file = state_path(runs_dir, ablation)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    tracker = Tracker(tracking_uri, ablation.doc.name)
    tags = {
        "crmlab.kind": "ablation",
        "crmlab.study_key": ablation.key,
        "crmlab.study": str(ablation.path),
        "crmlab.runs_dir": str(runs_dir.resolve()),
    }
    # a kill between creating the parent run and writing its id leaves it RUNNING: reopen it, make no second one
    reopen = state.get("parent_run_id") or tracker.unfinished_run(
        {k: tags[k] for k in ("crmlab.study_key", "crmlab.runs_dir")}
    )
    run_id = tracker.start(f"{ablation.doc.name} (study)", tags, reopen)
    if not state:
        tracker.log_params(
            flatten(
                {
                    "seeds": ablation.doc.model_dump(mode="json")["seeds"],
                    "variants": [v.name for v in ablation.variants],
                }
            )
        )
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parent_run_id": run_id}))
        os.replace(tmp, state_file)
    return tracker, run_id


def run_one(
    ablation: Ablation, name: str, seed: int, runs_dir: Path, tracking_uri: str | None, parent_id: str | None
) -> RunResult:
    """Train (or fetch, if finished) one variant x seed."""
    from crmlab.runners.tracking import Tracker
    from crmlab.runners.train import train_run

    v = ablation.variant(name)
    recipe = ablation.run_recipe(name, seed)
    tracker, tags = None, {}
    if parent_id is not None:
        tracker = Tracker(tracking_uri, ablation.doc.name)
        reference = ablation.variant(REFERENCE).parameters
        tags = {
            "mlflow.parentRunId": parent_id,
            "crmlab.variant": name,
            "crmlab.seed": str(seed),
            "crmlab.patch": yamlio.dumps(v.patch.model_dump(exclude_defaults=True)) or "{}",
            "crmlab.parameter_delta": str(v.parameters - reference),
        }
    return train_run(
        v.graph,
        recipe,
        ablation.datasets,
        ablation.tests,
        runs_dir,
        tracker=tracker,
        run_name=f"{name} seed={seed}",
        tags=tags,
        verbose=0,
    )


def collect(ablation: Ablation, runs_dir: Path) -> tuple[dict[tuple[str, int], RunResult], list[str]]:
    """Finished results of the study (nothing is trained) and the names of the runs still missing.

    With adaptive seeds the looks are replayed over the finished runs (:func:`~crmlab.search.seeds.plan_seeds`):
    the seeds added for undecided variants are found, and the runs the next look needs are missing.
    """
    from crmlab.runners.outputs import finished_result

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


def _watch_parent(parent: int) -> None:
    """Pool initializer: end this worker as soon as the process that started it is gone (killed), instead of
    training the runs still queued for it. The run it was training keeps its last committed checkpoint."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="crmlab-parent-watch", daemon=True).start()


_LOADED: dict[tuple[str, tuple[str, ...]], Ablation] = {}
"""Studies loaded in this worker process (a pool worker trains several runs of one study)."""


def _worker(args: tuple[Any, ...]) -> tuple[str, int]:
    """Process-pool entry: load the study in this process (once; the parent checked it and counted each variant's
    parameters, so its models are not assembled again) and train one run (returns its name and seed)."""
    path, overrides, parameters, name, seed, runs_dir, uri, parent, backend = args
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    key = (path, tuple(overrides))
    if key not in _LOADED:
        _LOADED[key] = load_ablation(path, overrides, assemble=False)
        for v in _LOADED[key].variants:
            v.parameters = parameters[v.name]
    run_one(_LOADED[key], name, seed, Path(runs_dir), uri, parent)
    return name, seed


def run_ablation(
    ablation: Ablation,
    runs_dir: Path,
    tracking_uri: str | None = None,
    jobs: int = 1,
    mlflow: bool = True,
    progress: Any = print,
) -> tuple[dict[tuple[str, int], RunResult], list[Any], Path]:
    """Train every variant x seed not yet finished, then compare against canonical.

    With adaptive seeds (:mod:`crmlab.search.seeds`) training goes in rounds: after each round the variants still
    undecided on some test set get the next seed (and canonical with them), until every variant is decided or has
    the most seeds. Runs are keyed by seed, so an interrupted study resumes where it was with the same command.

    A run that fails (:class:`~crmlab.runners.outputs.TrainingFailed`: a diverged loss) does not stop the others: it is
    recorded in ``ablation.failed``, its MLflow run is marked FAILED, its variant is left out of the comparison and
    listed in ``report.md`` and on the parent run (tag ``crmlab.failed_runs``). If canonical fails there is nothing
    to compare against: the other runs are still trained, then ``TrainingFailed`` is raised.

    Returns:
        The results keyed by (variant, seed), the comparison rows and the path of ``report.md`` (also logged,
        with the plots and per-variant metrics, on the study's MLflow parent run).
    """
    parent_id = None
    tracker = None
    if mlflow:
        tracker, parent_id = parent_run(ablation, runs_dir, tracking_uri)
    ablation.failed = {}
    results: dict[tuple[str, int], RunResult] = {}
    while True:
        dropped = sorted({name for name, _ in ablation.failed})
        if REFERENCE in dropped:
            break
        plan = plan_seeds(ablation, results, dropped)
        if plan.complete:
            break
        if plan.looks > 1:
            added = ", ".join(f"{n} seed={s}" for n, s in plan.needed)
            progress(f"look {plan.looks}: undecided variants get another seed: {added}")
        _train_round(ablation, plan, results, runs_dir, tracking_uri, parent_id, jobs, progress)
    if REFERENCE in dropped:
        if tracker is not None:
            tracker.set_tags({"crmlab.failed_runs": _failed_text(ablation)})
            tracker.end("FAILED")
        reasons = _failed_text(ablation)
        raise TrainingFailed(f"{ablation.path}: {REFERENCE} failed, nothing to compare against: {reasons}")
    compared = dataclasses.replace(ablation, variants=[v for v in ablation.variants if v.name not in dropped])
    rows = compare(compared, results, plan.seeds)
    files = write_all(compared, rows, results, runs_dir)
    if ablation.failed:
        with open(files[0], "a") as fh:
            fh.write("\n## Failed runs (left out of the comparison)\n\n")
            fh.writelines(f"- {name} seed={seed}: {reason}\n" for (name, seed), reason in ablation.failed.items())
    if tracker is not None:
        log_comparison(rows, files, tracker)
        if ablation.failed:
            tracker.set_tags({"crmlab.failed_runs": _failed_text(ablation)})
        tracker.end("FINISHED")
    return results, rows, files[0]


def _train_round(
    ablation: Ablation,
    plan: SeedPlan,
    results: dict[tuple[str, int], RunResult],
    runs_dir: Path,
    tracking_uri: str | None,
    parent_id: str | None,
    jobs: int,
    progress: Any,
) -> None:
    """Train (or fetch) the runs ``plan`` needs into ``results``; failed runs go to ``ablation.failed``."""
    todo = plan.needed
    total = len(todo)

    def failed(done: int, name: str, seed: int, exc: TrainingFailed) -> None:
        ablation.failed[(name, seed)] = str(exc)
        progress(f"[{done}/{total}] {name} seed={seed}: FAILED: {exc}")

    if jobs > 1:
        backend = os.environ.get("KERAS_BACKEND")
        parameters = {v.name: v.parameters for v in ablation.variants}
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, spawn, initializer=_watch_parent, initargs=(os.getpid(),)) as pool:
            study = (str(ablation.path), ablation.overrides, parameters)
            args = [(*study, n, s, str(runs_dir), tracking_uri, parent_id, backend) for n, s in todo]
            futures = [pool.submit(_worker, a) for a in args]
            for done, (future, (name, seed)) in enumerate(zip(futures, todo, strict=True), start=1):
                try:
                    future.result()
                except TrainingFailed as exc:
                    failed(done, name, seed, exc)
                    continue
                progress(f"[{done}/{total}] {name} seed={seed} done")
    for done, (name, seed) in enumerate(todo, start=1):
        if (name, seed) in ablation.failed:
            continue
        try:
            result = run_one(ablation, name, seed, runs_dir, tracking_uri, parent_id)
        except TrainingFailed as exc:
            failed(done, name, seed, exc)
            continue
        results[(name, seed)] = result
        if jobs <= 1:
            r = next(iter(result.test_metrics.values()))["pearson_r"]
            progress(f"[{done}/{total}] {name} seed={seed}: r = {r:.4f} ({next(iter(result.test_metrics))})")


def _failed_text(ablation: Ablation) -> str:
    return "; ".join(f"{name} seed={seed}: {reason}" for (name, seed), reason in ablation.failed.items())
