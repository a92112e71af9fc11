"""What would decide an undecided verdict: the smallest effect the study could detect, and the seeds an effect needs.

Both come from the power of the test a verdict reads (:mod:`crmlab.search.ablation._fiducial`): with ``k`` seeds, a
true delta ``effect``, a between-seed sd ``sigma`` of a per-seed delta and a test-set standard error ``se_test``, the
estimate is ``N(effect, sigma^2 / k + se_test^2)`` and its seed variance ``s^2 ~ sigma^2 chi^2_{k-1} / (k - 1)``,
independent of it; the test rejects when ``|delta| >= h(s^2)``, its critical value at the level. So

    power = E_{s^2}[ Phi((effect - h(s^2)) / se) + Phi((-effect - h(s^2)) / se) ],

the expectation taken over :data:`QUANTILES` quantile midpoints of ``chi^2_{k-1}``. ``sigma`` is the observed sd of
the per-seed deltas and ``se_test`` the observed test-set standard error (it does not shrink with more seeds, which
errs on the side of more seeds). The level is the one the verdict was tested at (:attr:`Decision.alpha`: its Holm
rank's level, times the look's share of alpha for adaptive seeds); with more seeds other variants may be rejected
and the level may rise, which again errs on the side of more seeds.

* :func:`detectable_effect`: the smallest ``|effect|`` that the study, at its seeds, detects with :data:`POWER`.
* :func:`seeds_to_decide`: the fewest seeds that detect an effect the size of the current estimate with
  :data:`POWER` (more than ``limit``: ``None``).

``tests/search/ablation/test_planning.py`` checks both by simulating studies through :func:`seed_delta_from` and
:func:`verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from crmlab.search.ablation._fiducial import critical_value
from crmlab.search.ablation._stats import SeedDelta
from crmlab.search.ablation._verdicts import Decision

__all__ = [
    "POWER",
    "QUANTILES",
    "SEEDS_LIMIT",
    "Plan",
    "detectable_effect",
    "plan",
    "rejection_power",
    "seeds_to_decide",
]

POWER = 0.8
"""The power the figures are stated at."""
QUANTILES = 64
"""Quantile midpoints of the seed variance's sampling distribution that the power averages over."""
SEEDS_LIMIT = 100
"""The most seeds :func:`seeds_to_decide` looks for; beyond it, the estimate is too close to 0 to chase."""


def _critical_values(seed_sd: float, se_test: float, n_seeds: int, level: float) -> np.ndarray:
    """The test's critical value at each quantile midpoint of the seed variance, ``(QUANTILES,)``."""
    u = (np.arange(QUANTILES) + 0.5) / QUANTILES
    w = special.chdtri(n_seeds - 1, u) / (n_seeds - 1)  # chi^2_{k-1} / (k - 1) at the midpoints
    return critical_value(level, seed_sd**2 * w / n_seeds, se_test**2, n_seeds)


def _power(effect: float, h: np.ndarray, se: float) -> float:
    if se == 0:
        return float(np.mean(abs(effect) >= h))
    return float(np.mean(special.ndtr((effect - h) / se) + special.ndtr((-effect - h) / se)))


def rejection_power(effect: float, seed_sd: float, se_test: float, n_seeds: int, level: float) -> float:
    """The probability that a study with ``n_seeds`` seeds rejects ``delta = 0`` at two-sided ``level``.

    Args:
        effect: the true delta.
        seed_sd: between-seed sd of a per-seed delta.
        se_test: test-set sampling standard error of the seed-averaged delta.
        n_seeds: seeds, at least 2.
        level: two-sided level in (0, 1).
    """
    if n_seeds < 2:
        raise ValueError(f"power needs at least 2 seeds, got {n_seeds}")
    h = _critical_values(seed_sd, se_test, n_seeds, level)
    return _power(effect, h, float(np.sqrt(seed_sd**2 / n_seeds + se_test**2)))


def _seed_sd(estimate: SeedDelta) -> float:
    return float(np.std(estimate.per_seed, ddof=1))


def detectable_effect(estimate: SeedDelta, level: float, power: float = POWER) -> float:
    """The smallest ``|delta|`` the study behind ``estimate`` detects with ``power`` at ``level`` (NaN with one seed).

    Args:
        estimate: the variant's delta, with its seeds, per-seed deltas and test-set standard error.
        level: the two-sided level its verdict was tested at.
        power: the power, in (0, 1).
    """
    k = estimate.n_seeds
    if k < 2 or not np.isfinite(estimate.delta):
        return float("nan")
    sd = _seed_sd(estimate)
    h = _critical_values(sd, estimate.se_test, k, level)
    se = float(np.sqrt(sd**2 / k + estimate.se_test**2))
    low, high = 0.0, float(h.max()) + 10 * se
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if _power(mid, h, se) >= power else (mid, high)
    return high


def seeds_to_decide(estimate: SeedDelta, level: float, power: float = POWER, limit: int = SEEDS_LIMIT) -> int | None:
    """The fewest seeds (at least the study's) that detect an effect the size of ``estimate.delta`` with ``power``
    at ``level``, with the observed seed sd and test-set standard error; ``None`` beyond ``limit`` or with one seed."""
    k = estimate.n_seeds
    if k < 2 or not np.isfinite(estimate.delta):
        return None
    sd, effect = _seed_sd(estimate), abs(estimate.delta)

    def enough(n: int) -> bool:
        return rejection_power(effect, sd, estimate.se_test, n, level) >= power

    if enough(k):
        return k
    low, high = k, k  # enough(low) is False; grow high until enough(high)
    while not enough(high):
        if high >= limit:
            return None
        low, high = high, min(limit, 2 * high)
    while high - low > 1:  # power grows with seeds: bisect
        mid = (low + high) // 2
        low, high = (mid, high) if not enough(mid) else (low, mid)
    return high


@dataclass(frozen=True)
class Plan:
    """What would decide an undecided verdict.

    Attributes:
        detectable: the smallest ``|delta|`` the study detects with :data:`POWER` at the verdict's level.
        seeds: the seeds that detect an effect the size of the estimate with :data:`POWER` (``None``: more than
            :data:`SEEDS_LIMIT`).
        level: the level both are computed at (the verdict's).
    """

    detectable: float
    seeds: int | None
    level: float


def plan(estimate: SeedDelta, decision: Decision) -> Plan | None:
    """The :class:`Plan` of an undecided verdict with at least two seeds, else ``None``."""
    if decision.verdict != "undecided" or not estimate.training_noise_estimated:
        return None
    return Plan(detectable_effect(estimate, decision.alpha), seeds_to_decide(estimate, decision.alpha), decision.alpha)
