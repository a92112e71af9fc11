"""The winner's curse, measured: each confirmed trial's search score next to its confirmed score.

The search score is the objective the search selected the trial on: its validation metric with the selection seed.
The confirmed score is the same validation metric averaged over the confirmation's fresh seeds (each run's
``RunResult.validation``: the exported model on the last stage's validation split). A trial chosen as the best of
many noisy single-seed scores scores lower on fresh seeds; ``search - confirmed`` (sign flipped for a minimised
objective) is how much its search score flattered it. Canonical is listed too: it was not selected, so its
difference is seed noise alone. Verdicts stay the ablation's, on the test sets.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmlab.search.ablation import REFERENCE
from crmlab.search.arch import TrialRow
from crmlab.search.confirm._study import variant_name

__all__ = ["ConfirmedScore", "confirmed_scores", "scores_markdown", "write_scores"]


@dataclass
class ConfirmedScore:
    """One confirmed trial (or canonical): its search score against its confirmed score.

    Attributes:
        variant: the confirmed study's variant (``trial_7``, or ``canonical``).
        trial: the search's trial number (``None`` for canonical).
        search: the search score (the objective on the selection seed).
        confirmed: the validation metric of each confirmation seed's run, by seed.
        verdicts: the ablation's verdict by test set (empty for canonical).
        sign: +1 for a maximised objective, -1 for a minimised one.
    """

    variant: str
    trial: int | None
    search: float
    confirmed: dict[int, float]
    verdicts: dict[str, str] = field(default_factory=dict)
    sign: float = 1.0

    @property
    def mean(self) -> float:
        """The confirmed score: the mean over the confirmation seeds (NaN without any)."""
        return sum(self.confirmed.values()) / len(self.confirmed) if self.confirmed else math.nan

    @property
    def sd(self) -> float:
        """The sample standard deviation of the confirmed scores over seeds (NaN below two seeds)."""
        n = len(self.confirmed)
        if n < 2:
            return math.nan
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.confirmed.values()) / (n - 1))

    @property
    def curse(self) -> float:
        """How much better the search score looked than the confirmed one (positive: it flattered the trial)."""
        return self.sign * (self.search - self.mean)


def confirmed_scores(
    search: Any,
    chosen: Sequence[TrialRow],
    canonical: Mapping[str, Any],
    results: Mapping[tuple[str, int], Any],
    rows: Sequence[Any],
) -> list[ConfirmedScore]:
    """Canonical's and each chosen trial's search score against their confirmed scores.

    Args:
        search: the loaded search (its objective's metric and direction).
        chosen: the confirmed trials, in report order.
        canonical: canonical's record in the search (its ``value``: canonical's objective on the selection seed).
        results: the confirmation's finished runs by ``(variant, seed)``; each has ``validation`` metrics.
        rows: the ablation's comparison rows (their verdicts by variant and test set).

    Returns:
        Canonical first, then one :class:`ConfirmedScore` per chosen trial.
    """
    metric = search.metric
    sign = 1.0 if search.direction == "maximize" else -1.0
    verdicts: dict[str, dict[str, str]] = {}
    for r in rows:
        if r.decision is not None:
            verdicts.setdefault(r.variant, {})[r.test_set] = r.decision.verdict

    def scores(variant: str) -> dict[int, float]:
        found = {s: res.validation.get(metric) for (n, s), res in results.items() if n == variant}
        return {s: float(v) for s, v in sorted(found.items()) if v is not None}

    out = [ConfirmedScore(REFERENCE, None, float(canonical["value"]), scores(REFERENCE), sign=sign)]
    for r in chosen:
        name = variant_name(r.number)
        value = math.nan if r.value is None else float(r.value)  # chosen trials are complete: never None
        out.append(ConfirmedScore(name, r.number, value, scores(name), verdicts.get(name, {}), sign))
    return out


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def scores_markdown(scores: Sequence[ConfirmedScore], metric: str, selection: Sequence[int]) -> str:
    """The report section: a table of search score, confirmed score (mean ± sd over fresh seeds), their difference
    and the verdicts, with a paragraph saying what the numbers are."""
    seeds = ", ".join(map(str, selection))
    lines = [
        "## Search score against confirmed score (the winner's curse)",
        "",
        f"*Search score*: the trial's {metric} with the selection seed ({seeds}), the value the search ranked it by."
        f" *Confirmed score*: the same {metric} averaged over this study's fresh seeds (never the selection seed)."
        " *Winner's curse*: how much better the search score looked than the confirmed one; a trial picked as the"
        " best of many noisy single-seed scores is expected to come out positive here. Canonical was not selected,"
        " so its difference is seed noise alone. Verdicts are the ablation's, on the test sets (table above).",
        "",
        f"| variant | trial | search {metric} | confirmed {metric} | seeds | winner's curse | verdicts |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for s in scores:
        confirmed = f"{_cell(s.mean)} ± {_cell(s.sd)}" if len(s.confirmed) > 1 else _cell(s.mean)
        trial = "" if s.trial is None else str(s.trial)
        verdicts = ", ".join(f"{t}: {v}" for t, v in s.verdicts.items()) or ("reference" if s.trial is None else "")
        lines.append(
            f"| {s.variant} | {trial} | {s.search:.4f} | {confirmed} | {len(s.confirmed)} | {_cell(s.curse)}"
            f" | {verdicts} |"
        )
    return "\n".join(lines) + "\n"


def write_scores(
    report: Path, scores: Sequence[ConfirmedScore], metric: str, selection: Sequence[int]
) -> tuple[Path, Path]:
    """Append :func:`scores_markdown` to the ablation's ``report.md`` and write ``confirmation.csv`` beside it
    (one row per variant: trial, search score, confirmed mean and sd, seeds, winner's curse).

    Returns:
        ``report.md`` and ``confirmation.csv``.
    """
    with open(report, "a") as fh:
        fh.write("\n" + scores_markdown(scores, metric, selection))
    table = report.with_name("confirmation.csv")
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "trial", "metric", "search", "confirmed_mean", "confirmed_sd", "seeds", "winners_curse"])
        for s in scores:
            trial = "" if s.trial is None else s.trial
            w.writerow([s.variant, trial, metric, s.search, s.mean, s.sd, len(s.confirmed), s.curse])
    return report, table
