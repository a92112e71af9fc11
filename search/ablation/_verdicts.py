"""Verdicts of an ablation (helps / hurts / equivalent / undecided) and the stopping rule of adaptive seeds.

A verdict is one word per variant and test set, read from the variant's
:class:`~crmlab.search.ablation._stats.SeedDelta` on
the primary metric (larger is better) against a smallest effect of interest ``min_effect``:

* ``equivalent``: two one-sided tests (Schuirmann 1987) at level ``a``, i.e. the ``1 - 2a`` interval lies strictly
  inside ``(-min_effect, +min_effect)``. It takes precedence: an effect that is significant but whose whole
  interval is negligible is labelled ``equivalent``, not ``helps``/``hurts``.
* ``helps`` / ``hurts``: the ``1 - a`` interval lies above / below 0.
* ``undecided``: anything else, and always when training noise is not estimated (a single seed).

``a`` is the variant's Holm-adjusted level (Holm 1979, :func:`~crmlab.search.ablation._stats.holm_levels`) among the
variants of the same test set at family level ``alpha``, so a ``helps``/``hurts`` verdict is exactly a Holm rejection; a
single-seed variant enters Holm with p = 1 (it counts in the family but cannot be rejected). With a handful of seeds the
t quantiles are large (``t_{0.95, 2} = 2.92``) and the between-seed spread of a delta is often 0.005-0.05 in Pearson r,
so ``equivalent`` at a small ``min_effect`` (0.005-0.01) is rarely reachable: most null results are ``undecided``, which
is the honest answer (in the simulated studies of ``tests/search/ablation/test_calibration.py``, ``min_effect = 0.01``
and 5 seeds, a variant identical in distribution to canonical is ``equivalent`` in about 5% of studies at a seed sd of r
of 0.005 and almost never at 0.02 or more).

Adaptive seeds add one seed per round to undecided variants, from ``initial`` to ``max_seeds``. Looking after every
round inflates false positives, so each look gets its own share of ``alpha`` from a Lan-DeMets spending function of
O'Brien-Fleming type (Lan & DeMets 1983), ``alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))`` with information
fraction ``t = n_seeds / max_seeds``: the look with ``k`` seeds uses the increment ``alpha(k / max) - alpha((k - 1) /
max)`` (the first look ``alpha(initial / max)``) as its nominal level. The increments add up to ``alpha``, so the
union bound over looks and Holm over variants keep the family-wise error at most ``alpha`` without assuming how
the looks are correlated (conservative). O'Brien-Fleming spends little early and most late (3 to 8 seeds at
``alpha = 0.05``: 0.0014 at the first look, 0.0139 at the last): early stops need large effects, and the late looks,
where most variants end, keep the largest levels. Variants with different seed
counts are combined by weighted Holm: each p-value is divided by its look's share ``a_i / alpha`` before the
step-down, and the resulting level is scaled back by the same share.

One p-value story: the p shown beside a verdict is the one it was read from, :attr:`Decision.p`, the Holm-adjusted
p-value of the same (weighted, for adaptive seeds) step-down (:func:`weighted_holm`). ``helps`` / ``hurts`` happen
exactly when it is at most ``alpha``; ``equivalent`` may come with any p.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from crmlab.search.ablation._stats import SeedDelta, holm, holm_levels

__all__ = [
    "VERDICTS",
    "Decision",
    "Look",
    "decide",
    "decide_look",
    "look_alpha",
    "look_shares",
    "verdict",
    "weighted_holm",
]

VERDICTS = ("helps", "hurts", "equivalent", "undecided")
"""The possible verdicts."""


@dataclass(frozen=True)
class Decision:
    """A variant's verdict on one test set with the level and intervals it was read from.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        alpha: the two-sided level used (Holm-adjusted, and the look's share of the family level when adaptive).
        interval: the ``1 - alpha`` interval of the delta (``helps`` / ``hurts``).
        equivalence_interval: the ``1 - 2 alpha`` interval (``equivalent``).
        p: the Holm-adjusted p-value of the step-down the verdict came from (weighted by each look's share for
            adaptive seeds; :func:`weighted_holm`): ``helps`` / ``hurts`` exactly when ``p <= `` the family level.
            NaN for a decision made alone (:func:`verdict`).
    """

    verdict: str
    alpha: float
    interval: tuple[float, float]
    equivalence_interval: tuple[float, float]
    p: float = float("nan")


def verdict(estimate: SeedDelta, alpha: float, min_effect: float) -> Decision:
    """The verdict of one estimate at two-sided level ``alpha`` (already adjusted) against ``+-min_effect``."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0, got {min_effect}")
    (low, high), (eq_low, eq_high) = estimate.intervals([1 - alpha, 1 - 2 * alpha])
    if not estimate.training_noise_estimated or not np.isfinite(estimate.delta):
        word = "undecided"
    elif -min_effect < eq_low and eq_high < min_effect:
        word = "equivalent"
    elif low > 0:
        word = "helps"
    elif high < 0:
        word = "hurts"
    else:
        word = "undecided"
    return Decision(word, alpha, (low, high), (eq_low, eq_high))


def _tested_p(estimate: SeedDelta) -> float:
    """The p-value a step-down tests: 1 when training noise is not estimated (one seed: nothing to reject)."""
    return estimate.p_value if estimate.training_noise_estimated else 1.0


def weighted_holm(p_values: Sequence[float], shares: Sequence[float]) -> list[float]:
    """Adjusted p-values of weighted Holm (same order as given): Holm's over ``p_i / shares[i]``, at most 1.

    With every share 1 this is plain Holm (:func:`~crmlab.search.ablation._stats.holm`). Hypothesis ``i`` is
    rejected at family level ``alpha`` exactly when its adjusted p-value is at most ``alpha``, as in
    :func:`decide` and :func:`decide_look`.
    """
    return holm([min(1.0, p / s) for p, s in zip(p_values, shares, strict=True)])


def _decisions(
    estimates: Mapping[str, SeedDelta], shares: Sequence[float], alpha: float, min_effect: float
) -> dict[str, Decision]:
    """Weighted Holm at family ``alpha``: hypothesis ``i`` is tested at its Holm level times ``shares[i]``."""
    names = list(estimates)
    p = [_tested_p(estimates[n]) / s for n, s in zip(names, shares, strict=True)]
    levels = holm_levels(p, alpha)
    adjusted = weighted_holm([_tested_p(estimates[n]) for n in names], shares)
    return {
        n: dataclasses.replace(verdict(estimates[n], level * s, min_effect), p=q)
        for n, level, s, q in zip(names, levels, shares, adjusted, strict=True)
    }


def decide(estimates: Mapping[str, SeedDelta], alpha: float = 0.05, *, min_effect: float) -> dict[str, Decision]:
    """Verdicts of the variants of one test set (fixed seeds), Holm-adjusted at family level ``alpha``.

    Args:
        estimates: variant name -> its delta vs canonical on the primary metric.
        alpha: family-wise error rate over these variants.
        min_effect: smallest delta of interest (in the metric's units), > 0 to allow ``equivalent``.

    Returns:
        Variant name -> :class:`Decision`, in the order given.
    """
    return _decisions(estimates, [1.0] * len(estimates), alpha, min_effect)


def look_alpha(alpha: float, n_seeds: int, initial: int, max_seeds: int) -> float:
    """The nominal two-sided level of the look at ``n_seeds`` seeds (O'Brien-Fleming-type alpha spending).

    Args:
        alpha: family-wise level spent over all looks.
        n_seeds: seeds at this look, ``initial <= n_seeds <= max_seeds``.
        initial: seeds at the first look.
        max_seeds: seeds at the last look.

    Returns:
        ``alpha(n_seeds / max_seeds) - alpha((n_seeds - 1) / max_seeds)``, or ``alpha(initial / max_seeds)`` at the
        first look; the values over all looks add up to ``alpha``.
    """
    if not 1 <= initial <= n_seeds <= max_seeds:
        raise ValueError(f"need 1 <= initial <= n_seeds <= max_seeds, got {initial}, {n_seeds}, {max_seeds}")
    z = -special.ndtri(alpha / 2)

    def spent(k: int) -> float:
        return float(2 * special.ndtr(-z / np.sqrt(k / max_seeds))) if k >= initial else 0.0

    return spent(n_seeds) - spent(n_seeds - 1)


def look_shares(estimates: Mapping[str, SeedDelta], alpha: float, initial: int, max_seeds: int) -> list[float]:
    """Each estimate's share of ``alpha`` at its own look, ``look_alpha(alpha, n_seeds, ...) / alpha`` (same order):
    the weights of weighted Holm under adaptive seeds."""
    return [look_alpha(alpha, e.n_seeds, initial, max_seeds) / alpha for e in estimates.values()]


@dataclass(frozen=True)
class Look:
    """The outcome of one look of adaptive seeds.

    Attributes:
        decisions: variant name -> :class:`Decision` at this look.
        more_seeds: the variants that are undecided and below ``max_seeds``: they get another seed.
    """

    decisions: dict[str, Decision]
    more_seeds: tuple[str, ...]


def decide_look(
    estimates: Mapping[str, SeedDelta],
    alpha: float = 0.05,
    *,
    min_effect: float,
    initial: int,
    max_seeds: int,
) -> Look:
    """Verdicts at this look of adaptive seeds and the variants that need another seed.

    Each variant is tested at its own look's level (:func:`look_alpha` at its ``n_seeds``), Holm-weighted across
    the variants of the test set. Pass every variant of the test set at every look, the stopped ones with their
    last estimate; a stopped variant that a later look turns undecided (Holm's ranks moved) is listed in
    ``more_seeds`` again.

    Args:
        estimates: variant name -> its current delta vs canonical on the primary metric.
        alpha: family-wise error rate over the variants and all looks.
        min_effect: smallest delta of interest.
        initial: seeds of every variant at the first look.
        max_seeds: the most seeds a variant gets.

    Returns:
        The :class:`Look`.
    """
    shares = look_shares(estimates, alpha, initial, max_seeds)
    decisions = _decisions(estimates, shares, alpha, min_effect)
    more = tuple(n for n, d in decisions.items() if d.verdict == "undecided" and estimates[n].n_seeds < max_seeds)
    return Look(decisions, more)
