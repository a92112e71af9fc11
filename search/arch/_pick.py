"""Choosing one trial of a search to export or register: ``--pick "max val_pearson_r where params <= 1e6"`` or
``--trial N``; without either, the best trial of a single-objective search.

A pick is ``max METRIC`` or ``min METRIC``, optionally followed by ``where`` and conditions ``METRIC OP NUMBER``
(``<=``, ``<``, ``>=``, ``>``, ``==``) joined by ``and``. Metrics are the search's objectives and measured costs.
Only complete, feasible trials are chosen from.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crmlab.registry import CrmlabError
from crmlab.search.arch._leaderboard import TrialRow, best_row
from crmlab.search.arch._study import Search

__all__ = ["Pick", "check_choice", "choose_trial", "parse_pick"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Pick:
    """A parsed ``--pick``: maximise or minimise ``metric`` over the trials meeting every condition
    ``(metric, op, value)``."""

    text: str
    sense: str
    metric: str
    conditions: tuple[tuple[str, str, float], ...] = ()

    def admits(self, row: TrialRow) -> bool:
        """Whether ``row`` has the metrics and meets every condition."""
        found = row.measured
        if self.metric not in found:
            return False
        return all(m in found and _OPS[op](found[m], v) for m, op, v in self.conditions)

    def rank(self, rows: Sequence[TrialRow]) -> list[TrialRow]:
        """The complete, feasible rows this pick admits, best first by its metric (equals keep their order)."""
        admitted = [r for r in rows if r.state == "complete" and r.feasible and self.admits(r)]
        sign = -1.0 if self.sense == "max" else 1.0
        return sorted(admitted, key=lambda r: sign * r.measured[self.metric])


def parse_pick(text: str, search: Search) -> Pick:
    """Parse ``--pick``; the metrics must be the search's objectives or its measured costs.

    Raises:
        CrmlabError: one line saying what is wrong.
    """
    known = list(dict.fromkeys([*(g.metric for g in search.goals), *search.costs]))
    usage = "write e.g. 'max val_pearson_r where params <= 1e6'"
    head, _, tail = text.partition(" where ")
    words = head.split()
    if len(words) != 2 or words[0] not in ("max", "min"):
        raise CrmlabError(f"--pick: '{text}': {usage}")
    conditions = []
    for part in re.split(r"\s+and\s+", tail.strip()) if tail.strip() else []:
        match = _CONDITION.match(part)
        if match is None:
            raise CrmlabError(f"--pick: '{part.strip()}' is not METRIC OP NUMBER (<=, <, >=, >, ==); {usage}")
        try:
            conditions.append((match[1], match[2], float(match[3])))
        except ValueError:
            raise CrmlabError(f"--pick: '{match[3]}' is not a number") from None
    for metric in [words[1], *(c[0] for c in conditions)]:
        if metric not in known:
            raise CrmlabError(
                f"--pick: '{metric}' is not an objective or cost of {search.doc.name} ({', '.join(known)})"
            )
    return Pick(text, words[0], words[1], tuple(conditions))


def check_choice(search: Search, pick: str | None, trial: int | None, wanted: bool) -> Pick | None:
    """Check ``--pick`` / ``--trial`` before anything trains: at most one of them, and one of them for a
    multi-objective search that exports or registers (``wanted``).

    Raises:
        CrmlabError: one line.
    """
    if pick is not None and trial is not None:
        raise CrmlabError("--pick and --trial: give one of them")
    if (pick is not None or trial is not None) and not wanted:
        raise CrmlabError(f"--{'pick' if pick is not None else 'trial'}: only with --export or --register")
    if wanted and search.multi and pick is None and trial is None:
        first = next(g.metric for g in search.goals if not g.is_cost)
        raise CrmlabError(
            f"{search.path}: {len(search.goals)} objectives have no single best trial; choose one to export or "
            f"register with --pick 'max {first} where ...' or --trial N"
        )
    return parse_pick(pick, search) if pick is not None else None


def choose_trial(search: Search, rows: Sequence[TrialRow], pick: Pick | None, trial: int | None) -> TrialRow:
    """The trial to export or register: ``--trial N``, the best by ``pick`` among complete feasible trials (the
    first of equals), or the best complete trial of a single-objective search.

    Raises:
        CrmlabError: no such trial, or nothing complete and feasible meets the pick (one line).
    """
    if trial is not None:
        row = next((r for r in rows if r.number == trial), None)
        if row is None or row.state != "complete":
            state = "does not exist" if row is None else f"is {row.state}"
            raise CrmlabError(f"--trial: trial {trial} of {search.doc.name} {state}; choose a complete trial")
        return row
    if pick is None:
        best = best_row(rows, search.direction)
        if best is None:
            raise CrmlabError(f"{search.doc.name} has no complete trial yet; nothing to export or register")
        return best
    ranked = pick.rank(rows)
    if not ranked:
        raise CrmlabError(f"--pick: no complete, feasible trial of {search.doc.name} meets '{pick.text}'")
    return ranked[0]
