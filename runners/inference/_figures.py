"""Figures as PNG files: matplotlib without a display, one way to save a figure, and a run's measured-against-predicted
scatter plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["prediction_scatters", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display on servers and workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` as a PNG and close it (figures left open pile up in long studies)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def prediction_scatters(
    predictions: Mapping[str, np.ndarray],
    measured: Mapping[str, np.ndarray],
    pearson_r: Mapping[str, float],
    out: Path,
) -> list[Path]:
    """``scatter_TEST.png`` in ``out`` per test set: measured against predicted expression as a hexbin.

    Args:
        predictions: predictions ``(n,)`` by test set name.
        measured: measured values ``(n,)`` by test set name.
        pearson_r: each test set's Pearson r, shown in the title.
        out: the folder the files are written to.
    """
    plt = pyplot()
    paths = []
    for name, pred in predictions.items():
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.hexbin(measured[name], pred, gridsize=40, mincnt=1, cmap="viridis")
        title = f"{name}\nPearson r = {pearson_r[name]:.3f}"
        ax.set(xlabel="measured expression", ylabel="predicted expression", title=title)
        paths.append(save_figure(fig, out / f"scatter_{name}.png"))
    return paths
