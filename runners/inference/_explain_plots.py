"""Figures of ``crmlab explain``: per-motif bar charts and saliency logos aligned with motif logos (logomaker)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crmlab.runners.data import SequenceTable
from crmlab.runners.inference._figures import pyplot, save_figure
from crmlab.runners.inference._motifs import BASES, Motif

__all__ = ["TOP", "motif_bars", "saliency_logos", "variant_bars"]

TOP = 20
"""Motifs shown in a bar chart (the most frequent ones with at least ``min_hits`` hits)."""


def _frequent(table: pd.DataFrame, min_hits: int) -> pd.DataFrame:
    return table[table["hits"] >= min_hits].nlargest(TOP, "hits").iloc[::-1]


def motif_bars(table: pd.DataFrame, path: Path, title: str, min_hits: int) -> list[Path]:
    """Bar chart of the most frequent motifs: signed saliency at hits vs all positions, |saliency| ratio, and
    measured expression of sequences with vs without the motif (when the table has it).

    Args:
        table: :func:`crmlab.runners.inference._motifs.motif_table` output.
        path: the PNG to write.
        title: figure title.
        min_hits: motifs with fewer hits are left out.

    Returns:
        ``[path]``, or ``[]`` when no motif has ``min_hits`` hits.
    """
    shown = _frequent(table, min_hits)
    if shown.empty:
        return []
    plt = pyplot()
    panels = 3 if "expression_with" in shown else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 0.32 * len(shown) + 1.6), sharey=True)
    labels = [f"{r.name} ({r.hits})" for r in shown.itertuples()]
    y = np.arange(len(shown))
    ax = axes[0]
    ax.barh(y, shown["saliency_at_hits"], color=np.where(shown["saliency_at_hits"] >= 0, "tab:red", "tab:blue"))
    ax.axvline(shown["saliency_all"].iloc[0], color="k", ls="--", lw=1, label="all positions")
    ax.set(yticks=y, yticklabels=labels, xlabel="mean saliency at hits")
    ax.legend(loc="lower right", fontsize=7)
    ax = axes[1]
    ax.barh(y, shown["abs_saliency_ratio"], color="tab:purple")
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.set(xlabel="|saliency| at hits / all positions")
    if panels == 3:
        ax = axes[2]
        ax.barh(y + 0.2, shown["expression_with"], height=0.4, color="tab:green", label="with motif")
        ax.barh(y - 0.2, shown["expression_without"], height=0.4, color="tab:gray", label="without")
        low = float(np.nanmin(shown[["expression_with", "expression_without"]].to_numpy()))
        high = float(np.nanmax(shown[["expression_with", "expression_without"]].to_numpy()))
        ax.set(xlabel="mean measured expression", xlim=(low - 0.1 * (high - low + 1e-9), high + 0.05 * (high - low)))
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110)
    return [path]


def saliency_logos(
    sequences: SequenceTable,
    contributions: np.ndarray,
    saliency: np.ndarray,
    hits: pd.DataFrame,
    table: pd.DataFrame,
    motifs: Sequence[Motif],
    folder: Path,
    count: int,
    min_hits: int,
) -> list[Path]:
    """For the ``count`` frequent motifs with the highest |saliency| ratio: one example hit's saliency logo (the
    hit with the most |saliency|), and under it the motif's information-content logo at the same positions
    (reverse-complemented for a hit on the minus strand).

    Args:
        sequences: the explained sequences (ids, lengths ``(n,)``).
        contributions: ``(n, length, 4)`` gradient x input in the A, C, G, T channels.
        saliency: ``(n, length)`` per-position saliency.
        hits: motif hits (:func:`crmlab.runners.inference._motifs.scan`).
        table: the per-motif table (:func:`crmlab.runners.inference._motifs.motif_table`).
        motifs: the scanned motifs.
        folder: where the PNGs go (created).
        count: motifs to draw.
        min_hits: motifs with fewer hits are not drawn.

    Returns:
        The PNGs written, one per motif, named ``<matrix id>_<name>.png``.
    """
    import logomaker

    chosen = table[table["hits"] >= min_hits].nlargest(count, "abs_saliency_ratio")
    if chosen.empty:
        return []
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {m.matrix_id: m for m in motifs}
    paths = []
    for row in chosen.itertuples():
        motif = by_id[row.motif]
        mh = hits[hits["motif"] == row.motif]
        weight = [np.abs(saliency[h.sequence, h.start : h.end]).sum() for h in mh.itertuples()]
        hit = mh.iloc[int(np.argmax(weight))]
        i, start, end = int(hit["sequence"]), int(hit["start"]), int(hit["end"])
        lo, hi = max(0, start - 8), min(int(sequences.lengths[i]), end + 8)
        window = pd.DataFrame(contributions[i, lo:hi], columns=list(BASES), index=np.arange(lo + 1, hi + 1))
        probs = motif.probabilities()
        if hit["strand"] == "-":
            probs = probs[::-1, ::-1]
        pfm = pd.DataFrame(probs.T, columns=list(BASES), index=np.arange(start + 1, end + 1))
        info = logomaker.transform_matrix(pfm, from_type="probability", to_type="information")
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.28 * (hi - lo) + 1.5), 4.2), sharex=True)
        logomaker.Logo(window, ax=top, color_scheme="classic")
        top.axhline(0, color="k", lw=0.5)
        top.axvspan(start + 0.5, end + 0.5, color="gold", alpha=0.2)
        top.set(ylabel="gradient x input")
        top.set_title(
            f"{row.motif} {row.name}: sequence {sequences.ids[i]}, {start + 1}-{end} ({hit['strand']}), "
            f"p = {hit['p_value']:.1e}",
            fontsize=9,
        )
        logomaker.Logo(info, ax=bottom, color_scheme="classic")
        bottom.set(ylabel="bits", xlabel="position", xlim=(lo + 0.5, hi + 0.5), ylim=(0, 2))
        path = folder / f"{row.motif}_{row.name}.png".replace("/", "-").replace(":", "-")
        save_figure(fig, path, dpi=110)
        paths.append(path)
    return paths


def variant_bars(
    comparison: pd.DataFrame, variants: Sequence[str], path: Path, title: str, min_hits: int
) -> list[Path]:
    """Grouped bars, one per variant, of the |saliency| ratio at hits of the most frequent motifs.

    Args:
        comparison: the side-by-side table (``hits`` and ``<variant>.abs_saliency_ratio`` columns).
        variants: the variants, in order.
        path: the PNG to write.
        title: figure title.
        min_hits: motifs with fewer hits are left out.

    Returns:
        ``[path]``, or ``[]`` when no motif has ``min_hits`` hits.
    """
    shown = _frequent(comparison, min_hits)
    if shown.empty:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.25 * len(shown) * max(len(variants), 2) / 2 + 1.8))
    y = np.arange(len(shown))
    height = 0.8 / len(variants)
    for k, v in enumerate(variants):
        ax.barh(y + (k - (len(variants) - 1) / 2) * height, shown[f"{v}.abs_saliency_ratio"], height=height, label=v)
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.set(yticks=y, yticklabels=[f"{r.name} ({r.hits})" for r in shown.itertuples()])
    ax.set(xlabel="|saliency| at hits / all positions")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=110)
    return [path]
