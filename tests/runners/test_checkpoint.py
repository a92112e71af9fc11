"""Checkpoint weight files: every variable round-trips through ``.npz``; an older ``.weights.h5`` still loads."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from crmlab.runners.checkpoint import BEST, LEGACY, WEIGHTS, CheckpointState, checkpoint_file, load_variables


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
