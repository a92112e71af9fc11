"""Ablation statistics on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from crmlab.search.stats import holm, mean_sd, paired_delta


def test_holm_matches_the_textbook_example() -> None:
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_identical_predictions_give_zero_delta_and_p_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    p = [y + rng.normal(size=300), y + rng.normal(size=300)]
    d = paired_delta(y, p, p, replicates=500)
    assert d.delta == 0 and d.ci_low == 0 and d.ci_high == 0 and d.p_value == 1.0


def test_a_clearly_worse_variant_is_significant_with_the_right_delta() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=2000)
    canonical = [y + 0.5 * rng.normal(size=2000) for _ in range(2)]
    variant = [y + 2.0 * rng.normal(size=2000) for _ in range(2)]
    d = paired_delta(y, canonical, variant, replicates=1000)
    expected = np.mean([sps.pearsonr(y, v)[0] - sps.pearsonr(y, c)[0] for c, v in zip(canonical, variant, strict=True)])
    assert d.delta == pytest.approx(expected, abs=1e-12)
    assert d.ci_low < d.delta < d.ci_high < 0
    assert d.p_value == pytest.approx(1 / 1001)


def test_bootstrap_interval_matches_the_analytic_standard_error() -> None:
    # Variant = canonical + independent noise: the CI width of delta r over 4000 sequences is a few hundredths.
    rng = np.random.default_rng(2)
    y = rng.normal(size=4000)
    c = y + rng.normal(size=4000)
    v = c + 0.3 * rng.normal(size=4000)
    d = paired_delta(y, [c], [v], replicates=2000)
    boot_se = (d.ci_high - d.ci_low) / (2 * 1.96)
    assert 0.001 < boot_se < 0.01
    assert d.ci_low < d.delta < d.ci_high


def test_seed_to_seed_variation_widens_the_interval() -> None:
    # Seed 0 of the variant is much better than canonical, seed 1 much worse: the mean delta is near 0 and the
    # interval must span both seeds' deltas instead of shrinking to test-set noise.
    rng = np.random.default_rng(3)
    y = rng.normal(size=3000)
    canonical = [y + 1.0 * rng.normal(size=3000), y + 1.0 * rng.normal(size=3000)]
    variant = [y + 0.5 * rng.normal(size=3000), y + 2.0 * rng.normal(size=3000)]
    d = paired_delta(y, canonical, variant, replicates=2000)
    per_seed = [sps.pearsonr(y, v)[0] - sps.pearsonr(y, c)[0] for c, v in zip(canonical, variant, strict=True)]
    assert d.ci_low <= min(per_seed) + 0.02 and d.ci_high >= max(per_seed) - 0.02
    assert d.p_value > 0.05


def test_mean_sd() -> None:
    assert mean_sd([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    assert mean_sd([0.5]) == (0.5, 0.0)
