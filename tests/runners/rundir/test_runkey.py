"""Run and stage keys are pinned: they name run directories and the stage cache, so a change would orphan every
finished run."""

from __future__ import annotations

from pathlib import Path

from crmlab.runners.rundir import data_hashes, digest, run_key, stage_keys
from crmlab.runners.studyfile import load_train_study

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"


def test_digest_is_a_short_sha256_of_sorted_json() -> None:
    assert digest(1, "a", {"b": 2}) == "eb4b70e506de0c86"


def test_the_tiny_train_studys_run_and_stage_keys_are_unchanged() -> None:
    loaded = load_train_study(TINY)
    recipe = loaded.study.recipe
    assert run_key(loaded.graph, recipe, data_hashes(loaded.datasets, loaded.tests)) == "97c3b5a7420ffb62"
    assert stage_keys(loaded.graph, recipe, loaded.datasets, 1) == ["8673dcfa07c4a66f", "7872df750c59b451"]


def test_an_init_seed_gives_other_keys_and_leaves_the_unset_keys_alone() -> None:
    """``init_seed`` (the A/A control's initialisation stream) is hashed only when set."""
    loaded = load_train_study(TINY)
    recipe, hashes = loaded.study.recipe, data_hashes(loaded.datasets, loaded.tests)
    control = recipe.model_copy(update={"init_seed": 1_000_000})
    assert recipe.stream_seed == recipe.seed and control.stream_seed == 1_000_000
    assert run_key(loaded.graph, control, hashes) not in ("97c3b5a7420ffb62", run_key(loaded.graph, recipe, hashes))
    control_stages = stage_keys(loaded.graph, control, loaded.datasets, 1)
    assert not set(control_stages) & {"8673dcfa07c4a66f", "7872df750c59b451"}


def test_deterministic_enters_keys_as_set_and_as_false_when_left_out_whatever_its_default() -> None:
    """Every key made so far hashed ``deterministic: false``; a recipe that leaves it out keeps doing so, so changing
    the field's default would change no existing key. Set to true, it gives other keys."""
    from crmlab.runners.studyfile import Recipe

    class DeterministicByDefault(Recipe):
        deterministic: bool = True

    loaded = load_train_study(TINY)
    recipe, hashes = loaded.study.recipe, data_hashes(loaded.datasets, loaded.tests)
    assert "deterministic" not in recipe.model_fields_set
    later = DeterministicByDefault.model_validate(recipe.model_dump(exclude={"deterministic"}))
    assert later.deterministic and run_key(loaded.graph, later, hashes) == "97c3b5a7420ffb62"
    assert stage_keys(loaded.graph, later, loaded.datasets, 1) == ["8673dcfa07c4a66f", "7872df750c59b451"]
    off = recipe.model_copy(update={"deterministic": False})
    assert run_key(loaded.graph, off, hashes) == "97c3b5a7420ffb62"
    on = recipe.model_copy(update={"deterministic": True})
    assert run_key(loaded.graph, on, hashes) != "97c3b5a7420ffb62"
    assert not set(stage_keys(loaded.graph, on, loaded.datasets, 1)) & {"8673dcfa07c4a66f", "7872df750c59b451"}
