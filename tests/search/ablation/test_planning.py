"""What would decide an undecided verdict: the power figures checked against simulated studies."""

from __future__ import annotations

import numpy as np
import pytest

from crmlab.search.ablation._planning import detectable_effect, plan, rejection_power, seeds_to_decide
from crmlab.search.ablation._stats import seed_delta_from
from crmlab.search.ablation._verdicts import verdict

# the quickstart's no_transformer on the random-complex test set: per-seed deltas and test-set standard error
QUICKSTART = seed_delta_from([-0.034, -0.011, -0.029], 0.004)
LEVEL = 0.025
STUDIES = 1500


def _decided(effect: float, seed_sd: float, se_test: float, n_seeds: int, rng: np.random.Generator) -> float:
    """The share of simulated studies whose verdict at ``LEVEL`` is hurts: per-seed deltas ``N(effect, seed_sd^2)``
    plus one test-set error shared by the seeds, scored by the product's ``seed_delta_from`` and ``verdict``."""
    hits = 0
    for _ in range(STUDIES):
        per_seed = effect + seed_sd * rng.standard_normal(n_seeds) + se_test * rng.standard_normal()
        hits += verdict(seed_delta_from(per_seed.tolist(), se_test), LEVEL, 0.0).verdict == "hurts"
    return hits / STUDIES


def test_the_seeds_to_decide_decide_the_effect_with_80_percent_power() -> None:
    seeds = seeds_to_decide(QUICKSTART, LEVEL)
    assert seeds is not None and seeds > QUICKSTART.n_seeds
    sd = float(np.std(QUICKSTART.per_seed, ddof=1))
    rng = np.random.default_rng(0)
    enough = _decided(QUICKSTART.delta, sd, QUICKSTART.se_test, seeds, rng)
    fewer = _decided(QUICKSTART.delta, sd, QUICKSTART.se_test, seeds - 1, rng)
    assert enough >= 0.8 - 0.03, (seeds, enough)
    assert fewer < 0.8, (seeds - 1, fewer)  # and one seed fewer does not
    assert rejection_power(QUICKSTART.delta, sd, QUICKSTART.se_test, seeds, LEVEL) == pytest.approx(enough, abs=0.03)


def test_the_detectable_effect_is_detected_with_80_percent_power() -> None:
    effect = detectable_effect(QUICKSTART, LEVEL)
    assert effect > abs(QUICKSTART.delta)  # the estimate itself was not detectable: it is undecided
    sd = float(np.std(QUICKSTART.per_seed, ddof=1))
    rate = _decided(-effect, sd, QUICKSTART.se_test, QUICKSTART.n_seeds, np.random.default_rng(1))
    assert rate == pytest.approx(0.8, abs=0.03)


def test_a_plan_is_made_for_undecided_verdicts_with_seeds_only() -> None:
    undecided = verdict(QUICKSTART, LEVEL, 0.01)
    assert undecided.verdict == "undecided"
    made = plan(QUICKSTART, undecided)
    assert made is not None and made.level == LEVEL and made.seeds == seeds_to_decide(QUICKSTART, LEVEL)
    clear = seed_delta_from([-0.06, -0.061, -0.059], 0.002)
    assert plan(clear, verdict(clear, LEVEL, 0.01)) is None  # hurts: nothing to plan
    single = seed_delta_from([-0.03], 0.004)
    assert plan(single, verdict(single, LEVEL, 0.01)) is None
    assert seeds_to_decide(seed_delta_from([0.0001, -0.0001, 0.0002], 0.004), LEVEL) is None  # beyond 100 seeds


def test_more_seeds_and_larger_effects_have_more_power() -> None:
    powers = [rejection_power(-0.02, 0.012, 0.004, n, LEVEL) for n in (2, 3, 5, 8, 13)]
    assert powers == sorted(powers) and powers[0] < 0.2 and powers[-1] > 0.9
    assert rejection_power(0.0, 0.012, 0.004, 5, LEVEL) <= LEVEL  # no effect: at most the level
    with pytest.raises(ValueError, match="2 seeds"):
        rejection_power(-0.02, 0.012, 0.004, 1, LEVEL)
