"""Which trials of a search to confirm: the best ``top`` by the search's first objective or by a ``--pick`` rule, the
Pareto front, or trials named by number.

One function, :func:`choose_trials`, makes the choice. Trials of the same configuration (the same run key, merged on
the leaderboard) are confirmed once, as the first of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmlab.registry import CrmlabError
from crmlab.search.arch import Pick, TrialRow, merged_rows

__all__ = ["choose_trials", "ranked"]


def ranked(rows: Sequence[TrialRow], search: Any, pick: Pick | None = None) -> list[TrialRow]:
    """The complete, feasible trials, best first: by ``pick``'s metric among those meeting its conditions, else by
    the search's first objective (a validation metric or a cost, in its direction); equal values keep trial order.

    Args:
        rows: the search's leaderboard rows (:func:`crmlab.search.arch.trial_rows`).
        search: the loaded search (:class:`crmlab.search.arch.Search`: its objectives).
        pick: a parsed ``--pick`` rule (:func:`crmlab.search.arch.parse_pick`), or None.
    """
    if pick is None:
        goal = search.goals[0]
        pick = Pick(goal.metric, "max" if goal.resolved == "maximize" else "min", goal.metric)
    return pick.rank(sorted(rows, key=lambda r: r.number))


def choose_trials(
    search: Any,
    rows: Sequence[TrialRow],
    *,
    top: int | None = None,
    trials: Sequence[int] | None = None,
    pareto: bool = False,
    pick: Pick | None = None,
) -> list[TrialRow]:
    """The trials to confirm: the ``top`` best (by ``pick``, else the first objective), the Pareto front, or the
    ``trials`` named.

    Args:
        search: the loaded search (:class:`crmlab.search.arch.Search`: its name and objectives).
        rows: the search's finished trials (leaderboard rows, the front marked).
        top: how many of the best complete, feasible trials.
        trials: trial numbers (duplicates ignored), in the order given.
        pareto: every trial on the Pareto front (complete, feasible, not dominated), best first by the first
            objective.
        pick: with ``top``: rank by this rule instead of the first objective.

    Returns:
        The chosen trials (rows of ``rows``), best first for ``top`` and ``pareto``.

    Raises:
        CrmlabError: one line: not exactly one of ``top``, ``trials`` and ``pareto``; ``pick`` without ``top``; more
            trials than qualify; an unknown trial number, or a trial that did not complete.
    """
    name = search.doc.name
    if sum((top is not None, trials is not None, pareto)) != 1:
        raise CrmlabError("crmlab confirm: give one of --top K, --pareto or --trials N [N ...]")
    if pick is not None and top is None:
        other = "--pareto" if pareto else "--trials"
        raise CrmlabError(f"--pick: ranks the trials --top takes; with {other}, leave it out")
    distinct = merged_rows(rows)
    if pareto:
        front = [r for r in ranked(distinct, search) if r.pareto]
        if not front:
            raise CrmlabError(f"--pareto: search '{name}' has no complete, feasible trial: its front is empty")
        return front
    if top is not None:
        if top < 1:
            raise CrmlabError(f"--top {top}: confirm at least one trial")
        done = ranked(distinct, search, pick)
        if top > len(done):
            which = f"meeting '{pick.text}'" if pick is not None else "complete and feasible"
            advice = f"; use --top {len(done)}" if done else ""
            raise CrmlabError(f"--top {top}: search '{name}' has {len(done)} distinct trial(s) {which}{advice}")
        return done[:top]
    done_numbers = {r.number for r in rows if r.state == "complete"}
    by_number = {r.number: r for r in rows}
    complete = ", ".join(str(n) for n in sorted(done_numbers)) or "none"
    chosen: list[TrialRow] = []
    for number in dict.fromkeys(trials or ()):
        row = by_number.get(number)
        if row is None:
            raise CrmlabError(f"--trials {number}: search '{name}' has no trial {number} (complete: {complete})")
        if number not in done_numbers:
            raise CrmlabError(f"--trials {number}: trial {number} is {row.state}, not complete (complete: {complete})")
        chosen.append(row)
    if not chosen:
        raise CrmlabError("--trials: name at least one trial")
    return chosen
