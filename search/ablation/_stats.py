"""Statistics of an ablation: a variant vs canonical on one test set and metric, seeds as the unit of replication.

For one variant, one test set and one metric (Pearson r, Spearman rho, R^2; larger is better for all three), the
variant and the canonical model are trained with the same ``k`` seeds (a seed fixes the data split and the
initialisation stream of both):

* **Estimate.** The per-seed paired deltas ``d_s = metric(variant_s) - metric(canonical_s)`` on the test set; the
  estimate is their mean.
* **Training noise.** The between-seed variance of the ``d_s``: ``se_seed^2 = s_d^2 / k`` with ``k - 1`` degrees of
  freedom. Seeds are the replication unit that a comparison must sample (Bouthillier et al. 2021, "Accounting for
  Variance in Machine Learning Benchmarks", MLSys): resampling 2-5 seeds with replacement cannot estimate their
  spread (the resampled mean of ``k`` values takes a handful of distinct values and its variance is ``(k - 1) / k``
  of ``s_d^2 / k``), so the seeds enter through Student's t.
* **Test-set sampling.** ``se_test^2``, the variance of the seed-averaged delta over resamples of the test sequences:
  either a paired bootstrap (one resample of the sequences shared by every seed and both models, so the pairing is
  kept) or, for Pearson r and R^2, its analytic equivalent, the nonparametric delta method (infinitesimal
  jackknife, Efron 1982): ``se_test^2 = sum_i IF_i^2 / n^2`` with ``IF_i`` the empirical influence of test sequence
  ``i`` on the seed-averaged delta.
* **Combination.** ``se = sqrt(se_seed^2 + se_test^2)``; intervals and two-sided p-values come from the
  Behrens-Fisher distribution of the delta's error (:mod:`crmlab.search.ablation._fiducial`), in which the seed
  variance, estimated from ``k - 1`` degrees of freedom, enters through its fiducial distribution and the test-set
  variance, estimated from thousands of sequences, as known. It is Student's ``t_{k-1}`` when training noise
  dominates and the normal when test-set sampling does, and stays valid at the small levels Holm and adaptive looks
  test at, where a Welch-Satterthwaite t is anti-conservative with 2-3 seeds (a seed variance small by chance shrinks
  ``se`` and inflates its degrees of freedom); ``bench/calibration.py`` and
  ``tests/search/ablation/test_calibration.py`` check the resulting error rates. The two parts of ``se`` overlap
  slightly (the seed-specific share of test-set sampling is in both), which errs on the conservative side.
* **One seed.** Training noise cannot be estimated: ``SeedDelta.training_noise_estimated`` is False, ``se_seed`` is
  NaN, and the interval is the test-set-only normal interval. It says how precisely this
  one pair of trained models was measured, not whether the variant is better; verdicts treat it as undecided.

Multiplicity across the variants of one test set uses Holm's step-down procedure (Holm 1979): :func:`holm` gives
adjusted p-values, :func:`holm_levels` the per-hypothesis significance levels under which an interval excludes 0
exactly when Holm rejects. :func:`format_p` prints p-values without false precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from crmlab.search.ablation._fiducial import critical_value, tail_probability

__all__ = [
    "METRICS",
    "SeedDelta",
    "format_p",
    "holm",
    "holm_levels",
    "mean_sd",
    "seed_delta",
    "seed_delta_from",
]

Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]
TestVariance = Literal["bootstrap", "influence"]


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
"""Vectorised metrics: ``fn(y, p)`` with ``y``, ``p`` broadcastable ``(..., n)`` -> ``(...)``."""


def _pearson_influence(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Empirical influence of each sequence on Pearson r: ``y`` ``(n,)``, ``p`` ``(k, n)`` -> ``(k, n)``."""
    yz = (y - y.mean()) / y.std()
    pc = p - p.mean(axis=-1, keepdims=True)
    pz = pc / pc.std(axis=-1, keepdims=True)
    r = (yz * pz).mean(axis=-1, keepdims=True)
    return yz * pz - r / 2 * (yz * yz + pz * pz)


def _r2_influence(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Empirical influence of each sequence on R^2 = 1 - SSE / SST: ``(n,)``, ``(k, n)`` -> ``(k, n)``."""
    sq = (y - y.mean()) ** 2
    sst = sq.mean()
    e2 = (y - p) ** 2
    sse = e2.mean(axis=-1, keepdims=True)
    return -((e2 - sse) - sse / sst * (sq - sst)) / sst


_INFLUENCE: dict[str, Metric] = {"pearson_r": _pearson_influence, "r2": _r2_influence}


@dataclass(frozen=True)
class SeedDelta:
    """A variant's paired difference to the canonical model on one test set and metric.

    Attributes:
        delta: mean over seeds of the per-seed deltas (variant minus canonical).
        per_seed: the per-seed deltas, in the seed order given.
        se_seed: training-noise standard error ``s_d / sqrt(k)``; NaN with one seed.
        se_test: test-set sampling standard error of ``delta``.
        se: combined standard error ``sqrt(se_seed^2 + se_test^2)`` (``se_test`` alone with one seed).
        p_value: two-sided p-value of ``delta = 0`` (Behrens-Fisher, :mod:`crmlab.search.ablation._fiducial`).
        n_seeds: number of paired seeds ``k``.
    """

    delta: float
    per_seed: tuple[float, ...]
    se_seed: float
    se_test: float
    se: float
    p_value: float
    n_seeds: int

    @property
    def training_noise_estimated(self) -> bool:
        """False with a single seed: the interval then reflects test-set sampling only."""
        return self.n_seeds > 1

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided interval ``(low, high)`` of ``delta`` at confidence ``level`` (0 < level < 1): the deltas that a
        test at level ``1 - level`` would not reject."""
        return self.intervals([level])[0]

    def intervals(self, levels: Sequence[float]) -> list[tuple[float, float]]:
        """:meth:`interval` at each of ``levels`` (computed together)."""
        if not all(0 < level < 1 for level in levels):
            raise ValueError(f"level must be in (0, 1), got {list(levels)}")
        if not self.se > 0:
            return [(self.delta, self.delta)] * len(levels)
        half = critical_value(1 - np.asarray(levels, dtype=np.float64), self._var_seed, self.se_test**2, self.n_seeds)
        return [(self.delta - float(h), self.delta + float(h)) for h in half]

    @property
    def _var_seed(self) -> float:
        return self.se_seed**2 if self.training_noise_estimated else 0.0


def _stack(predictions: Sequence[np.ndarray], n: int) -> np.ndarray:
    a = np.stack([np.asarray(x, dtype=np.float64) for x in predictions])
    if a.shape[1] != n:
        raise ValueError(f"predictions have {a.shape[1]} values, the test set has {n}")
    return a


def _bootstrap_variance(
    fn: Metric, y: np.ndarray, c: np.ndarray, v: np.ndarray, replicates: int, seed: int, chunk: int
) -> float:
    """Variance of the seed-averaged delta over paired resamples of the test sequences."""
    rng = np.random.default_rng(seed)
    boot = np.empty(replicates)
    for start in range(0, replicates, chunk):
        b = min(chunk, replicates - start)
        idx = rng.integers(0, len(y), size=(b, len(y)))
        yb = y[idx][:, None, :]
        boot[start : start + b] = (fn(yb, v[:, idx].transpose(1, 0, 2)) - fn(yb, c[:, idx].transpose(1, 0, 2))).mean(1)
    return float(np.var(boot, ddof=1))


def seed_delta(
    measured: np.ndarray,
    canonical: Sequence[np.ndarray],
    variant: Sequence[np.ndarray],
    metric: str = "pearson_r",
    test_variance: TestVariance = "bootstrap",
    replicates: int = 2000,
    seed: int = 0,
    chunk: int = 250,
) -> SeedDelta:
    """Delta of ``variant`` vs ``canonical`` on ``measured``, seeds as replicates (see the module docstring).

    Args:
        measured: measured values of the test sequences, ``(n,)``.
        canonical: canonical predictions, one ``(n,)`` array per seed (or a ``(k, n)`` array).
        variant: the variant's predictions, one ``(n,)`` array per seed, paired with ``canonical`` by position.
        metric: ``pearson_r``, ``spearman_rho`` or ``r2``.
        test_variance: ``bootstrap`` (paired bootstrap of the test sequences) or ``influence`` (its analytic
            delta-method equivalent, deterministic and fast; Pearson r and R^2 only).
        replicates: bootstrap resamples of the test sequences.
        seed: seed of the resampling.
        chunk: replicates computed at once (memory: ``chunk * n * seeds`` floats, a few times over).

    Returns:
        The :class:`SeedDelta`.
    """
    if len(canonical) != len(variant) or len(canonical) == 0:
        raise ValueError(f"need the same non-zero number of seeds, got {len(canonical)} and {len(variant)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if test_variance == "influence" and metric not in _INFLUENCE:
        raise ValueError(f"test_variance='influence' supports {', '.join(_INFLUENCE)}, not {metric!r}")
    fn = METRICS[metric]
    y = np.asarray(measured, dtype=np.float64)
    c, v = _stack(canonical, len(y)), _stack(variant, len(y))
    n = len(y)
    per_seed = fn(y[None], v) - fn(y[None], c)
    if test_variance == "influence":
        influence = (_INFLUENCE[metric](y, v) - _INFLUENCE[metric](y, c)).mean(axis=0)
        var_test = float((influence * influence).sum() / n**2)
    else:
        var_test = _bootstrap_variance(fn, y, c, v, replicates, seed, chunk)
    return seed_delta_from(per_seed.tolist(), float(np.sqrt(var_test)))


def seed_delta_from(per_seed: Sequence[float], se_test: float) -> SeedDelta:
    """The :class:`SeedDelta` of given per-seed deltas and test-set standard error (what :func:`seed_delta` computes
    from predictions; for simulations and planning).

    Args:
        per_seed: the per-seed deltas, ``(k,)``.
        se_test: the test-set sampling standard error of their mean.
    """
    d = np.asarray(per_seed, dtype=np.float64)
    k = len(d)
    delta = float(d.mean())
    var_seed = float(d.var(ddof=1)) / k if k > 1 else float("nan")
    var_test = float(se_test) ** 2
    var = var_test + (var_seed if k > 1 else 0.0)
    if var > 0:
        p = float(tail_probability(abs(delta), var_seed if k > 1 else 0.0, var_test, k))
    elif var == 0:
        p = 1.0 if delta == 0 else 0.0
    else:
        p = float("nan")
    return SeedDelta(
        delta=delta,
        per_seed=tuple(float(x) for x in d),
        se_seed=float(np.sqrt(var_seed)),
        se_test=float(np.sqrt(var_test)),
        se=float(np.sqrt(var)),
        p_value=p,
        n_seeds=k,
    )


def format_p(p: float) -> str:
    """A p-value for print: ``< 0.001`` below 0.001, otherwise 3 significant digits (``0.0420``, ``1.00``)."""
    if np.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:#.3g}"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p)):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Per-hypothesis two-sided significance levels of Holm's step-down procedure at family level ``alpha``.

    Sorting the ``m`` p-values ascending, Holm rejects the hypotheses of rank ``j = 1, 2, ...`` while
    ``p_(j) <= alpha / (m - j + 1)``. A rejected hypothesis of rank ``j`` gets the level ``alpha / (m - j + 1)``;
    after ``r`` rejections every remaining hypothesis gets ``alpha / (m - r)``, which its p-value exceeds. So the
    ``1 - level`` interval of a hypothesis excludes 0 exactly when Holm rejects it (same order as given; a NaN
    p-value is never rejected).
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    levels = np.empty(m)
    order = np.argsort(p)
    rejected = 0
    for rank, i in enumerate(order):
        if p[i] <= alpha / (m - rank):
            levels[i] = alpha / (m - rank)
            rejected += 1
        else:
            levels[order[rank:]] = alpha / (m - rejected)
            break
    return levels.tolist()


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
