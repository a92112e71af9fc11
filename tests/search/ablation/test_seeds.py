"""Adaptive seeds: the plan replayed from finished runs, the training rounds, resume, compare and collect.

Training is replaced by planted predictions (``run_one`` and ``finished_result`` patched), so the rounds run in
seconds; the real training path under adaptive seeds is the same :func:`run_one` that the other ablation tests train.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import crmlab.runners.rundir
import crmlab.search.ablation._runs as ablation_module
from crmlab.registry import SpecErrors
from crmlab.search.ablation import REFERENCE, all_seeds, collect, compare, load_ablation, run_ablation, table_text
from crmlab.search.ablation._seeds import AdaptiveSeeds, plan_seeds
from crmlab.search.ablation._stats import METRICS as METRIC_FNS
from crmlab.search.ablation._verdicts import look_alpha
from tests.search.conftest import TINY_ABLATION

ADAPTIVE = ["variants={}", "leave_one_out=[transformer, se]", "seeds={initial: 3, max: 6}"]
"""canonical, no_transformer (planted: much worse) and no_se (planted: canonical again) under adaptive seeds."""


def planted(study: Any) -> dict[tuple[str, int], Any]:
    """Results for every variant and seed 0-5: no_transformer predicts noise, no_se is canonical in distribution."""
    rng = np.random.default_rng(0)
    y = next(iter(study.tests.values())).values.astype("float64")
    z = (y - y.mean()) / y.std()
    results = {}
    for v in study.variants:
        for s in range(6):
            pred = rng.normal(size=len(y)) if v.name == "no_transformer" else z + 0.5 * rng.normal(size=len(y))
            metrics = {m: float(fn(y, pred)) for m, fn in METRIC_FNS.items()}
            results[(v.name, s)] = SimpleNamespace(predictions={"native": pred}, test_metrics={"native": metrics})
    return results


@pytest.fixture(scope="module")
def study() -> Any:
    return load_ablation(TINY_ABLATION, ADAPTIVE, assemble=False)


def test_adaptive_seeds_are_validated() -> None:
    assert all_seeds(AdaptiveSeeds(initial=3, max=5)) == [0, 1, 2, 3, 4] and all_seeds([4, 7]) == [4, 7]
    for seeds, message in [
        ("{initial: 4, max: 3}", "max (3) must be at least initial (4)"),
        ("{initial: 1, max: 3}", "greater than or equal to 2"),
    ]:
        with pytest.raises(SpecErrors, match="seeds") as info:
            load_ablation(TINY_ABLATION, ["variants={}", f"seeds={seeds}"], assemble=False)
        assert message in str(info.value)


def test_first_numbers_the_adaptive_seeds_from_it_and_leaves_the_study_key_of_studies_without_it() -> None:
    shifted = load_ablation(TINY_ABLATION, [*ADAPTIVE[:2], "seeds={initial: 3, max: 6, first: 1}"], assemble=False)
    assert all_seeds(shifted.doc.seeds) == [1, 2, 3, 4, 5, 6]
    rng = np.random.default_rng(0)
    y = next(iter(shifted.tests.values())).values.astype("float64")
    results = {
        (v.name, s): SimpleNamespace(predictions={"native": y + rng.normal(size=len(y))})
        for v in shifted.variants
        for s in (1, 2, 3)
    }
    plan = plan_seeds(shifted, {})
    assert plan.needed[:3] == [(REFERENCE, 1), ("no_transformer", 1), ("no_se", 1)]
    later = plan_seeds(shifted, results)
    assert later.seeds[REFERENCE][:3] == [1, 2, 3] and all(s in (4, 5, 6) for _, s in later.needed)
    plain = load_ablation(TINY_ABLATION, ADAPTIVE, assemble=False)
    explicit = load_ablation(TINY_ABLATION, [*ADAPTIVE[:2], "seeds={initial: 3, max: 6, first: 0}"], assemble=False)
    assert "first" not in plain.doc.model_dump(mode="json")["seeds"]
    assert explicit.key == plain.key != shifted.key


def test_the_plan_adds_seeds_to_undecided_variants_only(study: Any) -> None:
    results = planted(study)
    plan = plan_seeds(study, results)
    assert plan.complete and plan.looks == 4
    assert plan.seeds == {REFERENCE: list(range(6)), "no_transformer": [0, 1, 2], "no_se": list(range(6))}

    first = {k: r for k, r in results.items() if k[1] < 3}
    assert plan_seeds(study, first).needed == [(REFERENCE, 3), ("no_se", 3)]
    assert plan_seeds(study, {k: r for k, r in first.items() if k != ("no_se", 1)}).needed == [("no_se", 1)]

    rows = compare(study, results, plan.seeds, replicates=50)
    by = {r.variant: r for r in rows}
    assert by["no_transformer"].decision.verdict == "hurts" and len(by["no_transformer"].seeds) == 3
    assert by["no_transformer"].decision.alpha <= look_alpha(0.05, 3, 3, 6) + 1e-12
    assert by["no_se"].decision.verdict != "hurts" and by["no_se"].seeds == list(range(6))
    assert by[REFERENCE].seeds == list(range(6))
    for r in (by["no_transformer"], by["no_se"]):  # the p shown is the weighted-Holm p the verdict was read from
        assert r.p_holm["pearson_r"] == pytest.approx(r.decision.p)
    assert by["no_transformer"].p_holm["pearson_r"] <= 0.05 < by["no_se"].p_holm["pearson_r"]
    seeds_column = {line.split()[0]: line.split()[2] for line in table_text(rows).splitlines()[2:]}
    assert seeds_column == {REFERENCE: "6", "no_transformer": "3", "no_se": "6"}


def test_training_goes_in_rounds_resumes_and_compare_finds_the_added_seeds(
    study: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = planted(study)
    finished: dict[tuple[str, int], Any] = {}
    calls: list[tuple[str, int]] = []
    killed: set[tuple[str, int]] = set()

    def fake_run(ablation: Any, name: str, seed: int, *args: Any) -> Any:
        calls.append((name, seed))
        if (name, seed) == ("no_se", 3) and ("no_se", 3) not in killed:  # killed in the second look
            killed.add((name, seed))
            raise KeyboardInterrupt
        finished[(name, seed)] = results[(name, seed)]
        return results[(name, seed)]

    monkeypatch.setattr(ablation_module, "run_one", fake_run)
    monkeypatch.setattr(
        crmlab.runners.rundir, "finished_result", lambda g, recipe, *a: finished.get(_key(study, g, recipe))
    )
    with pytest.raises(KeyboardInterrupt):
        run_ablation(study, tmp_path, mlflow=False, progress=lambda _: None)
    assert calls[:9] == [(n, s) for s in range(3) for n in (REFERENCE, "no_transformer", "no_se")]
    assert calls[9:] == [(REFERENCE, 3), ("no_se", 3)]

    found, missing = collect(study, tmp_path)
    assert missing == ["no_se seed=3"] and set(found) == set(finished)

    calls.clear()
    _, rows, report = run_ablation(study, tmp_path, mlflow=False, progress=lambda _: None)
    first_look = [(n, s) for s in range(3) for n in (REFERENCE, "no_transformer", "no_se")]
    assert calls == first_look + [(n, s) for s in (3, 4, 5) for n in (REFERENCE, "no_se")]
    found, missing = collect(study, tmp_path)
    assert missing == [] and ("no_transformer", 3) not in found and ("no_se", 5) in found
    assert "adaptive, 3 to start" in report.read_text()
    assert {r.variant: len(r.seeds) for r in rows} == {REFERENCE: 6, "no_transformer": 3, "no_se": 6}


def _key(study: Any, graph: Any, recipe: Any) -> tuple[str, int]:
    """The (variant, seed) a fake finished-run lookup is asked for."""
    name = next(v.name for v in study.variants if v.graph is graph)
    return name, recipe.seed
