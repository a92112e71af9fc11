"""Statistics of an ablation: variant vs canonical, paired by seed, bootstrapped over test sequences.

For one variant, one test set and one metric (Pearson r, Spearman rho, R^2):

* ``delta`` is the mean over seeds of ``metric(variant, seed) - metric(canonical, seed)`` (paired by seed: both
  runs share the seed's data split and initialisation stream).
* The 95% confidence interval is a two-level bootstrap: each replicate resamples the seeds with replacement and the
  *test sequences* with replacement (one sequence resample shared by every seed and both models, so the pairing
  is kept) and recomputes ``delta``; the interval is the 2.5th/97.5th percentile of the replicates. It therefore
  carries both seed-to-seed variation (training noise) and test-set sampling; with one seed only the latter.
* The p-value is the two-sided bootstrap p-value of ``delta = 0``: twice the smaller tail mass of the replicates
  on either side of 0 (floored at 1 / (replicates + 1)).
* Holm's step-down correction adjusts the p-values of all variants of one test set and metric together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pearson_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair: ``y``, ``p`` ``(..., n)`` -> ``(...)``."""
    yc = y - y.mean(axis=-1, keepdims=True)
    pc = p - p.mean(axis=-1, keepdims=True)
    den = np.sqrt((yc * yc).sum(-1) * (pc * pc).sum(-1))
    return np.where(den > 0, (yc * pc).sum(-1) / np.where(den > 0, den, 1), np.nan)


def _spearman_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return _pearson_rows(stats.rankdata(y, axis=-1), stats.rankdata(p, axis=-1))


def _r2_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    total = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(-1)
    return 1 - ((y - p) ** 2).sum(-1) / total


METRICS: dict[str, Metric] = {"pearson_r": _pearson_rows, "spearman_rho": _spearman_rows, "r2": _r2_rows}


@dataclass(frozen=True)
class Delta:
    """A variant's paired difference to the canonical model on one test set and metric."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float = float("nan")


def paired_delta(
    measured: np.ndarray,
    canonical: Sequence[np.ndarray],
    variant: Sequence[np.ndarray],
    metric: str = "pearson_r",
    replicates: int = 2000,
    seed: int = 0,
    chunk: int = 250,
) -> Delta:
    """Delta of ``variant`` vs ``canonical`` (predictions per seed, same seed order) on ``measured`` ``(n,)``.

    Args:
        measured: measured values of the test sequences, ``(n,)``.
        canonical: canonical predictions, one ``(n,)`` array per seed.
        variant: the variant's predictions, one ``(n,)`` array per seed, paired with ``canonical`` by position.
        metric: ``pearson_r``, ``spearman_rho`` or ``r2``.
        replicates: bootstrap resamples of the test sequences.
        seed: seed of the resampling.
        chunk: replicates computed at once (memory: ``chunk * n * seeds`` floats).

    Returns:
        The :class:`Delta` (``p_adjusted`` is filled in by :func:`holm`).
    """
    if len(canonical) != len(variant) or not canonical:
        raise ValueError(f"need the same non-zero number of seeds, got {len(canonical)} and {len(variant)}")
    fn = METRICS[metric]
    y = np.asarray(measured, dtype=np.float64)
    c = np.stack([np.asarray(a, dtype=np.float64) for a in canonical])
    v = np.stack([np.asarray(a, dtype=np.float64) for a in variant])
    observed = float(np.mean(fn(y[None], v) - fn(y[None], c)))
    rng = np.random.default_rng(seed)
    boot = np.empty(replicates)
    n_seeds = len(canonical)
    for start in range(0, replicates, chunk):
        k = min(chunk, replicates - start)
        idx = rng.integers(0, len(y), size=(k, len(y)))
        seeds = rng.integers(0, n_seeds, size=(k, n_seeds))
        yb = y[idx][:, None, :]
        per_seed = fn(yb, v[:, idx].transpose(1, 0, 2)) - fn(yb, c[:, idx].transpose(1, 0, 2))  # (k, n_seeds)
        boot[start : start + k] = np.nanmean(np.take_along_axis(per_seed, seeds, axis=1), axis=1)
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    tail = min(np.mean(boot <= 0), np.mean(boot >= 0))
    p = float(min(1.0, max(2 * tail, 1 / (replicates + 1))))
    return Delta(observed, float(low), float(high), p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
