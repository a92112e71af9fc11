"""The Behrens-Fisher reference distribution of a delta: its limits, its inverse and its error rates at small levels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from crmlab.search.ablation._fiducial import critical_value, tail_probability


@pytest.mark.parametrize("n_seeds", [2, 3, 5, 12])
def test_it_is_student_t_without_test_set_noise_and_normal_without_seed_noise(n_seeds: int) -> None:
    h = np.array([0.5, 2.0, 10.0, 300.0])
    assert tail_probability(h, 1.0, 0.0, n_seeds) == pytest.approx(2 * sps.t.sf(h, n_seeds - 1), rel=1e-9)
    assert tail_probability(h[:3], 0.0, 1.0, n_seeds) == pytest.approx(2 * sps.norm.sf(h[:3]), rel=1e-9)
    assert tail_probability(h[:3], 5.0, 1.0, 1) == pytest.approx(2 * sps.norm.sf(h[:3]), rel=1e-9)  # one seed
    both, h = tail_probability(h[1:], 1.0, 1.0, n_seeds), h[1:]  # in the tails (beyond 1.4 se)
    se = np.sqrt(2.0)
    assert np.all(2 * sps.norm.sf(h / se) <= both) and np.all(both <= 2 * sps.t.sf(h / se, n_seeds - 1))


def test_the_critical_value_inverts_the_tail() -> None:
    levels = np.array([0.5, 0.05, 0.0056, 1e-3, 1e-5, 1e-8])
    for var_seed, var_test, n_seeds in [(1e-4, 1e-5, 2), (1e-4, 1e-4, 3), (1e-6, 1e-4, 5), (0.0, 1e-4, 4)]:
        h = critical_value(levels, var_seed, var_test, n_seeds)
        assert np.all(np.diff(h) > 0)
        assert tail_probability(h, var_seed, var_test, n_seeds) == pytest.approx(levels, rel=1e-8)
    assert critical_value(0.05, 0.0, 0.0, 3) == 0.0
    grid = critical_value(np.array([0.05, 0.01]), np.array([[1e-4], [4e-4]]), 1e-5, 4)
    assert grid.shape == (2, 2) and np.all(grid[1] > grid[0]) and np.all(grid[:, 1] > grid[:, 0])


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_error_rates_hold_at_the_small_levels_holm_and_looks_use(n_seeds: int) -> None:
    """Gaussian deltas with the test-set variance known: P(p <= a) / a at most 1 (up to simulation error), where the
    Welch-Satterthwaite t with the seed variance at its 90% bound reached 6.5-7.5 at a = 0.001 with 2 seeds."""
    rng = np.random.default_rng(n_seeds)
    draws = 60_000
    for seed_share in (0.3, 0.9, 0.99):
        sigma2 = seed_share * n_seeds  # per-seed variance; the delta's total variance is 1
        s2 = sigma2 * rng.chisquare(n_seeds - 1, draws) / (n_seeds - 1)
        delta = rng.standard_normal(draws)
        p = tail_probability(np.abs(delta), s2 / n_seeds, 1 - seed_share, n_seeds)
        for level in (0.05, 0.05 / 9, 0.001):
            rate = np.mean(p <= level)
            assert rate / level <= 1.3, (seed_share, level, rate)
