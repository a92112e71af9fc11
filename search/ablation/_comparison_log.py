"""The comparison on the study's MLflow parent run: metrics, verdict tags, the verdicts as its description and the
comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmlab.search.ablation._comparison import METRICS, Row
from crmlab.search.ablation._table import undecided_lines

__all__ = ["comparison_table", "log_comparison", "verdicts_note"]


def log_comparison(rows: list[Row], files: list[Path], tracker: Any, metric: str = "pearson_r") -> None:
    """Log on the parent run: the comparison files, per-variant metrics (seeds, means, deltas, Holm p), verdict tags,
    the verdicts as the run's description, and the comparison on ``metric`` (the verdicts' metric) as a table."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for r in rows:
        metrics[f"{r.variant}.{r.test_set}.seeds"] = len(r.seeds)
        for m in METRICS:
            metrics[f"{r.variant}.{r.test_set}.{m}"] = r.mean[m]
            d, p = r.delta[m], r.p_holm[m]
            if d is not None and p is not None:
                metrics[f"{r.variant}.{r.test_set}.delta_{m}"] = d.delta
                metrics[f"{r.variant}.{r.test_set}.p_holm_{m}"] = p
        if r.decision is not None:
            tags[f"crmlab.verdict.{r.variant}.{r.test_set}"] = r.decision.verdict
    tags["mlflow.note.content"] = verdicts_note(rows, metric)
    tracker.log_metrics(metrics)
    tracker.set_tags(tags)
    for f in files:
        tracker.log_artifact(f)
    tracker.log_table(comparison_table(rows, metric), "comparison_table.json")


def comparison_table(rows: list[Row], metric: str = "pearson_r") -> dict[str, list[Any]]:
    """The comparison as columns, one row per variant x test set, on the verdicts' ``metric``: ``seeds``,
    ``mean``, ``sd``, ``delta``, ``ci_low`` / ``ci_high`` (the interval at the Holm-adjusted level the verdict
    used), ``level``, ``p_holm``, ``verdict`` (blank for canonical, the reference) and, for an undecided verdict,
    ``detectable_80`` (the smallest delta detected with 80% power) and ``seeds_to_decide``."""
    table: dict[str, list[Any]] = {k: [] for k in ("variant", "test_set", "metric", "seeds", "mean", "sd")}
    table |= {k: [] for k in ("delta", "ci_low", "ci_high", "level", "p_holm", "verdict")}
    table |= {k: [] for k in ("detectable_80", "seeds_to_decide")}
    for r in rows:
        d, dec = r.delta.get(metric), r.decision
        low, high = dec.interval if dec is not None else (None, None)
        values = [r.variant, r.test_set, metric, len(r.seeds), r.mean[metric], r.sd[metric]]
        values += [d.delta if d is not None else None, low, high, dec.alpha if dec is not None else None]
        values += [r.p_holm.get(metric), dec.verdict if dec is not None else ""]
        values += [r.plan.detectable, r.plan.seeds] if r.plan is not None else [None, None]
        for key, value in zip(table, values, strict=True):
            table[key].append(value)
    return table


def verdicts_note(rows: list[Row], metric: str = "pearson_r") -> str:
    """The parent run's description (markdown): one line per variant and test set with its verdict and delta."""
    lines = ["Verdicts against canonical (interval at the Holm-adjusted level):", ""]
    for r in rows:
        if r.decision is None:
            continue
        d = r.delta[metric]
        low, high = r.decision.interval
        lines.append(
            f"- **{r.variant}** on {r.test_set}: **{r.decision.verdict}** "
            f"(delta {metric} {d.delta:+.4f} [{low:+.4f}, {high:+.4f}], {len(r.seeds)} seeds)"
        )
    undecided = undecided_lines(rows, metric)
    if undecided:
        lines += ["", "What would decide the undecided:", "", *(f"- {line}" for line in undecided)]
    return "\n".join(lines)
