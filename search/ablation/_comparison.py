"""The comparison of an ablation against canonical: per-variant, per-test-set deltas paired by seed, Holm-adjusted
p-values and verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmlab.search.ablation._planning import Plan, plan
from crmlab.search.ablation._seeds import plan_seeds, study_decisions, study_p_values, variance_method
from crmlab.search.ablation._stats import SeedDelta, mean_sd, seed_delta
from crmlab.search.ablation._verdicts import Decision

__all__ = ["CONTROL", "LABELS", "METRICS", "REFERENCE", "Row", "compare"]

REFERENCE = "canonical"
"""The reference variant of an ablation: the base spec and recipe, unpatched."""
CONTROL = "control"
"""The A/A control variant: canonical again, under other initialisation seeds (``controls: {replicate: true}``)."""
METRICS = ("pearson_r", "spearman_rho", "r2")
"""The metrics compared, in table order."""
LABELS = {"pearson_r": "Pearson r", "spearman_rho": "Spearman rho", "r2": "R2"}
"""Each metric's name in tables and text."""


@dataclass
class Row:
    """One variant on one test set: its metrics over seeds and its delta vs canonical.

    Attributes:
        variant: the variant's name.
        test_set: the test set's name.
        seeds: the seeds, in order (per-seed values follow this order).
        mean: mean over seeds per metric.
        sd: sample sd over seeds per metric.
        per_seed: the metric's value for each seed, per metric.
        delta: the paired delta vs canonical per metric (``None`` for canonical).
        p_holm: Holm-adjusted p-value per metric across the variants of the test set, weighted by look share for
            adaptive seeds: on the primary metric, the p the verdict was read from (``None`` for canonical).
        decision: the verdict on the study's primary metric (``None`` for canonical).
        plan: for an undecided verdict, the smallest effect the study could detect and the seeds an effect the size
            of the estimate needs (:mod:`crmlab.search.ablation._planning`); ``None`` otherwise.
    """

    variant: str
    test_set: str
    seeds: list[int]
    mean: dict[str, float]
    sd: dict[str, float]
    per_seed: dict[str, list[float]]
    delta: dict[str, SeedDelta | None]
    p_holm: dict[str, float | None]
    decision: Decision | None
    plan: Plan | None = None


def compare(
    ablation: Any,
    results: dict[tuple[str, int], Any],
    seeds: dict[str, list[int]] | None = None,
    replicates: int = 2000,
) -> list[Row]:
    """Rows for every variant x test set, with deltas paired by seed, Holm across variants, verdicts and, for the
    undecided, what would decide them.

    Pearson r and R^2 take their test-set variance from the delta method, Spearman rho from ``replicates`` paired
    bootstrap resamples of the test sequences (see :mod:`crmlab.search.ablation._stats`). Verdicts use the study's
    ``metric``, ``min_effect``, ``alpha`` and seed rule (:func:`crmlab.search.ablation._seeds.study_decisions`).

    Args:
        ablation: the loaded study.
        results: finished runs by ``(variant, seed)``.
        seeds: each variant's seeds (canonical's include all others'); default: the study's seed plan over
            ``results`` (:func:`crmlab.search.ablation._seeds.plan_seeds`).
        replicates: bootstrap resamples for Spearman rho.
    """
    doc = ablation.doc
    seeds = seeds if seeds is not None else plan_seeds(ablation, results).seeds
    rows = []
    for test_name, test in ablation.tests.items():
        group = []
        for v in ablation.variants:
            own = seeds[v.name]
            runs = [results[(v.name, s)] for s in own]
            canonical = [results[(REFERENCE, s)].predictions[test_name] for s in own]
            per_seed = {m: [float(r.test_metrics[test_name][m]) for r in runs] for m in METRICS}
            mean: dict[str, float] = {}
            sd: dict[str, float] = {}
            delta: dict[str, SeedDelta | None] = {}
            for m in METRICS:
                mean[m], sd[m] = mean_sd(per_seed[m])
                delta[m] = None
                if v.name != REFERENCE:
                    delta[m] = seed_delta(
                        test.values,
                        canonical,
                        [r.predictions[test_name] for r in runs],
                        metric=m,
                        test_variance=variance_method(m),
                        replicates=replicates,
                    )
            group.append(Row(v.name, test_name, own, mean, sd, per_seed, delta, dict.fromkeys(METRICS), None))
        tested = [r for r in group if r.variant != REFERENCE]
        for m in METRICS:  # the same step-down as the verdicts: weighted by look share for adaptive seeds
            adjusted = study_p_values(doc, {r.variant: r.delta[m] for r in tested})
            for r in tested:
                r.p_holm[m] = adjusted[r.variant]
        decisions, _ = study_decisions(doc, {r.variant: r.delta[doc.metric] for r in tested})
        for r in tested:
            r.decision = decisions[r.variant]
            r.plan = plan(r.delta[doc.metric], r.decision)
        rows.extend(group)
    return rows
