"""The ablation comparison on planted predictions (no training): verdicts, table, report files, single-seed note."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from crmlab.search.ablation import REFERENCE, compare, table_text, undecided_lines, write_all
from crmlab.search.ablation._comparison import CONTROL
from crmlab.search.ablation._report import method_text
from crmlab.search.ablation._stats import METRICS as METRIC_FNS

N = 1500


def fake_study(seeds: list[int], planted: dict[str, float], seed_sd: float = 0.3) -> tuple[Any, dict]:
    """A study of canonical plus ``planted`` variants (name -> extra prediction noise, 0 = A/A), with results whose
    per-seed predictions share a model component and differ by a seed component."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=N)
    shared = rng.normal(size=N)
    doc = SimpleNamespace(
        name="planted", description="planted effects", seeds=seeds, metric="pearson_r", min_effect=0.01, alpha=0.05
    )
    names = [REFERENCE, *planted]
    study = SimpleNamespace(
        doc=doc,
        key="k",
        variants=[SimpleNamespace(name=n, parameters=1000) for n in names],
        tests={"native": SimpleNamespace(values=y)},
    )
    results = {}
    for name in names:
        for s in seeds:
            noise = 1.0 + planted.get(name, 0.0)
            pred = y + 0.6 * shared + noise * rng.normal(size=N) * (1 + seed_sd * rng.normal())
            metrics = {m: float(fn(y, pred)) for m, fn in METRIC_FNS.items()}
            results[(name, s)] = SimpleNamespace(predictions={"native": pred}, test_metrics={"native": metrics})
    return study, results


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_clear_effects_get_verdicts_and_the_table_shows_them(tmp_path: Path) -> None:
    study, results = fake_study([0, 1, 2, 3, 4], {"worse": 1.5, "same": 0.0}, seed_sd=0.02)
    rows = compare(study, results, replicates=200)
    by = {r.variant: r for r in rows}
    assert by[REFERENCE].decision is None and by[REFERENCE].delta["pearson_r"] is None
    worse = by["worse"]
    assert worse.decision is not None and worse.decision.verdict == "hurts"
    low, high = worse.decision.interval
    assert low <= worse.delta["pearson_r"].delta <= high < 0
    assert worse.p_holm["pearson_r"] < 0.001
    assert by["same"].decision.verdict in ("undecided", "equivalent")
    text = table_text(rows)
    line = next(x for x in text.splitlines() if x.startswith("worse"))
    assert "< 0.001" in line and line.rstrip().endswith("hurts")
    assert "note:" not in text

    files = write_all(study, rows, results, tmp_path)
    report = files[0].read_text()
    assert "| worse |" in report and "hurts" in report and "Behrens-Fisher" in report
    assert "bootstraps the test sequences" not in report
    per_seed = read_csv(files[0].parent / "per_seed.csv")
    assert len(per_seed) == 3 * 5 and {r["seed"] for r in per_seed} == {"0", "1", "2", "3", "4"}
    canonical0 = next(r for r in per_seed if r["variant"] == REFERENCE and r["seed"] == "0")
    assert float(canonical0["pearson_r"]) == pytest.approx(results[(REFERENCE, 0)].test_metrics["native"]["pearson_r"])
    verdicts = read_csv(files[0].parent / "verdicts.csv")
    assert {r["variant"]: r["verdict"] for r in verdicts}["worse"] == "hurts"
    for image in report.split("![")[1:]:
        assert (files[0].parent / image.split("(")[1].split(")")[0]).exists()


def test_undecided_verdicts_say_what_would_decide_them(tmp_path: Path) -> None:
    study, results = fake_study([0, 1, 2], {"slightly": 0.04, "worse": 1.5}, seed_sd=0.05)
    rows = compare(study, results, replicates=200)
    by = {r.variant: r for r in rows}
    slightly = by["slightly"]
    assert slightly.decision.verdict == "undecided" and slightly.plan is not None
    assert slightly.plan.level == slightly.decision.alpha and slightly.plan.detectable > 0
    assert slightly.plan.seeds is None or slightly.plan.seeds > 3
    assert by["worse"].decision.verdict == "hurts" and by["worse"].plan is None
    text = table_text(rows)
    assert "detectable (80%)" in text.splitlines()[0] and "seeds to decide" in text.splitlines()[0]
    line = next(x for x in text.splitlines() if x.startswith("slightly"))
    assert f"±{slightly.plan.detectable:.4f}" in line
    (sentence,) = undecided_lines(rows, "pearson_r")
    delta = slightly.delta["pearson_r"].delta
    assert sentence.startswith(f"slightly (native): {delta:+.4f}, undecided at 3 seeds; ")
    files = write_all(study, rows, results, tmp_path)
    report = files[0].read_text()
    assert "| detectable (80%) | seeds to decide |" in report and f"- {sentence}" in report
    planned = {r["variant"]: r for r in read_csv(files[0].parent / "verdicts.csv")}
    assert float(planned["slightly"]["detectable_80"]) == pytest.approx(slightly.plan.detectable)
    assert planned["worse"]["detectable_80"] == ""


def test_one_seed_says_training_noise_is_not_estimated() -> None:
    study, results = fake_study([0], {"worse": 1.5})
    rows = compare(study, results, replicates=200)
    worse = next(r for r in rows if r.variant == "worse")
    assert worse.decision.verdict == "undecided" and worse.p_holm["pearson_r"] == 1.0
    assert "note: one seed: training noise is not estimated" in table_text(rows)


def test_a_control_that_hurts_marks_the_study_miscalibrated() -> None:
    study, results = fake_study([0, 1, 2, 3, 4], {CONTROL: 1.5}, seed_sd=0.02)
    rows = compare(study, results, replicates=200)
    assert next(r for r in rows if r.variant == CONTROL).decision.verdict == "hurts"
    assert "note: MISCALIBRATED: the A/A control (canonical under other initialisation seeds) hurts on native" in (
        table_text(rows)
    )
    assert "A/A control" in method_text(study)


def test_a_quiet_control_raises_no_flag() -> None:
    study, results = fake_study([0, 1, 2], {CONTROL: 0.0}, seed_sd=0.02)
    rows = compare(study, results, replicates=200)
    assert next(r for r in rows if r.variant == CONTROL).decision.verdict in ("undecided", "equivalent")
    assert "MISCALIBRATED" not in table_text(rows)
