"""Figures of an ablation report: per-test-set bars of the primary metric with every seed's point and the verdict,
and canonical-vs-variant prediction scatter plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from crmlab.runners.inference import pyplot, save_figure

__all__ = ["VERDICT_COLORS", "bar_plots", "scatter_plots"]

VERDICT_COLORS = {"helps": "#55a868", "hurts": "#c44e52", "equivalent": "#8172b2", "undecided": "#a0a0a0"}
"""Bar colour of each verdict; canonical is blue."""


def bar_plots(ablation: Any, rows: list[Any], out: Path) -> list[Path]:
    """``bars_TEST.png`` per test set: the primary metric's mean over seeds as bars, each seed as a point over its
    bar (rliable style), and each variant's delta with its verdict above it (no significance stars).

    Args:
        ablation: the study (``doc.metric``, ``variants``, ``tests``).
        rows: the comparison rows (:class:`crmlab.search.ablation._comparison.Row`).
        out: folder for the figures.

    Returns:
        The files written.
    """
    plt = pyplot()
    metric = ablation.doc.metric
    names = [v.name for v in ablation.variants]
    paths = []
    for test_name in ablation.tests:
        sub = {r.variant: r for r in rows if r.test_set == test_name}
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.6))
        means = [sub[n].mean[metric] for n in names]
        colors = [VERDICT_COLORS[sub[n].decision.verdict] if sub[n].decision else "#4c72b0" for n in names]
        ax.bar(names, means, color=colors, alpha=0.6)
        points = [np.asarray(sub[n].per_seed[metric]) for n in names]
        for i, values in enumerate(points):
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, s=14, color="black", zorder=3)
        top = max(float(np.max(v)) for v in points)
        low = min(float(np.min(v)) for v in points)
        for i, n in enumerate(names):
            d = sub[n].delta[metric]
            if d is not None:
                text = f"{d.delta:+.3f}\n{sub[n].decision.verdict}"
                ax.text(i, top + 0.01, text, ha="center", va="bottom", fontsize=7)
        ax.set_ylim(max(-1.0, low - 0.1), min(1.0, top + 0.12))
        ax.set_ylabel(f"{metric} (bar: mean; points: seeds)")
        ax.set_title(test_name, fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        path = out / f"bars_{test_name}.png"
        save_figure(fig, path, dpi=120)
        paths.append(path)
    return paths


def scatter_plots(ablation: Any, results: dict[tuple[str, Any], Any], out: Path, reference: str) -> list[Path]:
    """Canonical (``reference``) vs each variant's predictions (first seed, first test set)."""
    plt = pyplot()
    seed, test_name = min(s for _, s in results), next(iter(ablation.tests))
    ref = results[(reference, seed)].predictions[test_name]
    others = [v.name for v in ablation.variants if v.name != reference]
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
    path = out / "scatter_canonical_vs_variants.png"
    save_figure(fig, path, dpi=110)
    return [path]
