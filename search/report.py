"""Comparison of an ablation against canonical CRMnet: per-variant deltas and verdicts, the terminal table,
``report.md`` with ``comparison.csv`` and ``per_seed.csv``, and the MLflow parent run's metrics and verdict tags.

The statistics are :mod:`crmlab.search.stats` (seed as the unit of replication, test-set sampling added) and
:mod:`crmlab.search.verdicts` (Holm across the variants of a test set, helps / hurts / equivalent / undecided);
:func:`method_text` says the same in the report.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmlab.search.report_plots import bar_plots, scatter_plots
from crmlab.search.seeds import AdaptiveSeeds, plan_seeds, study_decisions, variance_method
from crmlab.search.stats import SeedDelta, format_p, holm, mean_sd, seed_delta
from crmlab.search.verdicts import Decision

__all__ = [
    "CONTROL",
    "LABELS",
    "METRICS",
    "REFERENCE",
    "Row",
    "compare",
    "comparison_table",
    "log_comparison",
    "method_text",
    "notes",
    "seed_rule_text",
    "table_text",
    "verdicts_note",
    "write_all",
    "write_report",
]

REFERENCE = "canonical"
"""The reference variant of an ablation: the base spec and recipe, unpatched."""
CONTROL = "control"
"""The A/A control variant: canonical again, under other initialisation seeds (``controls: {replicate: true}``)."""
METRICS = ("pearson_r", "spearman_rho", "r2")
LABELS = {"pearson_r": "Pearson r", "spearman_rho": "Spearman rho", "r2": "R2"}


@dataclass
class Row:
    """One variant on one test set: its metrics over seeds and its delta vs canonical.

    Attributes:
        variant: the variant's name.
        test_set: the test set's name.
        seeds: the seeds, in order (per-seed values follow this order).
        mean: mean over seeds per metric.
        sd: sample sd over seeds per metric.
        per_seed: the metric's value for each seed, per metric.
        delta: the paired delta vs canonical per metric (``None`` for canonical).
        p_holm: Holm-adjusted p-value per metric across the variants of the test set (``None`` for canonical).
        decision: the verdict on the study's primary metric (``None`` for canonical).
    """

    variant: str
    test_set: str
    seeds: list[int]
    mean: dict[str, float]
    sd: dict[str, float]
    per_seed: dict[str, list[float]]
    delta: dict[str, SeedDelta | None]
    p_holm: dict[str, float | None]
    decision: Decision | None


def compare(
    ablation: Any,
    results: dict[tuple[str, int], Any],
    seeds: dict[str, list[int]] | None = None,
    replicates: int = 2000,
) -> list[Row]:
    """Rows for every variant x test set, with deltas paired by seed, Holm across variants and verdicts.

    Pearson r and R^2 take their test-set variance from the delta method, Spearman rho from ``replicates`` paired
    bootstrap resamples of the test sequences (see :mod:`crmlab.search.stats`). Verdicts use the study's ``metric``,
    ``min_effect``, ``alpha`` and seed rule (:func:`crmlab.search.seeds.study_decisions`).

    Args:
        ablation: the loaded study.
        results: finished runs by ``(variant, seed)``.
        seeds: each variant's seeds (canonical's include all others'); default: the study's seed plan over
            ``results`` (:func:`crmlab.search.seeds.plan_seeds`).
        replicates: bootstrap resamples for Spearman rho.
    """
    doc = ablation.doc
    seeds = seeds if seeds is not None else plan_seeds(ablation, results).seeds
    rows = []
    for test_name, test in ablation.tests.items():
        group = []
        for v in ablation.variants:
            own = seeds[v.name]
            runs = [results[(v.name, s)] for s in own]
            canonical = [results[(REFERENCE, s)].predictions[test_name] for s in own]
            per_seed = {m: [float(r.test_metrics[test_name][m]) for r in runs] for m in METRICS}
            mean: dict[str, float] = {}
            sd: dict[str, float] = {}
            delta: dict[str, SeedDelta | None] = {}
            for m in METRICS:
                mean[m], sd[m] = mean_sd(per_seed[m])
                delta[m] = None
                if v.name != REFERENCE:
                    delta[m] = seed_delta(
                        test.values,
                        canonical,
                        [r.predictions[test_name] for r in runs],
                        metric=m,
                        test_variance=variance_method(m),
                        replicates=replicates,
                    )
            group.append(Row(v.name, test_name, own, mean, sd, per_seed, delta, dict.fromkeys(METRICS), None))
        tested = [r for r in group if r.variant != REFERENCE]
        for m in METRICS:
            p_values = [_p(r.delta[m]) for r in tested]
            for r, p in zip(tested, holm(p_values), strict=True):
                r.p_holm[m] = p
        decisions, _ = study_decisions(doc, {r.variant: r.delta[doc.metric] for r in tested})
        for r in tested:
            r.decision = decisions[r.variant]
        rows.extend(group)
    return rows


def _p(d: SeedDelta | None) -> float:
    """The p-value entering Holm: 1 for a single seed (training noise not estimated, nothing to reject)."""
    return d.p_value if d is not None and d.training_noise_estimated else 1.0


def _cells(r: Row, metric: str) -> list[str]:
    """Delta, the interval the verdict reads, Holm p and verdict of ``r`` on ``metric``."""
    d = r.delta[metric]
    if d is None or r.decision is None:
        return ["reference", "", "", ""]
    low, high = r.decision.interval
    p = r.p_holm[metric]
    return [f"{d.delta:+.4f}", f"[{low:+.4f}, {high:+.4f}]", format_p(1.0 if p is None else p), r.decision.verdict]


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

    The interval is the one the verdict reads: at the variant's Holm-adjusted level (see :func:`method_text`).
    """
    head = ["variant", "test set", "seeds", *(LABELS[m] for m in METRICS)]
    head += [f"delta {LABELS[metric]}", "CI (Holm level)", "p (Holm)", "verdict"]
    means = {id(r): [f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS] for r in rows}
    body = [[r.variant, r.test_set, str(len(r.seeds)), *means[id(r)], *_cells(r, metric)] for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], *(f"note: {n}" for n in notes(rows))])


def seed_rule_text(seeds: Any) -> str:
    """The study's seed rule, as ``report.md`` states it."""
    if not isinstance(seeds, AdaptiveSeeds):
        return f"Seeds: {', '.join(map(str, seeds))}."
    return (
        f"Seeds: adaptive, {seeds.initial} to start (0 to {seeds.initial - 1}), at most {seeds.max}: after each look"
        " every variant still undecided on some test set got the next seed, canonical with it, and each look spent"
        " its share of alpha (O'Brien-Fleming-type alpha spending, crmlab.search.seeds). The seeds column says how"
        " many seeds each verdict took."
    )


def method_text(ablation: Any) -> str:
    """How deltas, intervals, p-values and verdicts are computed, as ``report.md`` states it."""
    doc = ablation.doc
    return (
        "Deltas are variant minus canonical, paired by seed (a seed fixes both runs' data split and initialisation"
        " stream), and the seed is the unit of replication. A delta's standard error combines the between-seed"
        " variance of the per-seed deltas with the test-set sampling variance (delta method for Pearson r and R2,"
        " paired bootstrap of the test sequences for Spearman rho); intervals and p-values are Student-t with"
        " Welch-Satterthwaite degrees of freedom (Bouthillier et al. 2021). p is Holm-adjusted across the variants of"
        " each test set; p below 0.001 prints as < 0.001."
        f" Verdicts on {LABELS[doc.metric]}, family level alpha = {doc.alpha}, min_effect = {doc.min_effect}:"
        " helps / hurts when the interval at the variant's Holm-adjusted level (the CI shown) lies above / below 0;"
        " equivalent when the (1 - 2 alpha) interval at that level lies inside +-min_effect (two one-sided tests);"
        " undecided otherwise. With a handful of seeds equivalence at a small min_effect is rarely reachable, and"
        " undecided is then the honest answer (crmlab.search.stats, crmlab.search.verdicts)."
        + (
            f" The variant '{CONTROL}' is the A/A control: canonical again, its weights and dropout drawn from seed"
            " 1,000,000 + s for study seed s (same data split and batch order as canonical's seed s). Its delta is the"
            " study's noise floor; a helps or hurts verdict for it marks the study as miscalibrated."
            if any(v.name == CONTROL for v in ablation.variants)
            else ""
        )
    )


def _write_comparison_csv(rows: list[Row], path: Path) -> None:
    parts = ("value", "se_seed", "se_test", "df", "ci95_low", "ci95_high", "p", "p_holm")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        summary = [f"{m}_{k}" for m in METRICS for k in ("mean", "sd")]
        w.writerow(["variant", "test_set", "seeds", *summary, *(f"delta_{m}_{k}" for m in METRICS for k in parts)])
        for r in rows:
            cells: list[Any] = [
                r.variant,
                r.test_set,
                len(r.seeds),
                *(x for m in METRICS for x in (r.mean[m], r.sd[m])),
            ]
            for m in METRICS:
                d = r.delta[m]
                if d is None:
                    cells += [""] * len(parts)
                else:
                    cells += [d.delta, d.se_seed, d.se_test, d.df, *d.interval(0.95), d.p_value, r.p_holm[m]]
            w.writerow(cells)


def _write_verdicts_csv(rows: list[Row], path: Path, metric: str) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "test_set", "seeds", "metric", "delta", "level", "ci_low", "ci_high", "verdict"])
        for r in rows:
            d, dec = r.delta[metric], r.decision
            if d is not None and dec is not None:
                w.writerow(
                    [r.variant, r.test_set, len(r.seeds), metric, d.delta, dec.alpha, *dec.interval, dec.verdict]
                )


def _write_per_seed_csv(rows: list[Row], path: Path, metric: str) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "test_set", "seed", *METRICS, f"delta_{metric}"])
        for r in rows:
            d = r.delta[metric]
            for i, seed in enumerate(r.seeds):
                delta = d.per_seed[i] if d is not None else ""
                w.writerow([r.variant, r.test_set, seed, *(r.per_seed[m][i] for m in METRICS), delta])


def write_report(ablation: Any, rows: list[Row], out: Path) -> list[Path]:
    """``report.md``, ``comparison.csv``, ``verdicts.csv``, ``per_seed.csv`` and the bar plots in ``out``.

    Returns:
        The files written, ``report.md`` first.
    """
    out.mkdir(parents=True, exist_ok=True)
    metric = ablation.doc.metric
    files = [out / "comparison.csv", out / "verdicts.csv", out / "per_seed.csv"]
    _write_comparison_csv(rows, files[0])
    _write_verdicts_csv(rows, files[1], metric)
    _write_per_seed_csv(rows, files[2], metric)
    plots = bar_plots(ablation, rows, out)
    label = LABELS[metric]
    lines = [f"# Ablation: {ablation.doc.name}", "", ablation.doc.description, ""]
    lines += [f"{seed_rule_text(ablation.doc.seeds)} {method_text(ablation)}", ""]
    lines += [*(f"**Note:** {n}" for n in notes(rows)), ""]
    lines += [
        f"| variant | parameters | test set | seeds | Pearson r | Spearman rho | R2 | delta {label} | CI (Holm level)"
        " | p (Holm) | verdict |",
        "|---|---:|---|---:|---|---|---|---:|---|---:|---|",
    ]
    params = {v.name: v.parameters for v in ablation.variants}
    for r in rows:
        stats = " | ".join(f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS)
        tail = " | ".join(_cells(r, metric))
        lines.append(
            f"| {r.variant} | {params.get(r.variant, 0):,} | {r.test_set} | {len(r.seeds)} | {stats} | {tail} |"
        )
    lines += ["", "Per-seed values: `per_seed.csv`; every metric's delta and interval: `comparison.csv`.", ""]
    lines += [*(f"![{p.stem}]({p.name})" for p in plots), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return [report, *files, *plots]


def write_all(ablation: Any, rows: list[Row], results: dict, runs_dir: Path) -> list[Path]:
    """Report, tables and plots in ``RUNS_DIR/_studies/NAME-KEY/``; ``report.md`` first."""
    out = runs_dir / "_studies" / f"{ablation.doc.name}-{ablation.key}"
    return write_report(ablation, rows, out) + scatter_plots(ablation, results, out, REFERENCE)


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
    used), ``level``, ``p_holm`` and ``verdict`` (blank for canonical, the reference)."""
    table: dict[str, list[Any]] = {k: [] for k in ("variant", "test_set", "metric", "seeds", "mean", "sd")}
    table |= {k: [] for k in ("delta", "ci_low", "ci_high", "level", "p_holm", "verdict")}
    for r in rows:
        d, dec = r.delta.get(metric), r.decision
        low, high = dec.interval if dec is not None else (None, None)
        values = [r.variant, r.test_set, metric, len(r.seeds), r.mean[metric], r.sd[metric]]
        values += [d.delta if d is not None else None, low, high, dec.alpha if dec is not None else None]
        values += [r.p_holm.get(metric), dec.verdict if dec is not None else ""]
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
    return "\n".join(lines)
