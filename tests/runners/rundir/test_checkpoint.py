"""Checkpoint weight files: every variable round-trips through ``.npz``; an older ``.weights.h5`` still loads; one
rolling checkpoint whose unchanged best weights are a link; stage caches without optimiser state."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from crmlab.runners.rundir import (
    BEST,
    WEIGHTS,
    CheckpointState,
    checkpoint_file,
    load_stage,
    load_variables,
    store_stage,
)
from crmlab.runners.rundir._checkpoint import LEGACY, STAGE_WEIGHTS


def _model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dropout(0.5, seed=1)])


def test_checkpoints_round_trip_weights_and_seed_states_and_read_older_h5_files(tmp_path: Path) -> None:
    model = _model()
    saved = [keras.ops.convert_to_numpy(v) for v in model.variables]
    state = CheckpointState(tmp_path)
    state.checkpoint(model, None, best_improved=True)
    assert checkpoint_file(state, WEIGHTS) == tmp_path / "ckpt-0" / WEIGHTS and state.file(BEST) is not None

    other = _model()
    for v in other.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    load_variables(other, checkpoint_file(state, WEIGHTS))
    for a, b in zip(saved, other.variables, strict=True):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))

    legacy = tmp_path / "ckpt-9"
    legacy.mkdir()
    model.save_weights(legacy / LEGACY[WEIGHTS])
    state["checkpoint"] = legacy.name
    assert checkpoint_file(state, WEIGHTS) == legacy / LEGACY[WEIGHTS] and checkpoint_file(state, BEST) is None
    fresh = _model()
    load_variables(fresh, checkpoint_file(state, WEIGHTS))
    np.testing.assert_array_equal(fresh.get_weights()[0], model.get_weights()[0])


def test_an_improved_best_is_a_link_to_the_weights_and_one_checkpoint_rolls(tmp_path: Path) -> None:
    model = _model()
    state = CheckpointState(tmp_path)
    state.checkpoint(model, None, best_improved=True)
    state.checkpoint(model, None, best_improved=False)
    assert [p.name for p in tmp_path.glob("ckpt-*")] == ["ckpt-1"]
    assert (tmp_path / "ckpt-1" / WEIGHTS).stat().st_nlink == 1 and (tmp_path / "ckpt-1" / BEST).stat().st_nlink == 1
    state.checkpoint(model, None, best_improved=True)
    assert (tmp_path / "ckpt-2" / BEST).samefile(tmp_path / "ckpt-2" / WEIGHTS)


def test_stage_caches_hold_weights_only_and_older_h5_caches_still_load(tmp_path: Path) -> None:
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    state = CheckpointState(tmp_path / "run")
    state["norm"]["s"] = [0.0, 1.0]
    store_stage(tmp_path / "_stages" / "key", model, state, "s")
    assert sorted(p.name for p in (tmp_path / "_stages" / "key").iterdir()) == ["stage.json", STAGE_WEIGHTS]

    for cache in (tmp_path / "_stages" / "key", tmp_path / "_stages" / "old"):
        if cache.name == "old":  # written by earlier versions: Keras weights with an optimizer group
            cache.mkdir()
            model.save_weights(cache / "weights.weights.h5")
            (cache / "stage.json").write_text((tmp_path / "_stages" / "key" / "stage.json").read_text())
        fresh = _model()
        load_stage(cache, fresh, CheckpointState(tmp_path / cache.name), "s")
        np.testing.assert_array_equal(fresh.get_weights()[0], model.get_weights()[0])
