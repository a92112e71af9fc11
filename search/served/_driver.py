"""The driver of a served ablation: each look's missing runs go into the shared Optuna storage as enqueued trials,
workers (:mod:`crmlab.search.served._worker`) on any machine train them, the driver waits and collects the results
from the shared runs folder, and :func:`~crmlab.search.ablation.run_ablation` decides and plans the next look.

Nothing here schedules: Optuna's RDB storage is the queue. A trial is claimed atomically (the trial row is locked
``FOR UPDATE`` while its state goes from WAITING to RUNNING), leased by heartbeats, and the trial of a worker that
went silent for the grace period is failed and enqueued again by Optuna's ``RetryHeartbeatStaleTrialCallback``
(``fail_stale_trials``, called by the driver and the workers). Two drivers of one study do not enqueue a run twice:
the check and the enqueue happen under a PostgreSQL advisory lock (an ``flock`` on the runs folder for other
storages), and a run key with a waiting, running or complete trial is never enqueued again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from crmlab.registry import CrmlabError
from crmlab.runners.rundir import RunResult, data_hashes, finished_result, run_key
from crmlab.search.ablation import Ablation, SeedPlan
from crmlab.search.served._record import KIND_ATTR, STUDY_PREFIX, Record, runs_marker
from crmlab.search.served._retry import fail_stale, retrying
from crmlab.search.storage import Heartbeat, check_storage_url, open_storage, redact

__all__ = ["LIVE", "QueueDriver", "ablation_run_key", "study_name"]

LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
"""Trial states that hold a run key: waiting to be claimed, training, or trained."""


def ablation_run_key(ablation: Ablation, name: str, seed: int) -> str:
    """The run key of variant ``name`` of ``ablation`` at ``seed`` (what a served trial names)."""
    hashes = data_hashes(ablation.datasets, ablation.tests)
    return run_key(ablation.variant(name).graph, ablation.run_recipe(name, seed), hashes)


def study_name(ablation: Ablation) -> str:
    """The Optuna study of a served ablation: ``crmlab-ablation:<study key>``."""
    return f"{STUDY_PREFIX}{ablation.key}"


class QueueDriver:
    """Trains each look of :func:`~crmlab.search.ablation.run_ablation` through the shared storage (its ``serve``).

    Args:
        url: the Optuna storage URL (PostgreSQL for workers on other machines).
        ablation: the loaded study.
        runs_dir: the shared runs folder (the same path on every machine).
        tracking_uri: the MLflow tracking URI the workers log to (a server for workers on other machines).
        heartbeat: a worker's heartbeat interval (seconds); its trial is failed and enqueued again after four silent
            intervals.
        poll: seconds between two looks at the storage while waiting.
    """

    def __init__(
        self,
        url: str,
        ablation: Ablation,
        runs_dir: Path,
        tracking_uri: str | None,
        heartbeat: int = 30,
        poll: float = 2.0,
    ) -> None:
        self.scheme = check_storage_url(url)
        self.ablation, self.runs_dir, self.tracking_uri = ablation, Path(runs_dir).resolve(), tracking_uri
        self.heartbeat, self.poll = heartbeat, poll
        self.storage = open_storage(url, self.runs_dir, Heartbeat(interval=heartbeat, grace=4 * heartbeat))
        self.runs_id = runs_marker(self.runs_dir, create=True)
        self.hashes = data_hashes(ablation.datasets, ablation.tests)
        self._study: optuna.Study | None = None
        self._enqueued: set[str] = set()

    def study(self, parent_id: str | None) -> optuna.Study:
        """The study's Optuna study, created with its :class:`Record` on first use (a re-started driver of the same
        study, same code and same runs folder finds it and goes on; other settings are refused)."""
        if self._study is not None:
            return self._study
        record = Record.of_driver(
            "ablation",
            self.ablation.doc.name,
            self.ablation.path,
            self.ablation.overrides,
            self.runs_dir,
            self.runs_id,
            self.tracking_uri,
            parent_id,
            self.scheme,
            self.heartbeat,
            parameters={v.name: v.parameters for v in self.ablation.variants},
        )
        name = study_name(self.ablation)
        study = retrying(lambda: optuna.create_study(storage=self.storage, study_name=name, load_if_exists=True))
        stored = study.user_attrs.get(KIND_ATTR)
        if stored is not None and stored != record.to_attr():
            old = Record.from_attr(stored)
            changed = [f for f in record.to_attr() if getattr(old, f) != getattr(record, f) and f != "driver_host"]
            busy = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.WAITING, TrialState.RUNNING)]
            if busy and changed:
                raise CrmlabError(
                    f"{self.ablation.path}: the study is being served with other settings ({', '.join(changed)}) and "
                    f"has {len(busy)} waiting or running run(s): let them finish (crmlab queue) or use that set-up"
                )
        retrying(lambda: study.set_user_attr(KIND_ATTR, record.to_attr()))
        self._study = study
        return study

    def __call__(
        self,
        ablation: Ablation,
        plan: SeedPlan,
        results: dict[tuple[str, int], RunResult],
        parent_id: str | None,
        progress: Callable[[str], None],
    ) -> None:
        """Enqueue the runs of ``plan`` not yet finished, wait for the workers, collect every result (failed runs,
        those whose trial failed with no retry left, go to ``ablation.failed``)."""
        study = self.study(parent_id)
        todo: dict[str, tuple[str, int]] = {}
        for name, seed in plan.needed:
            found = self._finished(ablation, name, seed)
            if found is not None:
                results[(name, seed)] = found
            else:
                todo[run_key(ablation.variant(name).graph, ablation.run_recipe(name, seed), self.hashes)] = (name, seed)
        if not todo:
            return
        order = sorted(todo, key=lambda k: -sum(s.epochs for s in ablation.run_recipe(*todo[k]).stages))
        added = retrying(lambda: self._enqueue(study, [(k, *todo[k]) for k in order], plan.looks))
        progress(
            f"look {plan.looks}: {len(todo)} run(s) in the queue ({added} enqueued now) at {redact(self.storage.url)};"
            " waiting for crmlab worker processes"
        )
        self._wait(study, todo, ablation, results, progress)

    def _finished(self, ablation: Ablation, name: str, seed: int) -> RunResult | None:
        """The result of variant ``name`` at ``seed`` if its run has finished in the shared runs folder."""
        graph, recipe = ablation.variant(name).graph, ablation.run_recipe(name, seed)
        return finished_result(graph, recipe, ablation.datasets, ablation.tests, self.runs_dir)

    def _enqueue(self, study: optuna.Study, runs: list[tuple[str, str, int]], look: int) -> int:
        added = 0
        with self._lock():
            live = {t.user_attrs.get("crmlab.run_key") for t in study.get_trials(deepcopy=False, states=LIVE)}
            for key, name, seed in runs:
                if key in live or key in self._enqueued:
                    continue
                attrs = {"crmlab.run_key": key, "crmlab.variant": name, "crmlab.seed": seed, "crmlab.look": look}
                study.enqueue_trial({}, user_attrs=attrs)
                self._enqueued.add(key)
                added += 1
        return added

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Mutual exclusion of the drivers of this study while they enqueue."""
        lock_id = int.from_bytes(hashlib.sha256(study_name(self.ablation).encode()).digest()[:8], "big", signed=True)
        if self.scheme == "postgresql":
            from sqlalchemy import text

            with self.storage.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
            return
        with open(self.runs_dir / ".crmlab-queue.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _wait(
        self,
        study: optuna.Study,
        todo: dict[str, tuple[str, int]],
        ablation: Ablation,
        results: dict[tuple[str, int], RunResult],
        progress: Callable[[str], None],
    ) -> None:
        from crmlab.search.ablation import StudyProgress

        status = StudyProgress(len(todo), progress)
        open_keys = set(todo)
        started: set[str] = set()
        while open_keys:
            retrying(lambda: fail_stale(study))
            trials = retrying(lambda: study.get_trials(deepcopy=False))
            by_key: dict[str, list[Any]] = {}
            for t in trials:
                by_key.setdefault(t.user_attrs.get("crmlab.run_key"), []).append(t)
            for key in sorted(open_keys):
                name, seed = todo[key]
                label = f"{name} seed={seed}"
                mine = by_key.get(key, [])
                if key not in started and any(t.state == TrialState.RUNNING for t in mine):
                    started.add(key)
                    status.starting(label)
                done = [t for t in mine if t.state == TrialState.COMPLETE]
                if done:
                    found = self._finished(ablation, name, seed)
                    if found is None:
                        raise CrmlabError(
                            f"{label}: trial {done[0].number} is complete but {self.runs_dir / key} holds no finished "
                            "run: every worker must see the driver's runs folder at the same path"
                        )
                    results[(name, seed)] = found
                    where = done[0].user_attrs.get("crmlab.host", "?")
                    r = next(iter(found.test_metrics.values()))["pearson_r"]
                    status.finished(label, f"r = {r:.4f} (trial {done[0].number} on {where})")
                    open_keys.discard(key)
                elif mine and all(t.state == TrialState.FAIL for t in mine):
                    reason = mine[-1].user_attrs.get("crmlab.error") or "its worker stopped sending heartbeats"
                    ablation.failed[(name, seed)] = reason
                    status.finished(label, f"FAILED: {reason}")
                    open_keys.discard(key)
            if open_keys:
                time.sleep(self.poll)
