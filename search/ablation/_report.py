"""An ablation's report folder: ``report.md`` (with the seed rule and method text), ``comparison.csv``,
``verdicts.csv``, ``per_seed.csv`` and the plots.

The rows come from :mod:`crmlab.search.ablation._comparison`, whose statistics are :mod:`crmlab.search.ablation._stats`
(seed as the unit of replication, test-set sampling added) and :mod:`crmlab.search.ablation._verdicts` (Holm across the
variants of a test set, helps / hurts / equivalent / undecided); :func:`method_text` says the same in the report.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from crmlab.search.ablation._comparison import CONTROL, LABELS, METRICS, REFERENCE, Row
from crmlab.search.ablation._plots import bar_plots, scatter_plots
from crmlab.search.ablation._seeds import AdaptiveSeeds
from crmlab.search.ablation._stats import SEED_BOUND_LEVEL
from crmlab.search.ablation._table import notes, verdict_cells

__all__ = ["method_text", "seed_rule_text", "write_all", "write_report"]


def seed_rule_text(seeds: Any) -> str:
    """The study's seed rule, as ``report.md`` states it."""
    if not isinstance(seeds, AdaptiveSeeds):
        return f"Seeds: {', '.join(map(str, seeds))}."
    return (
        f"Seeds: adaptive, {seeds.initial} to start (0 to {seeds.initial - 1}), at most {seeds.max}: after each look"
        " every variant still undecided on some test set got the next seed, canonical with it, and each look spent"
        " its share of alpha (O'Brien-Fleming-type alpha spending, crmlab.search.ablation._seeds). The seeds column"
        " says how many seeds each verdict took."
    )


def method_text(ablation: Any) -> str:
    """How deltas, intervals, p-values and verdicts are computed, as ``report.md`` states it."""
    doc = ablation.doc
    return (
        "Deltas are variant minus canonical, paired by seed (a seed fixes both runs' data split and initialisation"
        " stream), and the seed is the unit of replication. A delta's standard error combines the between-seed"
        " variance of the per-seed deltas with the test-set sampling variance (delta method for Pearson r and R2,"
        " paired bootstrap of the test sequences for Spearman rho); intervals and p-values are Student-t with"
        " Welch-Satterthwaite degrees of freedom (Bouthillier et al. 2021), in which the between-seed variance enters"
        f" at its {SEED_BOUND_LEVEL:.0%} upper confidence bound, so that seeds agreeing by chance do not buy degrees"
        " of freedom. p is Holm-adjusted across the variants of each test set"
        + (
            " (weighted Holm for adaptive seeds: each variant's p is divided by its look's share of alpha before the"
            " step-down)"
            if isinstance(doc.seeds, AdaptiveSeeds)
            else ""
        )
        + "; it is the p the verdict was read from (helps / hurts exactly when p <= alpha); p below 0.001 prints as"
        " < 0.001."
        f" Verdicts on {LABELS[doc.metric]}, family level alpha = {doc.alpha}, min_effect = {doc.min_effect}:"
        " helps / hurts when the interval at the variant's Holm-adjusted level (the CI shown) lies above / below 0;"
        " equivalent when the (1 - 2 alpha) interval at that level lies inside +-min_effect (two one-sided tests);"
        " undecided otherwise. With a handful of seeds equivalence at a small min_effect is rarely reachable, and"
        " undecided is then the honest answer (crmlab.search.ablation._stats, crmlab.search.ablation._verdicts)."
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
        tail = " | ".join(verdict_cells(r, metric))
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
