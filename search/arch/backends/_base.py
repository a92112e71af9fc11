"""The interface every search backend implements (Optuna, KerasTuner), and the options ``crmlab search`` gives it.

A backend trains canonical CRMnet once, then its trials (:func:`crmlab.search.arch._trial.run_trial`), and returns the
leaderboard rows and canonical's record (:class:`SearchRun`); :func:`finish_search` is the end of a search common to
all backends (finish recorded, summary logged on the parent run) and :meth:`SearchBackend.summary` their epilogue
(leaderboard and parameter importances). Backends are chosen by name from
:data:`crmlab.search.arch.backends.BACKENDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmlab.runners.parallel import Slot
from crmlab.runners.rundir import Owner, record_study
from crmlab.runners.tracking import Tracker
from crmlab.search.arch._leaderboard import (
    TrialRow,
    complete_trials,
    importances_text,
    leaderboard_text,
    log_summary,
    too_few_trials_text,
    trials_needed_for_importances,
)
from crmlab.search.arch._pareto import log_front, pareto_text
from crmlab.search.arch._study import Search

__all__ = ["SearchBackend", "SearchOptions", "SearchRun", "finish_search"]


@dataclass(frozen=True)
class SearchOptions:
    """How to run a search, whatever the backend.

    Attributes:
        tracking_uri: MLflow tracking URI.
        mlflow: log the search (parent run) and its trials (child runs) to MLflow.
        storage: Optuna storage URL (``None``: SQLite in the runs folder).
        workers: local worker processes.
        slots: where each worker process runs (:func:`crmlab.runners.parallel._placement.plan_slots`); empty:
        ``workers``
            processes that inherit this process's devices.
        progress: called with each progress line.
        publish: with ``workers`` = 0 (Optuna only), offers the opened study to ``crmlab worker`` processes.
    """

    tracking_uri: str | None = None
    mlflow: bool = True
    storage: str | None = None
    workers: int = 1
    slots: Sequence[Slot] = ()
    progress: Callable[[str], None] = print
    publish: Callable[[Any], None] | None = None


@dataclass
class SearchRun:
    """What a backend's search gave: the leaderboard rows, canonical's record (``value``, ``tests`` metrics,
    ``run_key``) and the backend's own state (an Optuna study, a KerasTuner tuner)."""

    rows: list[TrialRow]
    canonical: dict[str, Any]
    state: Any


class SearchBackend(ABC):
    """A search backend: checks its options, runs a search, and weighs the parameters of its trials."""

    @abstractmethod
    def check_options(self, options: SearchOptions) -> None:
        """Reject options this backend cannot honour, before anything is loaded or written."""

    @abstractmethod
    def connect(self, search: Search, runs_dir: Path, options: SearchOptions) -> None:
        """Reach any server the search needs now, so an unusable one is reported before training."""

    @abstractmethod
    def run(self, search: Search, runs_dir: Path, options: SearchOptions) -> SearchRun:
        """Canonical first, then the trials (resuming an earlier invocation's); returns the rows and canonical."""

    @abstractmethod
    def importances(self, search: Search, run: SearchRun) -> dict[str, float]:
        """fANOVA importances of the parameters over the complete trials (``{}`` when too few)."""

    def summary(self, search: Search, run: SearchRun) -> str:
        """The leaderboard (canonical's objective for reference) and the parameter importances, as text; with too
        few complete trials (:func:`~crmlab.search.arch._leaderboard.trials_needed_for_importances`) a line saying
        so."""
        if search.multi:
            board = pareto_text(run.rows, search.goals, run.canonical["value"])
        else:
            board = leaderboard_text(run.rows, search.metric, search.direction, run.canonical["value"])
        complete, needed = complete_trials(run.rows), trials_needed_for_importances(len(search.space))
        if complete < needed:
            return f"{board}\n{too_few_trials_text(complete, needed)}"
        return f"{board}\n{importances_text(self.importances(search, run))}"


def finish_search(
    search: Search,
    runs_dir: Path,
    tracker: Tracker | None,
    read_rows: Callable[[], list[TrialRow]],
    canonical: Mapping[str, Any],
) -> list[TrialRow]:
    """The end of a search whose trials all ran, whatever the backend: record in the runs folder's manifest that the
    search finished, read its leaderboard rows, and log their summary on the search's MLflow parent run
    (:func:`~crmlab.search.arch._leaderboard.log_summary`), which then ends ``FINISHED``.

    Args:
        search: the search.
        runs_dir: the runs folder.
        tracker: the parent run (:func:`crmlab.search.arch._trial.open_parent_run`); ``None`` without MLflow.
        read_rows: reads the leaderboard rows from the backend's state (called once the finish is recorded).
        canonical: canonical's record (``value``, ``tests`` metrics, ``run_key``).

    Returns:
        The leaderboard rows.
    """
    record_study(runs_dir, Owner(search.doc.name, "search", search.key), "finish")
    rows = read_rows()
    if tracker is not None:
        log_summary(tracker, search.metric, search.direction, rows, canonical)
        if search.multi:
            log_front(tracker, rows, search.goals)
        tracker.end("FINISHED")
    return rows
