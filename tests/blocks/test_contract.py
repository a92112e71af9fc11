"""The contract every registered block must meet: adding a block to the registry adds it to these tests.

For each block (built-in or installed plugin) this builds it from its ``crmlab_example``, runs it on real
sequences, round-trips its config and saves/loads it as ``.keras`` with identical predictions. Runs on the active
Keras backend; ``tests/test_backends.py`` reruns this file on the other backend.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from crmlab.registry import core

BLOCKS = core.blocks().names()


def _example(name: str) -> tuple[core.BlockInfo, dict[str, Any], list[list[int]]]:
    info = core.blocks().get(name)
    example = getattr(info.factory, "crmlab_example", None)
    assert example is not None, f"block '{name}' ({info.origin}) declares no crmlab_example"
    return info, dict(example["params"]), [list(s) for s in example["inputs"]]


def _real_inputs(tokens: np.ndarray, shapes: list[list[int]]) -> list[np.ndarray]:
    """Inputs of the requested shapes made from real sequences: tokens for 1-D shapes, one-hot features else."""
    onehot = np.eye(5, dtype="float32")[tokens]
    out = []
    for shape in shapes:
        if len(shape) == 1:
            out.append(tokens[:, : shape[0]].astype("int32"))
            continue
        length, channels = shape
        x = np.tile(onehot, (1, -(-length // onehot.shape[1]), -(-channels // 5)))[:, :length, :channels]
        out.append(np.ascontiguousarray(x))
    return out


def _model(info: core.BlockInfo, params: dict[str, Any], shapes: list[list[int]]) -> keras.Model:
    inputs = [keras.Input(shape=tuple(s), dtype="int32" if len(s) == 1 else "float32") for s in shapes]
    layer = info.factory(**params, name="block")
    outs = layer(inputs[0] if len(inputs) == 1 else inputs)
    return keras.Model(inputs, list(outs) if isinstance(outs, tuple) else outs)


def test_registry_lists_the_builtin_blocks() -> None:
    expected = {
        "onehot_input",
        "reverse_complement",
        "se_block",
        "se_conv_encoder",
        "position_encoding",
        "transformer_encoder",
        "transpose_conv_decoder",
        "se_conv_stack",
        "mlp_head",
    }
    assert expected <= set(BLOCKS)


@pytest.mark.parametrize("name", BLOCKS)
def test_build_and_forward_on_real_sequences(name: str, real_tokens: np.ndarray) -> None:
    info, params, shapes = _example(name)
    model = _model(info, params, shapes)
    x = _real_inputs(real_tokens, shapes)
    y = model.predict(x if len(x) > 1 else x[0], verbose=0)
    outs = y if isinstance(y, list) else [y]
    assert len(outs) == len(info.outputs)
    for o in outs:
        assert o.shape[0] == len(real_tokens)
        assert np.all(np.isfinite(o))
    layer = model.get_layer("block")
    assert layer.built and all(w.shape is not None for w in layer.weights)


@pytest.mark.parametrize("name", BLOCKS)
def test_params_are_the_config(name: str) -> None:
    info, params, _shapes = _example(name)
    layer = info.factory(**params)
    config = layer.get_config()
    for key in info.params:
        assert key in config, f"{name}: constructor parameter '{key}' missing from get_config()"
    for key, value in params.items():
        assert config[key] == value, f"{name}: get_config()['{key}'] = {config[key]!r}, YAML gave {value!r}"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", BLOCKS)
def test_keras_file_round_trip(name: str, real_tokens: np.ndarray, tmp_path: Any) -> None:
    info, params, shapes = _example(name)
    keras.utils.set_random_seed(0)
    model = _model(info, params, shapes)
    x = _real_inputs(real_tokens, shapes)
    feed = x if len(x) > 1 else x[0]
    before = model.predict(feed, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded.predict(feed, verbose=0)
    for b, a in zip(
        before if isinstance(before, list) else [before], after if isinstance(after, list) else [after], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert type(loaded.get_layer("block")) is type(model.get_layer("block"))
