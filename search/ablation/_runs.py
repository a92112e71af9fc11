"""Training an ablation study: one run per variant x seed, round after round under adaptive seeds, in this process
or on worker processes (``--jobs``), then the comparison against canonical.

Runs are trained by :func:`crmlab.runners.training._train.train_run`, whose run keys make a re-run skip finished runs
and resume the unfinished one. MLflow: one parent run per study (:func:`parent_run`; its id is kept beside the runs so a
re-run reuses it), one child run per variant x seed linked by the ``mlflow.parentRunId`` tag and tagged with variant,
seed, patch and parameter delta. Loading, patching and collecting finished runs are
:mod:`crmlab.search.ablation._study`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crmlab.registry import yamlio
from crmlab.runners.parallel import Outcome, Slot, WorkerPool, import_keras_quietly, run_tasks
from crmlab.runners.rundir import Owner, RunResult, TrainingFailed, finished_result, record_study
from crmlab.search.ablation._comparison import REFERENCE, compare
from crmlab.search.ablation._comparison_log import log_comparison
from crmlab.search.ablation._progress import StudyProgress
from crmlab.search.ablation._report import write_all
from crmlab.search.ablation._seeds import SeedPlan, plan_seeds
from crmlab.search.ablation._study import Ablation, load_ablation, state_path

__all__ = ["Serve", "parent_run", "run_ablation", "run_one", "run_task", "worker_ablation"]


def parent_run(ablation: Ablation, runs_dir: Path, tracking_uri: str | None) -> tuple[Any, str]:
    """The study's MLflow parent run (created once, reopened by later invocations:
    :func:`crmlab.runners.tracking._tracker.open_parent_run`); the first invocation logs the seeds and variants as its
    parameters and records its id beside the runs."""
    from crmlab.runners.tracking import open_parent_run

    state_file = state_path(runs_dir, ablation)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    tags = {"crmlab.kind": "ablation", "crmlab.study_key": ablation.key, "crmlab.study": str(ablation.path)}
    params = None
    if not state:
        params = {
            "seeds": ablation.doc.model_dump(mode="json")["seeds"],
            "variants": [v.name for v in ablation.variants],
        }
    tracker, run_id = open_parent_run(
        tracking_uri,
        ablation.doc.name,
        f"{ablation.doc.name} (study)",
        runs_dir,
        tags,
        "crmlab.study_key",
        state.get("parent_run_id"),
        params,
    )
    if not state:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parent_run_id": run_id}))
        os.replace(tmp, state_file)
    return tracker, run_id


def run_one(
    ablation: Ablation,
    name: str,
    seed: int,
    runs_dir: Path,
    tracking_uri: str | None,
    parent_id: str | None,
) -> RunResult:
    """Train (or fetch, if finished) one variant x seed."""
    from crmlab.runners.tracking import Tracker
    from crmlab.runners.training import train_run

    v = ablation.variant(name)
    recipe = ablation.run_recipe(name, seed)
    tracker, tags = None, {}
    owner = Owner(ablation.doc.name, "ablation", ablation.key, f"{name} seed={seed}")
    if parent_id is not None:
        tracker = Tracker(tracking_uri, ablation.doc.name)
        reference = ablation.variant(REFERENCE).parameters
        patch = yamlio.dumps(v.patch.model_dump(exclude_defaults=True)).strip() or "{}"
        tags = {
            "mlflow.parentRunId": parent_id,
            "crmlab.variant": name,
            "crmlab.seed": str(seed),
            "crmlab.patch": patch,
            "mlflow.note.content": f"{name}, seed {seed}: canonical with this patch\n\n```yaml\n{patch}\n```",
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
        owner=owner,
    )


Serve = Callable[[Ablation, SeedPlan, dict[tuple[str, int], RunResult], str | None, Callable[[str], None]], None]
"""Trains one look's runs elsewhere: ``serve(ablation, plan, results, parent_run_id, progress)`` fills ``results`` and
``ablation.failed`` for every run in ``plan.needed``."""

_LOADED: dict[tuple[str, tuple[str, ...]], Ablation] = {}
"""Studies loaded in this worker process (a worker trains several runs of one study)."""


def run_task(args: tuple[Any, ...]) -> tuple[str, int]:
    """Worker entry (:mod:`crmlab.runners.parallel._pool`, and ``crmlab worker``): load the study in this process
    (once; the parent checked it and counted each variant's parameters, so its models are not assembled again) and
    train one run (returns its name and seed); the run records this worker's placement (``placement.json``).

    Args:
        args: ``(study path, overrides, parameters by variant, variant, seed, runs folder, tracking URI, MLflow
            parent run id, Keras backend)``.
    """
    path, overrides, parameters, name, seed, runs_dir, uri, parent, backend = args
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()
    run_one(worker_ablation(path, overrides, parameters), name, seed, Path(runs_dir), uri, parent)
    return name, seed


def worker_ablation(path: str, overrides: Sequence[str], parameters: dict[str, int]) -> Ablation:
    """The study as a worker process loads it, once per process: not assembled, each variant's parameter count
    taken from ``parameters`` (counted by the process that checked the study)."""
    key = (path, tuple(overrides))
    if key not in _LOADED:
        _LOADED[key] = load_ablation(path, overrides, assemble=False)
        for v in _LOADED[key].variants:
            v.parameters = parameters[v.name]
    return _LOADED[key]


def run_ablation(
    ablation: Ablation,
    runs_dir: Path,
    tracking_uri: str | None = None,
    jobs: int = 1,
    mlflow: bool = True,
    progress: Any = print,
    slots: Sequence[Slot] | None = None,
    serve: Serve | None = None,
) -> tuple[dict[tuple[str, int], RunResult], list[Any], Path]:
    """Train every variant x seed not yet finished, then compare against canonical.

    With adaptive seeds (:mod:`crmlab.search.ablation._seeds`) training goes in rounds: after each round the variants
    still undecided on some test set get the next seed (and canonical with them), until every variant is decided or has
    the most seeds. Runs are keyed by seed, so an interrupted study resumes where it was with the same command.

    With ``jobs`` > 1 (or several ``slots``, see :mod:`crmlab.runners.parallel._placement`) runs train in worker
    processes (:mod:`crmlab.runners.parallel._pool`), one per slot, each on its slot's devices; this process only
    collects their results from the runs folder. A worker that dies fails only its run, with a one-line reason; a run
    that ran out of memory is retried once with fewer processes sharing memory.

    With ``serve`` (``crmlab ablate --storage``: :class:`crmlab.search.served.QueueDriver`) each look's runs are
    handed to it instead: it enqueues them in the shared storage and waits for ``crmlab worker`` processes.

    A run that fails (:class:`~crmlab.runners.rundir._results.TrainingFailed`: a diverged loss; or, in a worker, any
    error) does not stop the others: it is recorded in ``ablation.failed``, its MLflow run is marked FAILED, its variant
    is left out of the comparison and listed in ``report.md`` and on the parent run (tag ``crmlab.failed_runs``). If
    canonical fails there is nothing to compare against: the other runs are still trained, then ``TrainingFailed`` is
    raised.

    Returns:
        The results keyed by (variant, seed), the comparison rows and the path of ``report.md`` (also logged,
        with the plots and per-variant metrics, on the study's MLflow parent run).
    """
    parent_id = None
    tracker = None
    if mlflow:
        tracker, parent_id = parent_run(ablation, runs_dir, tracking_uri)
    owner = Owner(ablation.doc.name, "ablation", ablation.key)
    record_study(runs_dir, owner, "start")
    ablation.failed = {}
    results: dict[tuple[str, int], RunResult] = {}
    slots = list(slots) if slots is not None else [Slot(i) for i in range(jobs)]
    pool = WorkerPool(slots, run_task) if len(slots) > 1 and serve is None else None
    try:
        plan = _train_rounds(ablation, results, runs_dir, tracking_uri, parent_id, pool, progress, serve)
    finally:
        if pool is not None:
            pool.close()
    dropped = sorted({name for name, _ in ablation.failed})
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
        log_comparison(rows, files, tracker, ablation.doc.metric)
        if ablation.failed:
            tracker.set_tags({"crmlab.failed_runs": _failed_text(ablation)})
        tracker.end("FINISHED")
    record_study(runs_dir, owner, "finish")
    return results, rows, files[0]


def _train_rounds(
    ablation: Ablation,
    results: dict[tuple[str, int], RunResult],
    runs_dir: Path,
    tracking_uri: str | None,
    parent_id: str | None,
    pool: WorkerPool | None,
    progress: Any,
    serve: Serve | None,
) -> SeedPlan:
    """Train round after round until the seed plan is complete (or canonical failed); returns the last plan."""
    while True:
        dropped = sorted({name for name, _ in ablation.failed})
        plan = plan_seeds(ablation, results, dropped)
        if REFERENCE in dropped or plan.complete:
            return plan
        if plan.looks > 1:
            added = ", ".join(f"{n} seed={s}" for n, s in plan.needed)
            progress(f"look {plan.looks}: undecided variants get another seed: {added}")
        if serve is not None:
            serve(ablation, plan, results, parent_id, progress)
        elif pool is None:
            _train_here(ablation, plan, results, runs_dir, tracking_uri, parent_id, progress)
        else:
            _train_in_workers(ablation, plan, results, runs_dir, tracking_uri, parent_id, pool, progress)


def _train_here(
    ablation: Ablation,
    plan: SeedPlan,
    results: dict[tuple[str, int], RunResult],
    runs_dir: Path,
    tracking_uri: str | None,
    parent_id: str | None,
    progress: Any,
) -> None:
    """Train (or fetch) the runs ``plan`` needs in this process; failed runs go to ``ablation.failed``."""
    status = StudyProgress(len(plan.needed), progress)
    for name, seed in plan.needed:
        status.starting(f"{name} seed={seed}")
        try:
            result = run_one(ablation, name, seed, runs_dir, tracking_uri, parent_id)
        except TrainingFailed as exc:
            ablation.failed[(name, seed)] = str(exc)
            status.finished(f"{name} seed={seed}", f"FAILED: {exc}")
            continue
        results[(name, seed)] = result
        status.finished(f"{name} seed={seed}", _first_r(result))


def _train_in_workers(
    ablation: Ablation,
    plan: SeedPlan,
    results: dict[tuple[str, int], RunResult],
    runs_dir: Path,
    tracking_uri: str | None,
    parent_id: str | None,
    pool: WorkerPool,
    progress: Any,
) -> None:
    """Train the runs ``plan`` needs on the pool's workers (longest first) and collect their results from the runs
    folder; this process trains nothing. A failed run (an error, its worker's death) goes to ``ablation.failed``."""
    todo = []
    for name, seed in plan.needed:
        found = finished_result(
            ablation.variant(name).graph, ablation.run_recipe(name, seed), ablation.datasets, ablation.tests, runs_dir
        )
        if found is not None:
            results[(name, seed)] = found
        else:
            todo.append((name, seed))
    todo.sort(key=lambda run: -sum(stage.epochs for stage in ablation.run_recipe(*run).stages))
    parameters = {v.name: v.parameters for v in ablation.variants}
    study = (str(ablation.path), ablation.overrides, parameters)
    backend = os.environ.get("KERAS_BACKEND")
    tasks = [((n, s), (*study, n, s, str(runs_dir), tracking_uri, parent_id, backend)) for n, s in todo]
    status = StudyProgress(len(todo), progress)

    def done(outcome: Outcome) -> None:
        name, seed = outcome.key
        where = outcome.slot.describe() if outcome.slot is not None else ""
        label = f"{name} seed={seed}"
        found = None
        if outcome.ok:
            v = ablation.variant(name)
            found = finished_result(
                v.graph, ablation.run_recipe(name, seed), ablation.datasets, ablation.tests, runs_dir
            )
        if found is None:
            reason = outcome.error or "its worker finished without a result in the runs folder"
            ablation.failed[(name, seed)] = reason
            status.finished(label, f"FAILED ({where}): {reason}")
            return
        results[(name, seed)] = found
        status.finished(label, _first_r(found, where))

    def retry(outcome: Outcome) -> None:
        name, seed = outcome.key
        progress(f"{name} seed={seed} ran out of memory ({outcome.error}); retrying it with fewer runs sharing memory")

    run_tasks(pool.slots, run_task, tasks, done, retry, pool)


def _first_r(result: RunResult, where: str = "") -> str:
    """``r = 0.7450 (TEST)``: Pearson r on the first test set, and where the run trained when given."""
    test, metrics = next(iter(result.test_metrics.items()))
    return f"r = {metrics['pearson_r']:.4f} ({test}{'; ' + where if where else ''})"


def _failed_text(ablation: Ablation) -> str:
    return "; ".join(f"{name} seed={seed}: {reason}" for (name, seed), reason in ablation.failed.items())
