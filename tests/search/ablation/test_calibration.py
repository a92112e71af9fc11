"""Calibration of the ablation statistics on simulated studies with the structure of real per-seed predictions.

The measured values are the real test set named in ``tests/fixtures/calibration/structure.json`` (2,954 sequences);
per-seed predictions of a canonical model and a variant are simulated around them with a shared error component, a
model component, a seed-specific component and a seed effect on r (see the fixture). Each study is scored with the
product's own :func:`seed_delta` (``test_variance="influence"``, the analytic twin of the bootstrap, so that
thousands of studies run in seconds) and :func:`decide` / :func:`decide_look`.

Per seed sd of r (0.005, 0.02, 0.05), 800 A/A studies each (the rate of a 5% event is then resolved to about
+-1.5%), alpha = 0.05: false-positive rate (helps or hurts) and coverage of the true delta 0 by the interval, with
2, 3 and 5 seeds and with adaptive seeds (initial 3, max 8, O'Brien-Fleming-type spending; the interval is the
variant's last-look interval); and, with 5 seeds, the detection rate of a planted effect of 3 x the seed sd and the
coverage of that effect. Verdicts use ``min_effect = 0.01``. Measured (the fixture fitted from the quickstart's
per-seed predictions, generator seed 0; Behrens-Fisher intervals; about 37 s of CPU time in all):

    seed sd  seeds     FPR   coverage  equivalent | planted effect  detected  coverage
    0.005    2         0.5%  99.5%     0.5%       |
    0.005    3         1.2%  98.8%     0.8%       |
    0.005    5         1.9%  98.1%     5.2%       | -0.015          57.9%     97.2%
    0.005    adaptive  0.6%  99.4%     0.0%       |
    0.02     2         3.4%  96.6%     0.0%       |
    0.02     3         3.9%  96.1%     0.0%       |
    0.02     5         3.8%  96.2%     0.0%       | -0.060          91.8%     95.2%
    0.02     adaptive  2.2%  97.8%     0.0%       |
    0.05     2         5.1%  94.9%     0.0%       |
    0.05     3         5.6%  94.4%     0.1%       |
    0.05     5         4.4%  95.6%     0.0%       | -0.150          93.4%     94.6%
    0.05     adaptive  2.8%  97.2%     0.0%       |

Where training noise dominates (seed sd 0.05) the test is close to exact, so single-variant rates near 5% are
expected (the sd of a rate over 800 studies is 0.8%). The worst cells of the wider grid of ``bench/calibration.py``
(families of 3 and 9 variants, its own generative structure) run here too, with fewer studies.

Run with ``pytest -s`` to print them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from crmlab.search.ablation._stats import seed_delta
from crmlab.search.ablation._verdicts import VERDICTS, decide, decide_look

ROOT = Path(__file__).resolve().parents[3]
STRUCTURE = json.loads((ROOT / "tests/fixtures/calibration/structure.json").read_text())
STUDIES = 800
ALPHA = 0.05
INITIAL, MAX_SEEDS = 3, 8
MIN_EFFECT = 0.01
CHUNK = 100


def _measured() -> np.ndarray:
    """The measured values of the real test set, ``(n,)``."""
    return pd.read_csv(ROOT / STRUCTURE["test_set"], sep="\t", usecols=[STRUCTURE["measured_column"]]).to_numpy()[:, 0]


def _studies(
    y: np.ndarray, seed_sd: float, effect: float, n: int, seeds: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` studies: canonical and variant predictions, each ``(n, seeds, len(y))``; the variant is worse by
    ``effect`` in expected Pearson r."""
    z = (y - y.mean()) / y.std()
    r = STRUCTURE["pearson_r"]
    noise = 1 - r * r
    shared = (STRUCTURE["corr_canonical_variant_same_seed"] - r * r) / noise
    model = (STRUCTURE["corr_seeds_same_model"] - r * r) / noise - shared
    own = 1 - shared - model
    pairing = STRUCTURE["seed_effect_pairing"]
    g_c = rng.standard_normal((n, seeds, 1))
    g_v = pairing * g_c + np.sqrt(1 - pairing**2) * rng.standard_normal((n, seeds, 1))
    u = np.sqrt(shared) * rng.standard_normal((n, 1, len(y)))

    def model_predictions(alpha: np.ndarray) -> np.ndarray:
        err = u + np.sqrt(model) * rng.standard_normal((n, 1, len(y)))
        err = err + np.sqrt(own) * rng.standard_normal((n, seeds, len(y)))
        return alpha * z + np.sqrt(1 - alpha * alpha) * err

    return model_predictions(r + seed_sd * g_c), model_predictions(r - effect + seed_sd * g_v)


def _adaptive(y: np.ndarray, c: np.ndarray, v: np.ndarray) -> tuple[str, bool]:
    """One adaptive study: the final verdict and whether the last-look interval covers 0."""
    k = INITIAL
    while True:
        look = decide_look(
            {"v": seed_delta(y, c[:k], v[:k], test_variance="influence")},
            ALPHA,
            min_effect=MIN_EFFECT,
            initial=INITIAL,
            max_seeds=MAX_SEEDS,
        )
        if not look.more_seeds:
            d = look.decisions["v"]
            return d.verdict, d.interval[0] <= 0 <= d.interval[1]
        k += 1


@pytest.mark.parametrize("seed_sd", STRUCTURE["seed_sd_r"])
def test_false_positives_coverage_and_power(seed_sd: float) -> None:
    y = _measured()
    rng = np.random.default_rng(0)
    conditions = (2, 3, 5, "adaptive")
    verdicts = {k: dict.fromkeys(VERDICTS, 0) for k in conditions}
    cover = dict.fromkeys(conditions, 0)
    detected = planted_cover = 0
    effect = 3 * seed_sd
    for _ in range(STUDIES // CHUNK):
        cs, vs = _studies(y, seed_sd, 0.0, CHUNK, MAX_SEEDS, rng)
        for c, v in zip(cs, vs, strict=True):
            for k in (2, 3, 5):
                d = seed_delta(y, c[:k], v[:k], test_variance="influence")
                verdicts[k][decide({"v": d}, ALPHA, min_effect=MIN_EFFECT)["v"].verdict] += 1
                low, high = d.interval(1 - ALPHA)
                cover[k] += low <= 0 <= high
            word, covered = _adaptive(y, c, v)
            verdicts["adaptive"][word] += 1
            cover["adaptive"] += covered
        cs, vs = _studies(y, seed_sd, effect, CHUNK, 5, rng)
        for c, v in zip(cs, vs, strict=True):
            d = seed_delta(y, c, v, test_variance="influence")
            detected += decide({"v": d}, ALPHA, min_effect=MIN_EFFECT)["v"].verdict == "hurts"
            low, high = d.interval(1 - ALPHA)
            planted_cover += low <= -effect <= high
    fpr = {k: (verdicts[k]["helps"] + verdicts[k]["hurts"]) / STUDIES for k in conditions}
    for k in conditions:
        print(
            f"seed sd {seed_sd}, {k} seeds: FPR {fpr[k]:.1%}, coverage {cover[k] / STUDIES:.1%},"
            f" equivalent {verdicts[k]['equivalent'] / STUDIES:.1%}"
        )
    print(
        f"seed sd {seed_sd}, planted {-effect:+.3f}:"
        f" detected {detected / STUDIES:.1%}, coverage {planted_cover / STUDIES:.1%}"
    )
    for k in conditions:
        assert fpr[k] <= 0.06, k
        assert cover[k] / STUDIES >= 0.93, k
    assert detected / STUDIES > 0.5
    assert planted_cover / STUDIES >= 0.93


def _calibration_bench() -> ModuleType:
    """The bench script `bench/calibration.py`, imported as a module."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import calibration
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return calibration


@pytest.mark.parametrize("cell", range(2))
def test_the_worst_cells_of_the_calibration_grid_are_not_above_the_level(cell: int) -> None:
    """The conditions and designs with the highest family-wise rates in ``bench/results/calibration.md`` (families
    of 9 and 3 null variants, seed sd of r 0.10, 2-3 seeds and adaptive 2-6), on fresh studies of the bench's own
    generative structure, scored through the product's path (``seed_delta``, ``study_decisions``, ``plan_seeds``).

    Where training noise dominates, the test is exact and Holm over 9 such variants has a family-wise rate near 5%,
    so 400 studies (150 adaptive; sd of a rate about 1.1%) cannot hold every cell to 6%: the check is that no rate is
    significantly above alpha (one-sided binomial test at 5%; a method at 10%, like the Welch-Satterthwaite t at
    these levels, fails it). The grid holds every cell to 6% with 1,000 studies."""
    bench = _calibration_bench()
    condition, designs = bench.WORST[cell]
    fixed = [d for d in designs if not d.startswith("adaptive")]
    rows = bench.run_condition(bench.Condition(*condition), 400, 100 + cell, fixed)
    adaptive = [d for d in designs if d.startswith("adaptive")]
    rows += bench.run_condition(bench.Condition(*condition), 150, 200 + cell, adaptive) if adaptive else []
    for row in rows:
        print(f"{condition} {row['design']}: family-wise {row['family_rate']:.1%} ({row['studies']} studies)")
        errors = round(row["family_rate"] * row["studies"])
        assert binomtest(errors, row["studies"], ALPHA, alternative="greater").pvalue > 0.05, row
