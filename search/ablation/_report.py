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
from crmlab.search.ablation._planning import POWER, SEEDS_LIMIT
from crmlab.search.ablation._plots import bar_plots, scatter_plots
from crmlab.search.ablation._seeds import AdaptiveSeeds
from crmlab.search.ablation._table import notes, plan_cells, undecided_lines, verdict_cells

__all__ = ["method_text", "planning_text", "seed_rule_text", "write_all", "write_report"]


def seed_rule_text(seeds: Any) -> str:
    """The study's seed rule, as ``report.md`` states it."""
    if not isinstance(seeds, AdaptiveSeeds):
        return f"Seeds: {', '.join(map(str, seeds))}."
    return (
        f"Seeds: adaptive, {seeds.initial} to start ({seeds.first} to {seeds.first + seeds.initial - 1}), at most"
        f" {seeds.max}: after each look"
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
        " paired bootstrap of the test sequences for Spearman rho; Bouthillier et al. 2021). Intervals and p-values"
        " come from the Behrens-Fisher distribution of that sum (Fisher 1935; Tsui & Weerahandi 1989): the"
        " between-seed variance, estimated from seeds - 1 degrees of freedom, enters through its fiducial"
        " distribution and the test-set variance as known, so it is Student's t with seeds - 1 degrees of freedom"
        " when training noise dominates and normal when test-set sampling does, and seeds that agree by chance do not"
        " buy precision; its error rates hold at the small levels Holm and adaptive looks test at"
        " (bench/results/calibration.md). p is Holm-adjusted across the variants of each test set"
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


def planning_text() -> str:
    """What the two planning columns of an undecided verdict mean, as ``report.md`` states it."""
    return (
        f"Undecided verdicts: *detectable ({POWER:.0%})* is the smallest delta this study detects (helps / hurts) with"
        f" {POWER:.0%} power at the verdict's level, its seeds and its observed seed-to-seed spread; a true effect"
        " smaller than that is likely to stay undecided. *Seeds to decide* is how many seeds (the ones trained"
        f" included, reused by run key) detect an effect the size of the current estimate with {POWER:.0%} power at"
        f" the same level and spread; '> {SEEDS_LIMIT}' means the estimate is too close to 0 to chase, and"
        " equivalence within min_effect is the question to ask instead (crmlab.search.ablation._planning)."
    )


def _write_comparison_csv(rows: list[Row], path: Path) -> None:
    parts = ("value", "se_seed", "se_test", "ci95_low", "ci95_high", "p", "p_holm")
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
                    cells += [d.delta, d.se_seed, d.se_test, *d.interval(0.95), d.p_value, r.p_holm[m]]
            w.writerow(cells)


def _write_verdicts_csv(rows: list[Row], path: Path, metric: str) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        head = ["variant", "test_set", "seeds", "metric", "delta", "level", "ci_low", "ci_high", "verdict"]
        w.writerow([*head, "detectable_80", "seeds_to_decide"])
        for r in rows:
            d, dec = r.delta[metric], r.decision
            if d is not None and dec is not None:
                planned = [r.plan.detectable, r.plan.seeds or ""] if r.plan is not None else ["", ""]
                cells = [r.variant, r.test_set, len(r.seeds), metric, d.delta, dec.alpha, *dec.interval, dec.verdict]
                w.writerow([*cells, *planned])


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
        f" | p (Holm) | verdict | detectable ({POWER:.0%}) | seeds to decide |",
        "|---|---:|---|---:|---|---|---|---:|---|---:|---|---:|---:|",
    ]
    params = {v.name: v.parameters for v in ablation.variants}
    for r in rows:
        stats = " | ".join(f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS)
        tail = " | ".join([*verdict_cells(r, metric), *plan_cells(r)])
        lines.append(
            f"| {r.variant} | {params.get(r.variant, 0):,} | {r.test_set} | {len(r.seeds)} | {stats} | {tail} |"
        )
    lines += ["", planning_text(), ""]
    lines += [f"- {line}" for line in undecided_lines(rows, metric)]
    lines += ["", "Per-seed values: `per_seed.csv`; every metric's delta and interval: `comparison.csv`.", ""]
    lines += [*(f"![{p.stem}]({p.name})" for p in plots), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return [report, *files, *plots]


def write_all(ablation: Any, rows: list[Row], results: dict, runs_dir: Path) -> list[Path]:
    """Report, tables and plots in ``RUNS_DIR/_studies/NAME-KEY/``; ``report.md`` first."""
    out = runs_dir / "_studies" / f"{ablation.doc.name}-{ablation.key}"
    return write_report(ablation, rows, out) + scatter_plots(ablation, results, out, REFERENCE)
