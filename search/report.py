"""Comparison of an ablation against canonical CRMnet: terminal table, ``report.md``, plots, MLflow parent run."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crmlab.search.stats import Delta, holm, mean_sd, paired_delta

__all__ = [
    "LABELS",
    "METRICS",
    "REFERENCE",
    "Row",
    "compare",
    "log_comparison",
    "scatter_plots",
    "table_text",
    "write_all",
    "write_report",
]

REFERENCE = "canonical"
"""The reference variant of an ablation: the base spec and recipe, unpatched."""
METRICS = ("pearson_r", "spearman_rho", "r2")
LABELS = {"pearson_r": "Pearson r", "spearman_rho": "Spearman rho", "r2": "R2"}


@dataclass
class Row:
    """One variant on one test set: mean/sd per metric over seeds and the delta vs canonical per metric."""

    variant: str
    test_set: str
    seeds: int
    mean: dict[str, float]
    sd: dict[str, float]
    delta: dict[str, Delta | None]


def compare(ablation: Any, results: dict[tuple[str, int], Any], replicates: int = 2000) -> list[Row]:
    """Rows for every variant x test set; deltas are paired by seed and Holm-corrected across variants."""
    seeds = ablation.doc.seeds
    rows = []
    for test_name, test in ablation.tests.items():
        group = []
        for v in ablation.variants:
            runs = [results[(v.name, s)] for s in seeds]
            mean, sd, delta = {}, {}, {}
            for m in METRICS:
                mean[m], sd[m] = mean_sd([r.test_metrics[test_name][m] for r in runs])
                delta[m] = None
                if v.name != REFERENCE:
                    delta[m] = paired_delta(
                        test.values,
                        [results[(REFERENCE, s)].predictions[test_name] for s in seeds],
                        [r.predictions[test_name] for r in runs],
                        metric=m,
                        replicates=replicates,
                    )
            group.append(Row(v.name, test_name, len(seeds), mean, sd, delta))
        for m in METRICS:
            tested = [r for r in group if r.delta[m] is not None]
            for r, p in zip(tested, holm([r.delta[m].p_value for r in tested]), strict=True):
                d = r.delta[m]
                r.delta[m] = Delta(d.delta, d.ci_low, d.ci_high, d.p_value, p)
        rows.extend(group)
    return rows


def _fmt_delta(d: Delta | None) -> str:
    if d is None:
        return "reference"
    return f"{d.delta:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] p={d.p_adjusted:.3g}"


def table_text(rows: list[Row]) -> str:
    """The comparison as a fixed-width terminal table."""
    head = ["variant", "test set", "Pearson r", "Spearman rho", "R2", "delta r vs canonical [95% CI] p(Holm)"]
    body = [
        [
            r.variant,
            r.test_set,
            *(f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS),
            _fmt_delta(r.delta["pearson_r"]),
        ]
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def write_report(ablation: Any, rows: list[Row], out: Path) -> list[Path]:
    """``report.md``, ``comparison.csv`` and the plots in ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "comparison.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        summary = [f"{m}_{k}" for m in METRICS for k in ("mean", "sd")]
        deltas_head = [f"delta_{m}_{k}" for m in METRICS for k in ("value", "ci_low", "ci_high", "p", "p_holm")]
        w.writerow(["variant", "test_set", "seeds", *summary, *deltas_head])
        for r in rows:
            deltas = []
            for m in METRICS:
                d = r.delta[m]
                deltas += [d.delta, d.ci_low, d.ci_high, d.p_value, d.p_adjusted] if d else [""] * 5
            w.writerow([r.variant, r.test_set, r.seeds, *[x for m in METRICS for x in (r.mean[m], r.sd[m])], *deltas])
    plots = _plots(ablation, rows, out)
    lines = [
        f"# Ablation: {ablation.doc.name}",
        "",
        ablation.doc.description,
        "",
        f"Seeds: {', '.join(map(str, ablation.doc.seeds))}. Deltas are variant minus canonical, paired by seed; the 95%"
        " confidence interval bootstraps the test sequences (2,000 resamples, shared across seeds and models); p is"
        " the two-sided bootstrap p-value, Holm-corrected across the variants of each test set and metric.",
        "",
        "| variant | parameters | test set | Pearson r | Spearman rho | R2 | delta r [95% CI] | p (Holm) |",
        "|---|---:|---|---|---|---|---|---:|",
    ]
    params = {v.name: v.parameters for v in ablation.variants}
    for r in rows:
        d = r.delta["pearson_r"]
        ci = f"{d.delta:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]" if d else "reference"
        p = f"{d.p_adjusted:.3g}" if d else ""
        stats = " | ".join(f"{r.mean[m]:.4f} ± {r.sd[m]:.4f}" for m in METRICS)
        lines.append(f"| {r.variant} | {params.get(r.variant, 0):,} | {r.test_set} | {stats} | {ci} | {p} |")
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return [report, csv_path, *plots]


def _plots(ablation: Any, rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [v.name for v in ablation.variants]
    for test_name in ablation.tests:
        sub = {r.variant: r for r in rows if r.test_set == test_name}
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.6))
        means = [sub[n].mean["pearson_r"] for n in names]
        sds = [sub[n].sd["pearson_r"] for n in names]
        colors = ["#4c72b0" if n == REFERENCE else "#a0a0a0" for n in names]
        ax.bar(names, means, yerr=sds, color=colors, capsize=4)
        for i, n in enumerate(names):
            d = sub[n].delta["pearson_r"]
            if d is not None:
                mark = "*" if d.p_adjusted < 0.05 else "n.s."
                ax.text(i, means[i] + sds[i] + 0.01, f"{d.delta:+.3f}\n{mark}", ha="center", va="bottom", fontsize=7)
        low = min(m - s for m, s in zip(means, sds, strict=True))
        ax.set_ylim(max(0.0, low - 0.1), min(1.0, max(means) + 0.12))
        ax.set_ylabel("Pearson r (mean ± sd over seeds)")
        ax.set_title(test_name, fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        fig.tight_layout()
        path = out / f"bars_{test_name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def scatter_plots(ablation: Any, results: dict[tuple[str, Any], Any], out: Path) -> list[Path]:
    """Canonical vs each variant's predictions (first seed, first test set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed, test_name = ablation.doc.seeds[0], next(iter(ablation.tests))
    ref = results[(REFERENCE, seed)].predictions[test_name]
    others = [v.name for v in ablation.variants if v.name != REFERENCE]
    if not others:
        return []
    cols = min(3, len(others))
    rows_n = math.ceil(len(others) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 3.0 * rows_n), squeeze=False)
    for ax, name in zip(axes.ravel(), others, strict=False):
        pred = results[(name, seed)].predictions[test_name]
        ax.hexbin(ref, pred, gridsize=35, mincnt=1, cmap="viridis")
        r = float(np.corrcoef(ref, pred)[0, 1])
        ax.set(xlabel="canonical prediction", ylabel=f"{name} prediction", title=f"r = {r:.3f}")
    for ax in axes.ravel()[len(others) :]:
        ax.axis("off")
    fig.suptitle(f"{test_name}, seed {seed}", fontsize=9)
    fig.tight_layout()
    path = out / "scatter_canonical_vs_variants.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_all(ablation: Any, rows: list[Row], results: dict, runs_dir: Path) -> list[Path]:
    """Report, table and plots in ``RUNS_DIR/_studies/NAME-KEY/``; ``report.md`` first."""
    out = runs_dir / "_studies" / f"{ablation.doc.name}-{ablation.key}"
    return write_report(ablation, rows, out) + scatter_plots(ablation, results, out)


def log_comparison(rows: list[Row], files: list[Path], tracker: Any) -> None:
    """Log the comparison files and per-variant metrics (means and deltas) on the study's parent run."""
    metrics = {}
    for r in rows:
        for m in METRICS:
            metrics[f"{r.variant}.{r.test_set}.{m}"] = r.mean[m]
            if r.delta[m] is not None:
                metrics[f"{r.variant}.{r.test_set}.delta_{m}"] = r.delta[m].delta
    tracker.log_metrics(metrics)
    for f in files:
        tracker.log_artifact(f)
