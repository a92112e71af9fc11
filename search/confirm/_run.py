"""A confirmation from start to end: read the finished search, choose trials, write the confirmed study, run it
through the ablation machinery (same runs folder, verdicts, report and MLflow comparison as ``crmlab ablate``), then
add the search-against-confirmed scores to its report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmlab.search.ablation import Ablation, load_ablation, parent_run, run_ablation
from crmlab.search.arch import Pick, Search, TrialRow, finished_trials
from crmlab.search.confirm._choose import choose_trials
from crmlab.search.confirm._scores import ConfirmedScore, confirmed_scores, write_scores
from crmlab.search.confirm._study import DEFAULT_SEEDS, fresh_seeds, selection_seeds, write_confirmation

__all__ = ["Confirmation", "prepare_confirmation", "run_confirmation"]


@dataclass
class Confirmation:
    """A confirmation: the search, its chosen trials and canonical's record in it, the confirmed study (file and
    loaded ablation) and, once run, the ablation's results, comparison rows, report and the scores."""

    search: Search
    chosen: list[TrialRow]
    canonical: dict[str, Any]
    path: Path
    ablation: Ablation
    results: dict[tuple[str, int], Any] | None = None
    rows: list[Any] | None = None
    report: Path | None = None
    scores: list[ConfirmedScore] | None = None


def prepare_confirmation(
    search: Search,
    runs_dir: Path,
    *,
    storage: str | None = None,
    top: int | None = None,
    trials: Sequence[int] | None = None,
    pareto: bool = False,
    pick: Pick | None = None,
    seeds: tuple[int, int] = DEFAULT_SEEDS,
) -> Confirmation:
    """Read the search's finished trials, choose the ones to confirm, write the confirmed study and load it (every
    variant validated and assembled); nothing is trained.

    Args:
        search: the loaded search.
        runs_dir: the runs folder (the search's, and the confirmation's).
        storage: the search's Optuna storage URL (``None``: ``RUNS_DIR/optuna.db``).
        top: confirm the best ``top`` complete, feasible trials (by ``pick``, else the first objective).
        trials: confirm these trial numbers.
        pareto: confirm the trials on the Pareto front.
        pick: with ``top``: a parsed ``--pick`` rule to rank by.
        seeds: adaptive seeds ``(initial, max)``, numbered past the selection seed.

    Raises:
        CrmlabError: one line: the search never ran, or the choice is impossible.
    """
    rows, canonical = finished_trials(search, runs_dir, storage)
    chosen = choose_trials(search, rows, top=top, trials=trials, pareto=pareto, pick=pick)
    path = write_confirmation(search, chosen, fresh_seeds(search, chosen, *seeds), runs_dir)
    return Confirmation(search, chosen, canonical, path, load_ablation(path))


def run_confirmation(
    confirmation: Confirmation,
    runs_dir: Path,
    tracking_uri: str | None = None,
    *,
    mlflow: bool = True,
    slots: Sequence[Any] | None = None,
    progress: Callable[[str], None] = print,
) -> Confirmation:
    """Run the confirmed study (:func:`crmlab.search.ablation.run_ablation`: runs already finished are reused, so a
    second confirmation trains nothing) and append the search-against-confirmed scores to its ``report.md``
    (:func:`~crmlab.search.confirm._scores.write_scores`); with ``mlflow``, log them on the study's parent run.

    Returns:
        ``confirmation``, with its results, rows, report and scores set.
    """
    c = confirmation
    c.results, c.rows, c.report = run_ablation(
        c.ablation, runs_dir, tracking_uri, mlflow=mlflow, slots=slots, progress=progress
    )
    c.scores = confirmed_scores(c.search, c.chosen, c.canonical, c.results, c.rows)
    files = write_scores(c.report, c.scores, c.search.metric, selection_seeds(c.search, c.chosen))
    if mlflow:
        _log_scores(c, runs_dir, tracking_uri, files)
    return c


def _log_scores(c: Confirmation, runs_dir: Path, tracking_uri: str | None, files: Sequence[Path]) -> None:
    """On the confirmed study's MLflow parent run (reopened): each variant's search score, confirmed score and
    winner's curse as metrics (``trial_7.search_val_pearson_r``, ``trial_7.confirmed_val_pearson_r``,
    ``trial_7.winners_curse``), the search it confirms as tags, and the extended ``report.md`` with
    ``confirmation.csv``."""
    tracker, _ = parent_run(c.ablation, runs_dir, tracking_uri)
    metric = c.search.metric
    metrics: dict[str, float] = {}
    for s in c.scores or []:
        metrics |= {f"{s.variant}.search_{metric}": s.search, f"{s.variant}.confirmed_{metric}": s.mean}
        metrics[f"{s.variant}.winners_curse"] = s.curse
    tracker.log_metrics(metrics)
    trials = ", ".join(str(r.number) for r in c.chosen)
    tracker.set_tags({"crmlab.confirms": str(c.search.path), "crmlab.confirmed_trials": trials})
    for f in files:
        tracker.log_artifact(f)
    tracker.end("FINISHED")
