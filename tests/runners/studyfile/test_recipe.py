"""Recipes and train studies: schedule arithmetic, validation errors, overrides."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from crmlab.registry import SpecErrors
from crmlab.runners.studyfile import Schedule, load_train_study
from crmlab.runners.studyfile._recipe import parse_train_study
from crmlab.runners.training._schedule import StageSchedule

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"


def test_paper_schedule_warms_up_then_decays_by_cosine() -> None:
    s = Schedule(kind="cosine", warmup_epochs=10, initial=1e-4, peak=1e-3, final=1e-4)
    assert s.rate(0, 50) == pytest.approx(1e-4)
    assert s.rate(5, 50) == pytest.approx(5.5e-4)
    assert s.rate(10, 50) == pytest.approx(1e-3)
    assert s.rate(30, 50) == pytest.approx(5.5e-4)
    assert s.rate(50, 50) == pytest.approx(1e-4)


def test_reference_flat_schedule_stays_at_peak() -> None:
    s = Schedule(kind="flat", warmup_epochs=10, initial=1e-4, peak=1e-3, final=1e-3)
    assert s.rate(20, 50) == s.rate(49, 50) == pytest.approx(1e-3)


@pytest.mark.parametrize("kind", ["cosine", "flat", "constant"])
def test_per_step_schedule_matches_the_recipe_and_scales_with_replicas(kind: str) -> None:
    s = Schedule(kind=kind, warmup_epochs=2, initial=1e-4, peak=1e-3, final=1e-5)
    per_step = StageSchedule(s.model_dump(), steps_per_epoch=10, epochs=6, scale=2.0)
    for step in (0, 5, 10, 20, 33, 60):
        got = float(keras.ops.convert_to_numpy(per_step(step)))
        assert got == pytest.approx(2.0 * s.rate(step / 10, 6), rel=1e-5)
    assert StageSchedule(**per_step.get_config()).get_config() == per_step.get_config()


def test_study_references_and_monitor_are_checked() -> None:
    doc = {
        "name": "x",
        "graph": "g.yaml",
        "data": {"dream": {"path": "d.tsv"}},
        "recipe": {
            "early_stopping": {"monitor": "val_r2_score"},
            "stages": [{"name": "a", "data": "dreem"}, {"name": "a", "data": "dream", "split": {"method": "group"}}],
        },
    }
    with pytest.raises(SpecErrors) as err:
        parse_train_study(doc, "s.yaml")
    assert [str(i) for i in err.value.issues] == [
        "s.yaml: recipe.early_stopping.monitor: monitor 'val_r2_score' is not logged (did you mean 'val_r2'?)"
    ]
    doc["recipe"]["early_stopping"] = {"monitor": "val_r2"}
    with pytest.raises(SpecErrors) as err:
        parse_train_study(doc, "s.yaml")
    assert [str(i) for i in err.value.issues] == [
        "s.yaml: recipe.stages.0.data: no data set 'dreem' (did you mean 'dream'?)",
        "s.yaml: recipe.stages.1.split.method: 'group' needs data.dream.group_column",
        "s.yaml: recipe.stages.1.name: stage name 'a' is used twice",
    ]


def test_keep_previous_needs_a_previous_stage_and_a_fraction_below_one() -> None:
    def issues(stages: list[dict]) -> list[str]:
        doc = {"name": "x", "graph": "g.yaml", "data": {"d": {"path": "d.tsv"}}, "recipe": {"stages": stages}}
        with pytest.raises(SpecErrors) as err:
            parse_train_study(doc, "s.yaml")
        return [str(i) for i in err.value.issues]

    assert issues([{"name": "a", "data": "d", "keep_previous": 0.5}]) == [
        "s.yaml: recipe.stages.0.keep_previous: the first stage has no previous weights to keep"
    ]
    [message] = issues([{"name": "a", "data": "d"}, {"name": "b", "data": "d", "keep_previous": 1.0}])
    assert message.startswith("s.yaml: recipe.stages.1.keep_previous: ") and "less than 1" in message


def test_overrides_reach_into_the_recipe_and_bad_keys_name_the_flag() -> None:
    loaded = load_train_study(TINY, ["recipe.stages.1.epochs=7", "recipe.schedule.peak=3e-4"])
    assert loaded.study.recipe.stages[1].epochs == 7 and loaded.study.recipe.schedule.peak == 3e-4
    assert len(loaded.datasets["dream"]) == 800 and len(loaded.tests["native_github"]) == 189
    assert loaded.datasets["dream"].tokens.dtype == np.uint8
    with pytest.raises(SpecErrors) as err:
        load_train_study(TINY, ["recipe.epoch=3"])
    assert str(err.value) == "--set: recipe.epoch: unknown key 'epoch' (did you mean 'epochs'?)"
    with pytest.raises(SpecErrors) as err:
        load_train_study(TINY, ["recipe.stages.5.epochs=1"])
    assert str(err.value) == "--set: recipe.stages.5.epochs: 'recipe.stages' is a list of 2; '5' is not an index of it"
