"""Does an undecided verdict's *seeds to decide* figure decide its effect with the promised 80% power? Simulated.

For one undecided variant and test set of a finished ablation (its ``_studies/<name>-<key>/`` folder), take the
estimate the figure was computed from (per-seed deltas, test-set standard error, the verdict's level), and simulate
studies at the figure's seed count and one seed either side: per-seed deltas ``N(delta, seed_sd^2)`` plus one
test-set error shared by the seeds, scored through the product's own path (``seed_delta_from`` and ``verdict``).
Prints a table: seeds, the share of simulated studies that decide (helps / hurts with the estimate's sign), its 95%
half-width, and the power the planner computed::

    python bench/seeds_to_decide.py crmlab-runs/_studies/quickstart-48008603304ff1f2 no_transformer \\
        vaishnav_random_complex
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from crmlab.search.ablation._planning import POWER, detectable_effect, rejection_power, seeds_to_decide
from crmlab.search.ablation._stats import seed_delta_from
from crmlab.search.ablation._verdicts import verdict

__all__ = ["main"]


def _rows(path: Path, variant: str, test_set: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["variant"] == variant and r["test_set"] == test_set]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="a finished study's _studies/<name>-<key> folder")
    parser.add_argument("variant")
    parser.add_argument("test_set")
    parser.add_argument("--studies", type=int, default=4000, help="simulated studies per seed count")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    (row,) = _rows(args.study_dir / "verdicts.csv", args.variant, args.test_set)
    if row["verdict"] != "undecided" or not row["seeds_to_decide"]:
        parser.error(f"{args.variant} on {args.test_set} is {row['verdict']} with no seeds-to-decide figure")
    metric, level = row["metric"], float(row["level"])
    deltas = [float(r[f"delta_{metric}"]) for r in _rows(args.study_dir / "per_seed.csv", args.variant, args.test_set)]
    (comparison,) = _rows(args.study_dir / "comparison.csv", args.variant, args.test_set)
    se_test = float(comparison[f"delta_{metric}_se_test"])
    estimate = seed_delta_from(deltas, se_test)
    needed = seeds_to_decide(estimate, level)
    sd = float(np.std(deltas, ddof=1))
    wanted = "hurts" if estimate.delta < 0 else "helps"
    rng = np.random.default_rng(args.seed)
    detectable = detectable_effect(estimate, level)
    print(
        f"{args.variant} ({args.test_set}): delta {estimate.delta:+.4f} at {len(deltas)} seeds, seed sd {sd:.4f}, "
        f"test-set se {se_test:.4f}, level {level:g}; detectable ({POWER:.0%}) ±{detectable:.4f}; "
        f"seeds to decide {needed}"
    )
    print("| seeds | simulated decided | 95% ± | planner's power |\n|---:|---:|---:|---:|")
    for n in (needed - 1, needed, needed + 1):
        hits = 0
        for _ in range(args.studies):
            per_seed = estimate.delta + sd * rng.standard_normal(n) + se_test * rng.standard_normal()
            hits += verdict(seed_delta_from(per_seed.tolist(), se_test), level, 0.0).verdict == wanted
        share = hits / args.studies
        half = 1.96 * np.sqrt(share * (1 - share) / args.studies)
        print(f"| {n} | {share:.3f} | {half:.3f} | {rejection_power(estimate.delta, sd, se_test, n, level):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
