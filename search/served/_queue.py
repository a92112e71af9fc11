"""``crmlab queue``: what a shared storage holds, study by study, and draining or cancelling a study.

Each served study's runs are counted by state: waiting, running (with the worker's host and since when), finished and
failed (a trial failed by its lease or handed back and enqueued again counts once, under its retry). Draining a study
stops workers from claiming its runs (running ones finish); cancelling also fails its waiting runs, so its driver
ends with them listed as failed.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from crmlab.registry import CrmlabError
from crmlab.search.served._record import DRAINED_ATTR, KIND_ATTR, Record
from crmlab.search.served._retry import retrying
from crmlab.search.storage import Heartbeat, open_storage

CANCELLED = "cancelled (crmlab queue --cancel)"
"""The reason a cancelled run's trial records (``crmlab.error``); its driver lists the run as failed with it."""

__all__ = ["CANCELLED", "QueueRow", "cancel_study", "drain_study", "queue_rows", "queue_text"]


@dataclass
class QueueRow:
    """One served study: its Optuna name, study name, run counts by state and who runs what since when."""

    optuna_name: str
    name: str
    drained: bool
    counts: Counter[str] = field(default_factory=Counter)
    running: list[str] = field(default_factory=list)


def _open(url: str) -> Any:
    from pathlib import Path

    return open_storage(url, Path.cwd(), Heartbeat())


def queue_rows(url: str) -> list[QueueRow]:
    """The served studies in the storage at ``url`` with their runs by state."""
    storage = _open(url)
    rows = []
    for frozen in retrying(storage.get_all_studies):
        attr = frozen.user_attrs.get(KIND_ATTR)
        if attr is None:
            continue
        record = Record.from_attr(attr)
        row = QueueRow(frozen.study_name, record.name, bool(frozen.user_attrs.get(DRAINED_ATTR)))
        latest: dict[str, optuna.trial.FrozenTrial] = {}
        for trial in retrying(lambda sid=frozen._study_id: storage.get_all_trials(sid, deepcopy=False)):
            latest[trial.user_attrs.get("crmlab.run_key", str(trial.number))] = trial  # the newest try of a run
        now = datetime.datetime.now()
        for trial in latest.values():
            state = {
                TrialState.WAITING: "waiting",
                TrialState.RUNNING: "running",
                TrialState.COMPLETE: "finished",
            }.get(trial.state, "failed")
            row.counts[state] += 1
            if trial.state == TrialState.RUNNING:
                since = trial.datetime_start or now
                row.running.append(
                    f"{trial.user_attrs.get('crmlab.variant')} seed={trial.user_attrs.get('crmlab.seed')} on "
                    f"{trial.user_attrs.get('crmlab.host', '?')} for {(now - since).total_seconds():.0f} s"
                )
        rows.append(row)
    return rows


def queue_text(rows: list[QueueRow]) -> str:
    """A table of :func:`queue_rows`, then each running run on a line."""
    if not rows:
        return "no served studies in this storage"
    lines = ["| study | optuna study | waiting | running | finished | failed |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = f"{r.name} (drained)" if r.drained else r.name
        c = r.counts
        lines.append(
            f"| {name} | {r.optuna_name} | {c['waiting']} | {c['running']} | {c['finished']} | {c['failed']} |"
        )
    lines += [f"- {r.name}: {run}" for r in rows for run in r.running]
    return "\n".join(lines)


def _find(storage: Any, study: str) -> Any:
    found = [
        s
        for s in retrying(storage.get_all_studies)
        if KIND_ATTR in s.user_attrs and study in (s.study_name, s.user_attrs[KIND_ATTR].get("name"))
    ]
    if len(found) != 1:
        names = ", ".join(s.study_name for s in found) or "none"
        raise CrmlabError(
            f"study {study!r}: {len(found)} served studies match ({names}): give its name or optuna study name"
        )
    return found[0]


def drain_study(url: str, study: str) -> str:
    """Stop workers from claiming ``study``'s runs (by its name or Optuna study name); returns its Optuna name."""
    storage = _open(url)
    frozen = _find(storage, study)
    retrying(lambda: storage.set_study_user_attr(frozen._study_id, DRAINED_ATTR, True))
    return frozen.study_name


def cancel_study(url: str, study: str) -> tuple[str, int]:
    """Drain ``study`` and fail its waiting runs (``crmlab.error``: cancelled); returns its Optuna name and how many
    runs were cancelled. Running runs finish."""
    storage = _open(url)
    frozen = _find(storage, study)
    retrying(lambda: storage.set_study_user_attr(frozen._study_id, DRAINED_ATTR, True))
    cancelled = 0
    waiting = retrying(lambda: storage.get_all_trials(frozen._study_id, deepcopy=False, states=(TrialState.WAITING,)))
    for trial in waiting:
        try:
            retrying(lambda t=trial: storage.set_trial_user_attr(t._trial_id, "crmlab.error", CANCELLED))
            retrying(lambda t=trial: storage.set_trial_state_values(t._trial_id, TrialState.FAIL))
            cancelled += 1
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # claimed meanwhile: it runs to its end
    return frozen.study_name, cancelled
