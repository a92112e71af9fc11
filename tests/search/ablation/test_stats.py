"""Ablation statistics and verdicts on known inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as sps

from crmlab.search.ablation._fiducial import critical_value, tail_probability
from crmlab.search.ablation._stats import SeedDelta, format_p, holm, holm_levels, mean_sd, seed_delta, seed_delta_from
from crmlab.search.ablation._verdicts import decide, decide_look, look_alpha, look_shares, verdict, weighted_holm


def _estimate(delta: float, se: float, n_seeds: int = 5) -> SeedDelta:
    """A SeedDelta with the given mean and standard error, a quarter of its variance from training noise."""
    offsets = np.linspace(-1.0, 1.0, n_seeds)
    per_seed = delta + offsets / offsets.std(ddof=1) * (se / 2) * math.sqrt(n_seeds)
    return seed_delta_from(per_seed.tolist(), se * math.sqrt(3) / 2)


def _models(rng: np.random.Generator, n: int, noise: list[float]) -> list[np.ndarray]:
    y = rng.normal(size=n)
    return [y, *[y + s * rng.normal(size=n) for s in noise]]


def test_holm_matches_the_textbook_example() -> None:
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_holm_levels_reject_exactly_what_holm_rejects() -> None:
    # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: two rejections, the rest at 0.05/2
    assert holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 8)) ** 2
        levels = holm_levels(p, 0.05)
        assert [pi <= a for pi, a in zip(p, levels, strict=True)] == [q <= 0.05 for q in holm(p)]


def test_interval_at_the_holm_level_excludes_zero_exactly_when_holm_rejects() -> None:
    estimates = [_estimate(d, 0.01) for d in (0.035, 0.031, 0.023, 0.002)]
    levels = holm_levels([e.p_value for e in estimates], 0.05)
    rejected = [q <= 0.05 for q in holm([e.p_value for e in estimates])]
    assert rejected == [True, True, False, False]
    for e, a, r in zip(estimates, levels, rejected, strict=True):
        low, high = e.interval(1 - a)
        assert (low > 0 or high < 0) == r


def test_format_p_never_prints_a_tiny_exact_number() -> None:
    assert format_p(1e-12) == "< 0.001"
    assert format_p(0.00099) == "< 0.001"
    assert format_p(0.001) == "0.00100"
    assert format_p(0.0123456) == "0.0123"
    assert format_p(0.05) == "0.0500"
    assert format_p(1.0) == "1.00"
    assert format_p(float("nan")) == "n/a"


def test_identical_predictions_give_zero_delta_and_p_one() -> None:
    rng = np.random.default_rng(0)
    y, *p = _models(rng, 300, [1.0, 1.0])
    for test_variance in ("bootstrap", "influence"):
        d = seed_delta(y, p, p, test_variance=test_variance, replicates=200)
        assert d.delta == 0 and d.se == 0 and d.p_value == 1.0 and d.interval(0.99) == (0.0, 0.0)


def test_the_estimate_is_the_mean_of_the_per_seed_deltas_with_a_t_interval() -> None:
    rng = np.random.default_rng(1)
    y, *c = _models(rng, 2000, [0.5, 0.6, 0.55])
    v = [y + s * rng.normal(size=2000) for s in (2.0, 1.8, 2.2)]
    d = seed_delta(y, c, v, replicates=500)
    per_seed = [sps.pearsonr(y, b)[0] - sps.pearsonr(y, a)[0] for a, b in zip(c, v, strict=True)]
    assert d.per_seed == pytest.approx(per_seed, abs=1e-12)
    assert d.delta == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert d.n_seeds == 3 and d.training_noise_estimated
    assert d.se_seed == pytest.approx(np.std(per_seed, ddof=1) / math.sqrt(3))
    assert d.se == pytest.approx(math.hypot(d.se_seed, d.se_test))
    assert d.p_value == pytest.approx(float(tail_probability(abs(d.delta), d.se_seed**2, d.se_test**2, 3)))
    # between the normal (test-set sampling only) and Student's t with k - 1 = 2 degrees of freedom on se
    assert 2 * sps.norm.sf(abs(d.delta) / d.se) < d.p_value < 2 * sps.t.sf(abs(d.delta) / d.se, 2)
    low, high = d.interval(0.9)
    assert high - d.delta == pytest.approx(d.delta - low)
    assert high - d.delta == pytest.approx(float(critical_value(0.1, d.se_seed**2, d.se_test**2, 3)))
    assert sps.norm.ppf(0.95) * d.se < high - d.delta < sps.t.ppf(0.95, 2) * d.se
    assert d.interval(0.95)[1] < 0 and d.p_value < 0.05
    with pytest.raises(ValueError, match="level"):
        d.interval(1.0)


@pytest.mark.parametrize("metric", ["pearson_r", "r2"])
def test_the_influence_variance_agrees_with_the_paired_bootstrap(metric: str) -> None:
    rng = np.random.default_rng(2)
    y, *c = _models(rng, 3000, [0.8, 0.9])
    v = [a + 0.4 * rng.normal(size=3000) for a in c]
    boot = seed_delta(y, c, v, metric=metric, replicates=2000)
    analytic = seed_delta(y, c, v, metric=metric, test_variance="influence")
    assert boot.delta == analytic.delta and boot.se_seed == analytic.se_seed
    assert analytic.se_test == pytest.approx(boot.se_test, rel=0.1)


def test_the_paired_bootstrap_of_spearman_rho_runs() -> None:
    rng = np.random.default_rng(3)
    y, *c = _models(rng, 400, [1.0, 1.0])
    v = [a + 0.5 * rng.normal(size=400) for a in c]
    d = seed_delta(y, c, v, metric="spearman_rho", replicates=200)
    assert d.delta < 0 and 0 < d.se_test < 0.05
    with pytest.raises(ValueError, match="influence"):
        seed_delta(y, c, v, metric="spearman_rho", test_variance="influence")


def test_seed_to_seed_variation_widens_the_interval() -> None:
    # Seed 0 of the variant is much better than canonical, seed 1 much worse: the interval must span both.
    rng = np.random.default_rng(3)
    y, *c = _models(rng, 3000, [1.0, 1.0])
    v = [y + 0.5 * rng.normal(size=3000), y + 2.0 * rng.normal(size=3000)]
    d = seed_delta(y, c, v, replicates=500)
    low, high = d.interval(0.95)
    assert low < min(d.per_seed) and high > max(d.per_seed)
    assert d.se_seed > 5 * d.se_test and d.p_value > 0.05


def test_a_single_seed_says_training_noise_is_not_estimated() -> None:
    rng = np.random.default_rng(4)
    y, c, v = _models(rng, 1000, [1.0, 0.5])
    d = seed_delta(y, [c], [v], test_variance="influence")
    assert not d.training_noise_estimated and d.n_seeds == 1
    assert math.isnan(d.se_seed) and d.se == d.se_test
    assert d.p_value == pytest.approx(2 * sps.norm.sf(abs(d.delta) / d.se)) and d.p_value < 0.001
    assert verdict(d, 0.05, 0.01).verdict == "undecided"


def test_bad_inputs_are_rejected() -> None:
    y = np.arange(10.0)
    with pytest.raises(ValueError, match="same non-zero number of seeds"):
        seed_delta(y, [y], [y, y])
    with pytest.raises(ValueError, match="unknown metric"):
        seed_delta(y, [y], [y], metric="mse")
    with pytest.raises(ValueError, match="9 values"):
        seed_delta(y, [y[:9]], [y[:9]])


@pytest.mark.parametrize(
    ("delta", "se", "word"),
    [
        (0.05, 0.01, "helps"),
        (-0.05, 0.01, "hurts"),
        (0.001, 0.002, "equivalent"),
        (0.005, 0.001, "equivalent"),  # significant but negligible: equivalence takes precedence
        (0.0, 0.02, "undecided"),
        (0.009, 0.003, "undecided"),  # neither clearly non-zero at this level nor inside the margin
    ],
)
def test_verdicts(delta: float, se: float, word: str) -> None:
    d = verdict(_estimate(delta, se), 0.01, 0.01)
    assert d.verdict == word
    assert d.alpha == 0.01 and d.interval == _estimate(delta, se).interval(0.99)
    assert d.equivalence_interval == _estimate(delta, se).interval(0.98)


def test_decide_uses_holm_levels_and_ignores_single_seed_variants() -> None:
    estimates = {"a": _estimate(0.035, 0.01), "b": _estimate(0.023, 0.01), "c": _estimate(-0.004, 0.002)}
    decisions = decide(estimates, 0.05, min_effect=0.01)
    levels = holm_levels([e.p_value for e in estimates.values()], 0.05)
    assert [d.alpha for d in decisions.values()] == pytest.approx(levels)
    assert [d.verdict for d in decisions.values()] == ["helps", "undecided", "equivalent"]
    single = seed_delta_from([0.5], 0.001)
    with_single = decide({**estimates, "single": single}, 0.05, min_effect=0.01)
    assert with_single["single"].verdict == "undecided"
    assert with_single["a"].alpha == pytest.approx(0.05 / 4)  # it counts in the family, ranked last


def test_look_alpha_spends_alpha_over_the_looks() -> None:
    spent = [look_alpha(0.05, k, 3, 8) for k in range(3, 9)]
    assert sum(spent) == pytest.approx(0.05)
    assert spent == sorted(spent) and spent[0] < 0.002 and spent[-1] > 0.01
    assert look_alpha(0.05, 5, 5, 5) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="initial"):
        look_alpha(0.05, 2, 3, 8)


def test_decide_look_tests_each_variant_at_its_look_and_asks_for_seeds() -> None:
    estimates = {
        "big": _estimate(0.4, 0.01, n_seeds=3),
        "none": _estimate(0.0, 0.02, n_seeds=3),
        "small": _estimate(0.03, 0.01, n_seeds=4),
        "done": _estimate(0.0, 0.03, n_seeds=8),
    }
    look = decide_look(estimates, 0.05, min_effect=0.01, initial=3, max_seeds=8)
    assert look.decisions["big"].verdict == "helps"
    assert look.more_seeds == ("none", "small")
    assert look.decisions["done"].verdict == "undecided"
    # Holm's first rank gets alpha / m, scaled by the look's share of alpha
    assert look.decisions["big"].alpha == pytest.approx(look_alpha(0.05, 3, 3, 8) / 4)
    same = {k: e for k, e in estimates.items() if e.n_seeds == 3}
    fixed = decide(same, look_alpha(0.05, 3, 3, 8), min_effect=0.01)
    looked = decide_look(same, 0.05, min_effect=0.01, initial=3, max_seeds=8).decisions
    # the same verdicts, levels and intervals; p is adjusted against the family's alpha, not the look's share of it
    assert {k: dataclasses.replace(d, p=fixed[k].p) for k, d in looked.items()} == fixed


def test_the_p_beside_a_verdict_is_the_one_it_was_read_from() -> None:
    """Weighted Holm's adjusted p is at most alpha exactly when the verdict is helps / hurts (one p-value story)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        estimates = {
            f"v{i}": _estimate(float(rng.normal(0, 0.02)), float(rng.uniform(0.003, 0.02)), n_seeds=int(n))
            for i, n in enumerate(rng.integers(3, 9, size=int(rng.integers(2, 6))))
        }
        for decisions, shares in (
            (decide(estimates, 0.05, min_effect=0.001).values(), [1.0] * len(estimates)),
            (
                decide_look(estimates, 0.05, min_effect=0.001, initial=3, max_seeds=8).decisions.values(),
                look_shares(estimates, 0.05, 3, 8),
            ),
        ):
            p = weighted_holm([e.p_value for e in estimates.values()], shares)
            for d, q in zip(decisions, p, strict=True):
                assert d.p == pytest.approx(q)
                if d.verdict in ("helps", "hurts"):
                    assert d.p <= 0.05 + 1e-12
                elif d.verdict == "undecided":
                    assert d.p > 0.05 - 1e-12
    assert weighted_holm([0.01, 0.04], [1.0, 1.0]) == pytest.approx(holm([0.01, 0.04]))
    assert weighted_holm([0.01, 0.5], [0.1, 1.0]) == pytest.approx([0.2, 0.5])  # 0.01 / 0.1 = 0.1, times 2


def test_mean_sd() -> None:
    assert mean_sd([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    assert mean_sd([0.5]) == (0.5, 0.0)
