"""The comparison as a terminal table, with the caveats it must carry."""

from __future__ import annotations

from crmlab.search.ablation._comparison import CONTROL, LABELS, METRICS, Row
from crmlab.search.ablation._planning import POWER, SEEDS_LIMIT
from crmlab.search.ablation._stats import format_p

__all__ = ["notes", "plan_cells", "table_text", "undecided_lines", "verdict_cells"]


def verdict_cells(r: Row, metric: str) -> list[str]:
    """Delta, the interval the verdict reads, Holm p and verdict of ``r`` on ``metric``."""
    d = r.delta[metric]
    if d is None or r.decision is None:
        return ["reference", "", "", ""]
    low, high = r.decision.interval
    p = r.p_holm[metric]
    return [f"{d.delta:+.4f}", f"[{low:+.4f}, {high:+.4f}]", format_p(1.0 if p is None else p), r.decision.verdict]


def plan_cells(r: Row) -> list[str]:
    """What would decide ``r``'s verdict: the smallest delta detectable at 80% power, and the seeds an effect the
    size of the estimate needs (blank unless the verdict is undecided with two seeds or more)."""
    if r.plan is None:
        return ["", ""]
    seeds = f"{r.plan.seeds}" if r.plan.seeds is not None else f"> {SEEDS_LIMIT}"
    return [f"±{r.plan.detectable:.4f}", seeds]


def undecided_lines(rows: list[Row], metric: str) -> list[str]:
    """One line per undecided variant and test set: its delta on ``metric``, its seeds and the seeds that would
    decide an effect of that size, e.g. ``no_transformer (random_complex): -0.0247, undecided at 3 seeds; about 6
    seeds would decide an effect this size (80% power at its level 0.025; seeds 0-5 reuse the 3 trained)``."""
    lines = []
    for r in rows:
        d = r.delta[metric]
        if d is None or r.decision is None or r.decision.verdict != "undecided":
            continue
        head = f"{r.variant} ({r.test_set}): {d.delta:+.4f}, undecided at {len(r.seeds)} seed{'s' * (len(r.seeds) > 1)}"
        if r.plan is None:
            lines.append(f"{head}; one seed does not estimate training noise: train at least 2")
        elif r.plan.seeds is None:
            lines.append(
                f"{head}; more than {SEEDS_LIMIT} seeds would be needed to decide an effect this size"
                f" ({POWER:.0%} power at its level {r.plan.level:.3g};"
                f" at its seeds it detects ±{r.plan.detectable:.4f})"
            )
        else:
            lines.append(
                f"{head}; about {r.plan.seeds} seeds would decide an effect this size ({POWER:.0%} power at its level"
                f" {r.plan.level:.3g}; seeds {r.seeds[0]}-{r.seeds[0] + r.plan.seeds - 1} reuse the {len(r.seeds)}"
                " trained)"
            )
    return lines


def notes(rows: list[Row]) -> list[str]:
    """Caveats the table must carry: a single seed; an A/A control that came out ``helps`` or ``hurts``."""
    found = []
    if rows and len(rows[0].seeds) == 1:
        found.append(
            "one seed: training noise is not estimated; the interval covers test-set sampling only, no verdicts"
        )
    for r in rows:
        if r.variant == CONTROL and r.decision is not None and r.decision.verdict in ("helps", "hurts"):
            found.append(
                f"MISCALIBRATED: the A/A control (canonical under other initialisation seeds) {r.decision.verdict} on"
                f" {r.test_set}; differences of this size are seed noise, so this study's verdicts are not trustworthy"
            )
    return found


def table_text(rows: list[Row], metric: str = "pearson_r") -> str:
    """The comparison as a fixed-width terminal table; delta, interval and verdict are on ``metric``.

    The interval is the one the verdict reads: at the variant's Holm-adjusted level (see
    :func:`crmlab.search.ablation._report.method_text`). For an undecided verdict, the smallest delta the study
    detects with 80% power at that level and the seeds an effect the size of the estimate needs
    (:mod:`crmlab.search.ablation._planning`).
    """
    head = ["variant", "test set", "seeds", *(LABELS[m] for m in METRICS)]
    head += [f"delta {LABELS[metric]}", "CI (Holm level)", "p (Holm)", "verdict", f"detectable ({POWER:.0%})"]
    head += ["seeds to decide"]
    means = {id(r): [f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS] for r in rows}
    body = [
        [r.variant, r.test_set, str(len(r.seeds)), *means[id(r)], *verdict_cells(r, metric), *plan_cells(r)]
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], *(f"note: {n}" for n in notes(rows))])
