"""Which trials of a search to confirm: the best ``top`` by the search's objective, or trials named by number.

One function, :func:`choose_trials`, makes the choice, so other rules (a ``--pick`` expression over several objectives,
a Pareto front) plug in beside ``top`` and ``trials`` without touching the rest of a confirmation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from crmlab.registry import CrmlabError

__all__ = ["ScoredTrial", "choose_trials", "ranked"]


class ScoredTrial(Protocol):
    """What a confirmation reads of a search's trial (a leaderboard row of :mod:`crmlab.search.arch`)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]


def ranked(rows: Sequence[ScoredTrial], direction: str) -> list[ScoredTrial]:
    """The complete trials, best objective first in ``direction`` (``maximize`` or ``minimize``); equal values keep
    trial order."""
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda r: (sign * r.value, r.number))  # type: ignore[operator]


def choose_trials(
    search: Any, rows: Sequence[ScoredTrial], *, top: int | None = None, trials: Sequence[int] | None = None
) -> list[ScoredTrial]:
    """The trials to confirm: the ``top`` best complete trials by the search's objective, or the ``trials`` named.

    Args:
        search: the loaded search (:class:`crmlab.search.arch.Search`: its name and objective).
        rows: the search's finished trials.
        top: how many of the best complete trials (exclusive with ``trials``).
        trials: trial numbers (duplicates ignored), in the order given.

    Returns:
        The chosen trials (rows of ``rows``), best first for ``top``.

    Raises:
        CrmlabError: one line: not exactly one of ``top`` and ``trials``, more trials than have completed, an unknown
            trial number, or a trial that did not complete.
    """
    name = search.doc.name
    if (top is None) == (trials is None):
        raise CrmlabError("crmlab confirm: give --top K or --trials N [N ...]")
    done = ranked(rows, search.doc.objective.direction)
    if top is not None:
        if top < 1:
            raise CrmlabError(f"--top {top}: confirm at least one trial")
        if top > len(done):
            raise CrmlabError(f"--top {top}: search '{name}' has {len(done)} complete trial(s); use --top {len(done)}")
        return done[:top]
    by_number = {r.number: r for r in rows}
    complete = ", ".join(str(r.number) for r in sorted(done, key=lambda r: r.number)) or "none"
    chosen: list[ScoredTrial] = []
    for number in dict.fromkeys(trials or ()):
        row = by_number.get(number)
        if row is None:
            raise CrmlabError(f"--trials {number}: search '{name}' has no trial {number} (complete: {complete})")
        if row not in done:
            raise CrmlabError(f"--trials {number}: trial {number} is {row.state}, not complete (complete: {complete})")
        chosen.append(row)
    if not chosen:
        raise CrmlabError("--trials: name at least one trial")
    return chosen
