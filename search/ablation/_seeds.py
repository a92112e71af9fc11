"""Which seeds an ablation trains: a fixed list, or adaptive seeds that add a seed to undecided variants per round.

``seeds: [0, 1, 2]`` trains every variant with those seeds. ``seeds: {initial: 3, max: 8}`` starts every variant
with seeds ``0 .. initial - 1``; after each round (a *look*) every variant still undecided on some test set gets
the next seed, and canonical gets it too as its pair, until every variant is decided or has ``max`` seeds.
``first: N`` numbers the adaptive seeds from ``N`` instead of 0 (``crmlab confirm`` keeps them off the seed a search
selected its trials on). The
looks spend the study's ``alpha`` by an O'Brien-Fleming-type function
(:func:`crmlab.search.ablation._verdicts.decide_look`),
so the family-wise error stays at ``alpha`` over all looks.

Runs are keyed by seed, so the plan is a pure function of the finished runs: :func:`plan_seeds` replays the looks
over whatever is finished and returns the runs the next look needs. Training an interrupted study again, ``crmlab
compare`` and ``crmlab explain`` all find the same seeds this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Discriminator, Field, SerializerFunctionWrapHandler, Tag, model_serializer, model_validator

from crmlab.runners.studyfile import Strict
from crmlab.search.ablation._stats import SeedDelta, seed_delta
from crmlab.search.ablation._verdicts import Decision, decide, decide_look, look_shares, weighted_holm

__all__ = [
    "AdaptiveSeeds",
    "SeedPlan",
    "SeedsField",
    "all_seeds",
    "plan_seeds",
    "seeds_text",
    "study_decisions",
    "study_p_values",
    "variance_method",
]


class AdaptiveSeeds(Strict):
    """``seeds: {initial: 3, max: 8}``: seeds ``0 .. initial - 1`` first, then one more per undecided variant and
    look, up to ``max`` seeds (seed numbers ``0 .. max - 1``); with ``first: N`` the numbers start at ``N``."""

    initial: int = Field(ge=2)
    """Seeds of every variant at the first look (at least 2: one seed cannot estimate training noise)."""
    max: int = Field(ge=2)
    """The most seeds a variant gets."""
    first: int = Field(default=0, ge=0)
    """The first seed number: seeds are ``first .. first + max - 1``."""

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveSeeds:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max}) must be at least initial ({self.initial})")
        return self

    @model_serializer(mode="wrap")
    def _without_default_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``first: 0`` out, so a study without it keeps the key it had before ``first`` existed."""
        data = handler(self)
        if data.get("first") == 0:
            del data["first"]
        return data

    def numbers(self, count: int) -> list[int]:
        """The first ``count`` seed numbers: ``first .. first + count - 1``."""
        return list(range(self.first, self.first + count))


def _seeds_kind(value: Any) -> str:
    return "<adaptive>" if isinstance(value, dict | AdaptiveSeeds) else "<list>"


SeedsField = Annotated[
    Annotated[Annotated[list[int], Field(min_length=1)], Tag("<list>")] | Annotated[AdaptiveSeeds, Tag("<adaptive>")],
    Discriminator(_seeds_kind),
]
"""The type of a study's ``seeds``: a list of seeds, or :class:`AdaptiveSeeds` (a mapping); errors name one kind."""


def all_seeds(seeds: Sequence[int] | AdaptiveSeeds) -> list[int]:
    """Every seed a study may train: the list, or ``first .. first + max - 1`` for adaptive seeds."""
    return seeds.numbers(seeds.max) if isinstance(seeds, AdaptiveSeeds) else list(seeds)


def seeds_text(seeds: Sequence[int] | AdaptiveSeeds) -> str:
    """The seed rule in a few words: ``seeds 0, 1, 2`` or ``adaptive seeds (3 to start, at most 8)`` (``..., from
    seed 1`` when they do not start at 0)."""
    if isinstance(seeds, AdaptiveSeeds):
        start = f", from seed {seeds.first}" if seeds.first else ""
        return f"adaptive seeds ({seeds.initial} to start, at most {seeds.max}{start})"
    return f"seeds {', '.join(map(str, seeds))}"


def variance_method(metric: str) -> str:
    """How a delta's test-set variance is computed: the delta method for Pearson r and R2, else the bootstrap."""
    return "bootstrap" if metric == "spearman_rho" else "influence"


def study_decisions(doc: Any, estimates: Mapping[str, SeedDelta]) -> tuple[dict[str, Decision], tuple[str, ...]]:
    """Verdicts of one test set's variants under the study's seed rule, and the variants that need another seed.

    Args:
        doc: the study document (``seeds``, ``alpha``, ``min_effect``).
        estimates: variant name -> its delta vs canonical on the primary metric, with the variant's seeds.

    Returns:
        Variant name -> :class:`~crmlab.search.ablation._verdicts.Decision`, and (adaptive seeds only) the names that
        get another seed.
    """
    if not isinstance(doc.seeds, AdaptiveSeeds):
        return decide(estimates, doc.alpha, min_effect=doc.min_effect), ()
    look = decide_look(
        estimates, doc.alpha, min_effect=doc.min_effect, initial=doc.seeds.initial, max_seeds=doc.seeds.max
    )
    return look.decisions, look.more_seeds


def study_p_values(doc: Any, estimates: Mapping[str, SeedDelta]) -> dict[str, float]:
    """Adjusted p-values of one test set's variants under the study's seed rule (any metric): plain Holm for fixed
    seeds, weighted Holm by each variant's look share for adaptive seeds, so that on the primary metric each equals
    the :attr:`~crmlab.search.ablation._verdicts.Decision.p` its verdict was read from."""
    if isinstance(doc.seeds, AdaptiveSeeds):
        shares = look_shares(estimates, doc.alpha, doc.seeds.initial, doc.seeds.max)
    else:
        shares = [1.0] * len(estimates)
    p = [e.p_value if e.training_noise_estimated else 1.0 for e in estimates.values()]
    return dict(zip(estimates, weighted_holm(p, shares), strict=True))


@dataclass(frozen=True)
class SeedPlan:
    """The seeds of each variant at the latest look that the finished runs allow.

    Attributes:
        seeds: variant name -> its seeds (the reference's are the union of all).
        needed: runs ``(variant, seed)`` this look needs that are not finished, reference first per seed.
        looks: looks taken so far (1 for fixed seeds).
    """

    seeds: dict[str, list[int]]
    needed: list[tuple[str, int]]
    looks: int

    @property
    def complete(self) -> bool:
        """True when every run the plan needs is finished and no variant gets another seed."""
        return not self.needed


def plan_seeds(ablation: Any, results: Mapping[tuple[str, int], Any], dropped: Sequence[str] = ()) -> SeedPlan:
    """Replay the study's looks over the finished ``results`` and return the runs the next look needs.

    Args:
        ablation: the loaded study (its first variant is the reference).
        results: finished runs by ``(variant, seed)``; each has ``predictions`` by test set name.
        dropped: variants left out (their runs failed).

    Returns:
        The :class:`SeedPlan`: with ``needed`` empty, every verdict is final.
    """
    doc = ablation.doc
    reference = ablation.variants[0].name
    names = [v.name for v in ablation.variants if v.name not in dropped]
    adaptive = isinstance(doc.seeds, AdaptiveSeeds)
    count = dict.fromkeys(names, doc.seeds.initial if adaptive else len(doc.seeds))
    looks = 0
    while True:
        looks += 1
        seeds = {n: doc.seeds.numbers(count[n]) if adaptive else list(doc.seeds) for n in names}
        seeds[reference] = doc.seeds.numbers(max(count.values())) if adaptive else list(doc.seeds)
        needed = [(n, s) for s in seeds[reference] for n in names if s in seeds[n] and (n, s) not in results]
        if needed or not adaptive:
            return SeedPlan(seeds, needed, looks)
        more: set[str] = set()
        for test_name, test in ablation.tests.items():
            estimates = {
                n: seed_delta(
                    test.values,
                    [results[(reference, s)].predictions[test_name] for s in seeds[n]],
                    [results[(n, s)].predictions[test_name] for s in seeds[n]],
                    metric=doc.metric,
                    test_variance=variance_method(doc.metric),
                )
                for n in names
                if n != reference
            }
            more.update(study_decisions(doc, estimates)[1])
        if not more:
            return SeedPlan(seeds, [], looks)
        for n in more:
            count[n] += 1
