"""``backend: optuna``: a study in an Optuna storage, worked on by any number of processes.

Storage (:mod:`crmlab.search.optuna_storage`): ``sqlite:///<runs-dir>/optuna.db`` by default (embedded, no server);
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
import warnings
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from crmlab.registry.errors import CrmlabError
from crmlab.registry.space import BoolParam, ChoiceParam, FloatParam, IntParam, Space
from crmlab.runners.manifest import Owner, record_study
from crmlab.runners.outputs import TrainingFailed
from crmlab.runners.placement import Slot
from crmlab.runners.quiet import import_keras_quietly
from crmlab.runners.workers import death_reason, run_tasks, slot_environment
from crmlab.search.backend import SearchBackend, SearchOptions, SearchRun
from crmlab.search.leaderboard import TrialRow, log_summary
from crmlab.search.optuna_storage import check_storage_url, default_storage, open_storage
from crmlab.search.search import CANONICAL, Search, load_search
from crmlab.search.trial import StopTrial, open_parent_run, run_trial, train_canonical

__all__ = [
    "CANONICAL_ATTR",
    "KEY_ATTR",
    "PARENT_ATTR",
    "SURPLUS_ATTR",
    "OptunaBackend",
    "TrialFailed",
    "budget_used",
    "distributions",
    "importances",
    "make_pruner",
    "make_sampler",
    "open_study",
    "run_optuna",
    "suggest",
    "trial_rows",
    "work",
]

KEY_ATTR = "crmlab.search_key"
CANONICAL_ATTR = "crmlab.canonical"
PARENT_ATTR = "crmlab.mlflow_parent_run"
SURPLUS_ATTR = "surplus"
"""User attribute of a trial started when the budget was already taken (a race between workers): it is failed
before sampling, and counted nowhere."""


class TrialFailed(Exception):
    """A trial that cannot complete (diverged); Optuna records it FAIL and the study goes on."""


def make_sampler(search: Search, worker: int) -> optuna.samplers.BaseSampler:
    """The ``optuna.sampler`` of the study, seeded per worker."""
    o, seed = search.doc.optuna, search.doc.seed + 1000 * worker
    if o.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if o.sampler == "grid":
        grid = {p.key: p.finite_values for p in search.space}
        return optuna.samplers.GridSampler(grid, seed=seed)  # type: ignore[arg-type]
    if o.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=o.startup_trials, warn_independent_sampling=False
        )
    with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental" since Optuna 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=o.startup_trials, multivariate=True, group=True, constant_liar=True
        )


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    """The ``optuna.pruner`` of the study, on the epochs of the recipe's last stage."""
    o = search.doc.optuna
    last = search.canonical[1].stages[-1]
    epochs = search.canonical[1].stage_epochs(last)
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.startup_trials, n_warmup_steps=o.warmup_epochs)
    if o.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(o.warmup_epochs, 1), reduction_factor=3)
    if o.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(o.warmup_epochs, 1), max_resource=max(epochs, 2))
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample the active parameters of ``space`` in order (an inactive one is not suggested, so not recorded)."""
    values: dict[str, Any] = {}
    for p in space:
        if not space.is_active(p, values):
            continue
        s = p.spec
        if isinstance(s, ChoiceParam):
            values[p.key] = trial.suggest_categorical(p.key, s.values)
        elif isinstance(s, BoolParam):
            values[p.key] = trial.suggest_categorical(p.key, [True, False])
        elif isinstance(s, IntParam):
            values[p.key] = trial.suggest_int(p.key, s.low, s.high, step=s.step, log=s.log)
        elif isinstance(s, FloatParam):
            values[p.key] = trial.suggest_float(p.key, s.low, s.high, step=s.step, log=s.log)
    return values


def distributions(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter's Optuna distribution (as :func:`suggest` samples it)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in space:
        s = p.spec
        if isinstance(s, ChoiceParam):
            out[p.key] = optuna.distributions.CategoricalDistribution(s.values)
        elif isinstance(s, BoolParam):
            out[p.key] = optuna.distributions.CategoricalDistribution([True, False])
        elif isinstance(s, IntParam):
            out[p.key] = optuna.distributions.IntDistribution(s.low, s.high, log=s.log, step=s.step)
        elif isinstance(s, FloatParam):
            out[p.key] = optuna.distributions.FloatDistribution(s.low, s.high, log=s.log, step=s.step)
    return out


def open_study(search: Search, storage: RDBStorage, worker: int = 0) -> optuna.Study:
    """Create or load the study named after the search; one made from a different search is an error."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=search.doc.name,
            storage=storage,
            sampler=make_sampler(search, worker),
            pruner=make_pruner(search),
            direction=search.doc.objective.direction,
            load_if_exists=True,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"--storage: cannot open study '{search.doc.name}' in {storage.url}: {first}") from None
    key = study.user_attrs.get(KEY_ATTR)
    if key is None and study.trials:
        key = "(not made by crmlab search)"
    if key is not None and key != search.key:
        raise CrmlabError(
            f"{search.path}: name: study '{search.doc.name}' in {storage.url} holds a different search (its graph, "
            "recipe, data, space or objective changed); give this one another name or use another --storage"
        )
    if key is None:
        study.set_user_attr(KEY_ATTR, search.key)
    return study


def budget_used(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials that count against ``trials``: done (complete, pruned, failed for a reason) or under way.

    A trial failed by the heartbeat check (its worker died) does not count: its retry, a waiting trial, does; nor
    does a surplus trial (see :data:`SURPLUS_ATTR`), which has no ``fail_reason``.
    """
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(t.state in counted or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs) for t in trials)


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
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("worker_pid", os.getpid())
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if budget_used(earlier) >= search.doc.trials:  # another worker took the last place at the same moment
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise TrialFailed("surplus: the study's trials were all taken when this one started")
        values = suggest(trial, search.space)

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
            report=report,
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
        assert outcome.value is not None
        return outcome.value

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
            value = f"{last.value:.4f}" if last.value is not None else "-"
            progress(f"trial {last.number}: {last.state.name.lower()} {search.metric}={value} {last.params}")


def _worker_main(args: tuple[str, list[str], str, str, str | None, str | None, int, str | None]) -> None:
    """Process entry of ``--workers``: load the search here and work on the study."""
    path, overrides, storage_url, runs_dir, uri, parent, index, backend = args
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()
    search = load_search(path, overrides, assemble=False)
    storage = open_storage(storage_url, Path(runs_dir), search)
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
) -> tuple[optuna.Study, list[TrialRow], dict]:
    """Canonical first, then the trials (in this process, or ``workers`` spawned processes, each on its slot of
    ``slots`` when given: :mod:`crmlab.runners.placement`); returns the study, its leaderboard rows and canonical's
    record (``value``, ``tests`` metrics, ``run_key``). With several workers canonical trains on the first one."""
    storage = open_storage(storage_url, runs_dir, search)
    study = open_study(search, storage)
    parent = None
    tracker = None
    if mlflow:
        tracker, parent = open_parent_run(search, runs_dir, tracking_uri, study.user_attrs.get(PARENT_ATTR))
        if study.user_attrs.get(PARENT_ATTR) != parent:
            study.set_user_attr(PARENT_ATTR, parent)
    owner = Owner(search.doc.name, "search", search.key)
    record_study(runs_dir, owner, "start")
    try:
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
    record_study(runs_dir, owner, "finish")
    rows = trial_rows(study)
    if tracker is not None:
        log_summary(tracker, search.metric, search.doc.objective.direction, rows, canonical)
        tracker.end("FINISHED")
    return study, rows, canonical


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """The leaderboard rows of the study's finished trials (surplus trials left out)."""
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or t.user_attrs.get(SURPLUS_ATTR):
            continue
        if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
            reason = "its worker stopped (no heartbeat); retried"
        else:
            reason = t.user_attrs.get("fail_reason", "")
        rows.append(
            TrialRow(
                t.number,
                states[t.state],
                t.value,
                dict(t.params),
                int(t.user_attrs.get("epochs", 0)),
                dict(t.user_attrs.get("deltas", {})),
                reason,
            )
        )
    return rows


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the complete trials (parameters present in all of them), or ``{}``."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}
    try:
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        )
    except (ValueError, RuntimeError):
        return {}


class OptunaBackend(SearchBackend):
    """``backend: optuna``: trials in an Optuna storage (``--storage``), worked on by ``--workers`` processes."""

    def check_options(self, options: SearchOptions) -> None:
        """Every option applies to Optuna."""

    def connect(self, search: Search, runs_dir: Path, options: SearchOptions) -> None:
        """Open a server storage now (an unusable one is reported before training); SQLite is made on first use."""
        if check_storage_url(options.storage) != "sqlite":
            open_storage(options.storage, runs_dir, search).engine.dispose()

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
        )
        return SearchRun(rows, canonical, study)

    def importances(self, search: Search, run: SearchRun) -> dict[str, float]:
        """fANOVA importances over the study's complete trials."""
        return importances(run.state)
