"""``backend: optuna``: a study in an Optuna storage, worked on by any number of processes.

Storage (:mod:`crmlab.search.storage._rdb`): ``sqlite:///<runs-dir>/optuna.db`` by default (embedded, no server);
``--storage postgresql://...`` (or any SQLAlchemy URL Optuna accepts) for workers on several machines. Every worker
(``--workers N`` local processes, or ``crmlab search STUDY --storage URL`` started anywhere) loops: run a waiting
(retried) trial or sample a new one while fewer than ``trials`` are complete, pruned, failed for a reason, running
or waiting; then wait until no trial of the study is running, so a trial whose worker died is failed by the
heartbeat check (after ``grace`` seconds without a heartbeat) and retried by a worker still alive. Trials of a dead
worker are retried with the same parameters, hence the same run key: the retry resumes the run from its last
checkpoint. Running the same command again resumes the study. The study is inspectable with
``optuna-dashboard STORAGE_URL``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from crmlab.registry import CrmlabError
from crmlab.runners.parallel import Slot, death_reason, import_keras_quietly, run_tasks, slot_environment
from crmlab.runners.rundir import Owner, TrainingFailed, record_study
from crmlab.search.arch._leaderboard import TrialRow, short_value
from crmlab.search.arch._optuna_budget import SURPLUS_ATTR, budget_used
from crmlab.search.arch._optuna_costs import OBJECTIVES_ATTR, REJECTED_ATTR, objective_values, trial_costs
from crmlab.search.arch._optuna_importances import importances
from crmlab.search.arch._optuna_rows import trial_rows
from crmlab.search.arch._optuna_space import suggest
from crmlab.search.arch._optuna_study import CANONICAL_ATTR, PARENT_ATTR, open_study
from crmlab.search.arch._study import CANONICAL, Search, load_search
from crmlab.search.arch._trial import StopTrial, open_parent_run, run_trial, train_canonical
from crmlab.search.arch.backends._base import SearchBackend, SearchOptions, SearchRun, finish_search
from crmlab.search.storage import check_storage_url, default_storage, open_storage

__all__ = ["OptunaBackend", "TrialFailed", "run_optuna", "serve_search", "work"]


class TrialFailed(Exception):
    """A trial that cannot complete (diverged); Optuna records it FAIL and the study goes on."""


def _canonical(
    search: Search, study: optuna.Study, runs_dir: Path, uri: str | None, parent: str | None, slot: Slot | None
) -> dict:
    """Canonical's record, trained first if the study has none: here, or on the first worker's slot (so the
    parent of several workers never trains, and never touches a GPU)."""
    found = study.user_attrs.get(CANONICAL_ATTR)
    if found is None:
        if slot is None:
            found = _train_canonical((str(search.path), search.overrides, str(runs_dir), uri, parent, None))
        else:
            args = (str(search.path), search.overrides, str(runs_dir), uri, parent, os.environ.get("KERAS_BACKEND"))
            outcome = run_tasks([slot], _train_canonical, [(CANONICAL, args)])[CANONICAL]
            if not outcome.ok:
                raise TrainingFailed(f"{search.path}: {CANONICAL} failed, nothing to compare against: {outcome.error}")
            found = outcome.value
        study.set_user_attr(CANONICAL_ATTR, found)
    return found


def _train_canonical(args: tuple[str, list[str], str, str | None, str | None, str | None]) -> dict:
    """Train (or reuse) canonical; returns its record (``value``, ``tests`` metrics, ``run_key``). Also a worker
    entry, so it loads the search itself."""
    path, overrides, runs_dir, uri, parent, backend = args
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()
    search = load_search(path, overrides, assemble=False)
    result, value = train_canonical(search, Path(runs_dir), uri, parent)
    return {"value": value, "tests": result.test_metrics, "run_key": result.run_key}


def _objective(search: Search, runs_dir: Path, uri: str | None, parent: str | None, canonical: dict) -> Any:
    def objective(trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("worker_pid", os.getpid())
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if budget_used(earlier) >= search.doc.trials:  # another worker took the last place at the same moment
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise TrialFailed("surplus: the study's trials were all taken when this one started")
        values = suggest(trial, search.space)
        try:
            costs = trial_costs(search, trial, values)  # raises TrialPruned for an over-budget architecture
        except CrmlabError as exc:  # a cost that could not be measured (the probe process failed)
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise StopTrial("pruned")

        outcome = run_trial(
            search,
            values,
            runs_dir,
            label=f"trial {trial.number}",
            tracking_uri=uri,
            parent_id=parent,
            report=None if search.multi else report,  # Optuna refuses trial.report with several objectives
            canonical=canonical["tests"],
        )
        trial.set_user_attr("epochs", len(outcome.curve))
        if outcome.mlflow_run_id:
            trial.set_user_attr("mlflow_run_id", outcome.mlflow_run_id)
        if outcome.result is not None:
            trial.set_user_attr("run_key", outcome.result.run_key)
        if outcome.deltas:
            trial.set_user_attr("deltas", outcome.deltas)
        if outcome.state == "pruned":
            raise optuna.TrialPruned()
        if outcome.state == "failed":
            trial.set_user_attr("fail_reason", outcome.reason)
            raise TrialFailed(outcome.reason)
        try:
            scores = objective_values(search, outcome, costs)
        except ValueError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None
        trial.set_user_attr(OBJECTIVES_ATTR, dict(zip([g.metric for g in search.goals], scores, strict=True)))
        return scores if search.multi else scores[0]

    return objective


def work(
    search: Search,
    study: optuna.Study,
    runs_dir: Path,
    uri: str | None,
    parent: str | None,
    canonical: dict,
    progress: Any = print,
) -> None:
    """Run trials of ``study`` until its budget is used and no trial is running (see the module docstring)."""
    objective = _objective(search, runs_dir, uri, parent, canonical)
    while True:
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if budget_used(trials) >= search.doc.trials and not waiting:
            if not any(t.state == TrialState.RUNNING for t in trials):
                return
            optuna.storages.fail_stale_trials(study)
            time.sleep(min(search.doc.optuna.heartbeat.interval, 5))
            continue
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
        last = max(
            (t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker_pid") == os.getpid()),
            key=lambda t: t.number,
            default=None,
        )
        if last is not None and progress is not None and not last.user_attrs.get(SURPLUS_ATTR):
            progress(_trial_line(search, last))


def _trial_line(search: Search, trial: optuna.trial.FrozenTrial) -> str:
    """``trial N: complete val_pearson_r=0.7123 {params}``: a finished trial's progress line (every objective's
    value; a trial rejected before training says which constraint it broke)."""
    state = trial.state.name.lower()
    if REJECTED_ATTR in trial.user_attrs:
        return f"trial {trial.number}: {state}, {trial.user_attrs[REJECTED_ATTR]} (0 epochs) {trial.params}"
    values = trial.values or [None] * len(search.goals)
    shown = " ".join(
        f"{g.metric}={'-' if v is None else short_value(v) if g.is_cost else f'{v:.4f}'}"
        for g, v in zip(search.goals, values, strict=True)
    )
    return f"trial {trial.number}: {state} {shown} {trial.params}"


def _worker_main(args: tuple[str, list[str], str, str, str | None, str | None, int, str | None]) -> None:
    """Process entry of ``--workers``: load the search here and work on the study."""
    path, overrides, storage_url, runs_dir, uri, parent, index, backend = args
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()
    search = load_search(path, overrides, assemble=False)
    storage = open_storage(storage_url, Path(runs_dir), search.doc.optuna.heartbeat)
    study = open_study(search, storage, worker=index)
    canonical = study.user_attrs[CANONICAL_ATTR]
    work(
        search,
        study,
        Path(runs_dir),
        uri,
        parent,
        canonical,
        progress=lambda line: print(f"[worker {index}] {line}", flush=True),
    )


def serve_search(
    path: str, overrides: list[str], storage_url: str, runs_dir: str, uri: str | None, progress: Any = print
) -> None:
    """Work on a search driven elsewhere (``crmlab search --jobs 0``, served to ``crmlab worker``): canonical first
    if no worker has trained it yet (a second worker doing the same waits on the run's lock and reuses it), then trials
    until the budget is used and no trial is running. Each worker samples with its own seed."""
    import_keras_quietly()
    search = load_search(path, overrides, assemble=False)
    storage = open_storage(storage_url, Path(runs_dir), search.doc.optuna.heartbeat)
    study = open_study(search, storage, worker=os.getpid())
    parent = study.user_attrs.get(PARENT_ATTR)
    canonical = _canonical(search, study, Path(runs_dir), uri, parent, None)
    work(search, study, Path(runs_dir), uri, parent, canonical, progress)


def _wait_for_workers(search: Search, study: optuna.Study, progress: Any) -> dict:
    """Drive without training (``--jobs 0``): wait until workers have trained canonical and used the trial budget,
    with no trial running or waiting, failing stale trials (Optuna retries them); report each finished trial once.
    Returns canonical's record."""
    seen: set[int] = set()
    canonical = None
    while True:
        optuna.storages.fail_stale_trials(study)
        if canonical is None:
            canonical = study.user_attrs.get(CANONICAL_ATTR)
            if canonical is not None:
                progress(f"{CANONICAL}: {search.metric} = {canonical['value']:.4f}")
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in seen and not t.user_attrs.get(SURPLUS_ATTR):
                seen.add(t.number)
                progress(f"{_trial_line(search, t)} ({t.user_attrs.get('worker', '?')})")
        busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        if canonical is not None and budget_used(trials) >= search.doc.trials and not busy:
            return canonical
        time.sleep(min(search.doc.optuna.heartbeat.interval, 2))


def _run_workers(study: tuple[Any, ...], slots: Sequence[Slot], progress: Any) -> None:
    """One worker process per slot, each started with its slot's devices; a worker that dies is reported and its
    slot gets a new one (which retries the dead worker's trial once its heartbeat is stale), at most twice per
    slot in all. This process trains nothing."""
    context = multiprocessing.get_context("spawn")
    backend = os.environ.get("KERAS_BACKEND")

    def start(i: int) -> Any:
        proc = context.Process(target=_worker_main, args=((*study, i, backend),))
        with slot_environment(slots[i]):
            proc.start()
        return proc

    procs = {i: start(i) for i in range(len(slots))}
    restarts = 2 * len(slots)
    while procs:
        ready = wait([p.sentinel for p in procs.values()])
        for i, proc in list(procs.items()):
            if proc.sentinel not in ready:
                continue
            proc.join()
            del procs[i]
            if proc.exitcode:
                progress(f"{slots[i].describe()} (pid {proc.pid}): {death_reason(proc.exitcode)}; its trial is retried")
                if restarts > 0:
                    restarts -= 1
                    procs[i] = start(i)


def run_optuna(
    search: Search,
    runs_dir: Path,
    storage_url: str | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    mlflow: bool = True,
    progress: Any = print,
    slots: Sequence[Slot] = (),
    publish: Callable[[optuna.Study], None] | None = None,
) -> tuple[optuna.Study, list[TrialRow], dict]:
    """Canonical first, then the trials (in this process, or ``workers`` spawned processes, each on its slot of
    ``slots`` when given: :mod:`crmlab.runners.parallel._placement`); returns the study, its leaderboard rows and
    canonical's
    record (``value``, ``tests`` metrics, ``run_key``). With several workers canonical trains on the first one. With
    ``workers`` = 0 this process trains nothing: ``publish(study)`` (called once the study and its MLflow parent run
    exist) offers the study to ``crmlab worker`` processes (:func:`serve_search`), and this process waits for them."""
    storage = open_storage(storage_url, runs_dir, search.doc.optuna.heartbeat)
    study = open_study(search, storage)
    if search.multi and search.doc.optuna.pruner is None:
        progress(f"{len(search.goals)} objectives: no epoch pruning (Optuna prunes single-objective studies only)")
    parent = None
    tracker = None
    if mlflow:
        tracker, parent = open_parent_run(search, runs_dir, tracking_uri, study.user_attrs.get(PARENT_ATTR))
        if study.user_attrs.get(PARENT_ATTR) != parent:
            study.set_user_attr(PARENT_ATTR, parent)
    owner = Owner(search.doc.name, "search", search.key)
    record_study(runs_dir, owner, "start")
    try:
        if publish is not None:
            publish(study)
        if workers == 0:
            canonical = _wait_for_workers(search, study, progress)
            rows = finish_search(search, runs_dir, tracker, lambda: trial_rows(study, search), canonical)
            return study, rows, canonical
        slots = list(slots) or [Slot(i) for i in range(workers)]
        canonical = _canonical(search, study, runs_dir, tracking_uri, parent, slots[0] if workers > 1 else None)
        progress(f"{CANONICAL}: {search.metric} = {canonical['value']:.4f}")
        if workers > 1:
            args = (str(search.path), search.overrides, storage_url or default_storage(runs_dir), str(runs_dir))
            _run_workers((*args, tracking_uri, parent), slots, progress)
        else:
            work(search, study, runs_dir, tracking_uri, parent, canonical, progress)
    except BaseException:
        if tracker is not None:
            tracker.end("KILLED")
        raise
    rows = finish_search(search, runs_dir, tracker, lambda: trial_rows(study, search), canonical)
    return study, rows, canonical


class OptunaBackend(SearchBackend):
    """``backend: optuna``: trials in an Optuna storage (``--storage``), worked on by ``--workers`` processes."""

    def check_options(self, options: SearchOptions) -> None:
        """Every option applies to Optuna."""

    def connect(self, search: Search, runs_dir: Path, options: SearchOptions) -> None:
        """Open a server storage now (an unusable one is reported before training); SQLite is made on first use."""
        if check_storage_url(options.storage) != "sqlite":
            open_storage(options.storage, runs_dir, search.doc.optuna.heartbeat).engine.dispose()

    def run(self, search: Search, runs_dir: Path, options: SearchOptions) -> SearchRun:
        """:func:`run_optuna` with the options."""
        study, rows, canonical = run_optuna(
            search,
            runs_dir,
            options.storage,
            options.tracking_uri,
            options.workers,
            options.mlflow,
            options.progress,
            options.slots,
            options.publish,
        )
        return SearchRun(rows, canonical, study)

    def importances(self, search: Search, run: SearchRun) -> dict[str, float]:
        """fANOVA importances over the study's complete trials."""
        return importances(run.state)
